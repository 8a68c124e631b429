//! What a group of ledger entries adds to the usage aggregates (`scr.usage.aggregate.
//! count_group`), a group at a time.
//!
//! The entries arrive as JSON lines, each a SESSION_COMPLETION entry as the ledger stores it,
//! with its tenant beside it. Each event adds to the counters of its key (tenant, minute of its
//! `timestamp`, model, user id, session type, status, tier, provider), in Python's integers:
//! `cost_usd` as 10**-10 USD (`PriceTable.cost`, rounded half-even), `estimated_cost_usd` as
//! 10**-18 USD. The first event of each (tenant, session id) in the group is kept for the
//! session count. An event whose cost only Python decides (see `prices::Cost::Undecided`) is
//! counted here but for its cost, which the caller adds; an entry this module cannot read
//! fails the whole group, which the caller then counts in Python.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Deserialize;

use crate::datetime;
use crate::event_view::{json_lines, OutcomeView, SessionView, Text, UsageView, UserView};
use crate::money::Amount;
use crate::prices::PriceTable;

const MICROSECONDS_PER_MINUTE: i64 = 60_000_000;
/// `scr.usage.aggregate.ESTIMATE_PLACES`.
const ESTIMATE_PLACES: i128 = 18;

/// Positions in a key's counters (`scr.usage.aggregate`'s `EVENTS` … `ESTIMATE`).
const EVENTS: usize = 0;
const INPUT: usize = 2;
const OUTPUT: usize = 3;
const TOTAL: usize = 4;
const CACHE_READ: usize = 5;
const CACHE_WRITE: usize = 6;
const REASONING: usize = 7;
const DURATION: usize = 8;
const UNPRICED: usize = 9;
const ERRORS: usize = 10;
const COST: usize = 11;
const ESTIMATE: usize = 12;
pub const COUNTERS: usize = 13;

/// (tenant, minute, model, user id, session type, status, tier, provider or "").
pub type UsageKey = (String, i64, String, String, String, String, String, String);

/// A group's usage: each key with its counters, in the order first seen.
#[derive(Debug, Default, PartialEq)]
pub struct GroupUsage {
    pub keys: Vec<UsageKey>,
    pub counters: Vec<[u128; COUNTERS]>,
    /// The first event of each (tenant, session id): its key's position and duration.
    pub firsts: Vec<(String, String, usize, u64)>,
    /// Events whose cost Python decides: (entry position, its key's position).
    pub undecided: Vec<(usize, usize)>,
}

/// Why a group cannot be counted here.
#[derive(Debug, PartialEq)]
pub enum CountError {
    NotJsonLines,
    Mismatch { entries: usize, tenants: usize },
    Unreadable { entry: usize },
}

impl fmt::Display for CountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CountError::NotJsonLines => f.write_str("the entries are not JSON lines"),
            CountError::Mismatch { entries, tenants } => {
                write!(
                    f,
                    "{entries} entries but {tenants} tenants: the lengths differ"
                )
            }
            CountError::Unreadable { entry } => {
                write!(f, "entry {entry} is not an event usage can count")
            }
        }
    }
}

impl std::error::Error for CountError {}

/// The usage of `entries` (JSON lines), entry `i` of tenant `tenants[i]`, costed by `prices`.
pub fn count_usage(
    prices: &PriceTable,
    tenants: &[&str],
    entries: &[u8],
) -> Result<GroupUsage, CountError> {
    let text = std::str::from_utf8(entries).map_err(|_| CountError::NotJsonLines)?;
    let lines = json_lines(text).ok_or(CountError::NotJsonLines)?;
    if lines.len() != tenants.len() {
        return Err(CountError::Mismatch {
            entries: lines.len(),
            tenants: tenants.len(),
        });
    }
    let read: Vec<CountedEntry<'_>> = lines
        .iter()
        .enumerate()
        .map(|(entry, line)| {
            serde_json::from_str(line).map_err(|_| CountError::Unreadable { entry })
        })
        .collect::<Result<_, _>>()?;
    let mut group = GroupUsage::default();
    // keys borrowed from the entries read: a key's strings are copied once, when first seen
    let mut positions: HashMap<KeyRef<'_>, usize> = HashMap::new();
    let mut sessions: HashSet<(&str, &str)> = HashSet::new();
    for (index, (entry, &tenant)) in read.iter().zip(tenants).enumerate() {
        let event = &entry.payload;
        let unreadable = || CountError::Unreadable { entry: index };
        let minute = datetime::parse(&event.timestamp.0)
            .ok_or_else(unreadable)?
            .epoch_us()
            .div_euclid(MICROSECONDS_PER_MINUTE);
        let estimate = Amount::from_number(&event.usage.estimated_cost_usd.0)
            .and_then(|amount| amount.scaled(ESTIMATE_PLACES))
            .ok_or_else(unreadable)?;
        let (usage, session) = (&event.usage, &event.session);
        let key: KeyRef<'_> = (
            tenant,
            minute,
            &usage.model.0,
            &event.user.user_id.0,
            &session.session_type.0,
            &event.outcome.status.0,
            &event.user.tier.0,
            usage.provider.as_ref().map_or("", |p| &p.0),
        );
        let position = *positions.entry(key).or_insert_with(|| {
            group.keys.push(owned(&key));
            group.counters.push([0; COUNTERS]);
            group.keys.len() - 1
        });
        let c = &mut group.counters[position];
        c[EVENTS] += 1;
        c[INPUT] += u128::from(usage.input_tokens);
        c[OUTPUT] += u128::from(usage.output_tokens);
        c[TOTAL] += u128::from(usage.total_tokens);
        c[CACHE_READ] += u128::from(usage.cache_read_tokens.unwrap_or(0));
        c[CACHE_WRITE] += u128::from(usage.cache_write_tokens.unwrap_or(0));
        c[REASONING] += u128::from(usage.reasoning_tokens.unwrap_or(0));
        c[DURATION] += u128::from(session.duration_ms);
        if event.outcome.status.0 != "success" {
            c[ERRORS] += 1;
        }
        match prices.cost_units(&usage.model.0, usage.tokens()) {
            Ok(Some(units)) => c[COST] += units,
            Ok(None) => c[UNPRICED] += 1,
            Err(_) => group.undecided.push((index, position)),
        }
        c[ESTIMATE] += estimate;
        if sessions.insert((tenant, &session.session_id.0)) {
            group.firsts.push((
                tenant.to_owned(),
                session.session_id.0.to_string(),
                position,
                session.duration_ms,
            ));
        }
    }
    Ok(group)
}

/// A key whose strings are borrowed from the entries read.
type KeyRef<'a> = (
    &'a str,
    i64,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
);

fn owned(key: &KeyRef<'_>) -> UsageKey {
    let (tenant, minute, model, user_id, session_type, status, tier, provider) = *key;
    (
        tenant.to_owned(),
        minute,
        model.to_owned(),
        user_id.to_owned(),
        session_type.to_owned(),
        status.to_owned(),
        tier.to_owned(),
        provider.to_owned(),
    )
}

#[derive(Deserialize)]
struct CountedEntry<'a> {
    #[serde(borrow)]
    payload: Counted<'a>,
}

/// The part of an event that usage counts (the rest is skipped, never built).
#[derive(Deserialize)]
struct Counted<'a> {
    #[serde(borrow)]
    timestamp: Text<'a>,
    #[serde(borrow)]
    session: SessionView<'a>,
    #[serde(borrow)]
    user: UserView<'a>,
    #[serde(borrow)]
    usage: UsageView<'a>,
    #[serde(borrow)]
    outcome: OutcomeView<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event_id: &str, session: &str, model: &str, status: &str, timestamp: &str) -> String {
        format!(
            concat!(
                r#"{{"actor":"key:a","id":1,"kind":"SESSION_COMPLETION","payload":{{"event_id":"{}","#,
                r#""event_type":"session.completed","outcome":{{"status":"{}"}},"#,
                r#""session":{{"duration_ms":1500,"end_time":"x","session_id":"{}","session_type":"chat","#,
                r#""start_time":"x"}},"timestamp":"{}","#,
                r#""usage":{{"cache_read_tokens":200,"estimated_cost_usd":"1.5E-7","input_tokens":1200,"#,
                r#""model":"{}","output_tokens":300,"total_tokens":1500}},"#,
                r#""user":{{"organization_id":"org_a","tier":"pro","user_id":"u\"1"}}}},"ts":"x"}}"#
            ),
            event_id, status, session, timestamp, model
        )
    }

    fn table() -> PriceTable {
        PriceTable::new(
            "v".into(),
            &[("gpt-4o".into(), "2.5".into(), "10".into(), "1.25".into())],
        )
    }

    fn counted(lines: &[String], tenants: &[&str]) -> GroupUsage {
        let text: String = lines.iter().map(|line| format!("{line}\n")).collect();
        count_usage(&table(), tenants, text.as_bytes()).unwrap()
    }

    #[test]
    fn events_of_one_key_add_up_and_each_session_is_first_once() {
        let group = counted(
            &[
                entry(
                    "e1",
                    "s1",
                    "gpt-4o",
                    "success",
                    "2026-11-25T10:00:59.999999Z",
                ),
                entry(
                    "e2",
                    "s1",
                    "GPT-4o-2024",
                    "error",
                    "2026-11-25T11:00:00+01:00",
                ),
                entry("e3", "s2", "gpt-4o", "success", "2026-11-25T10:00:00Z"),
            ],
            &["org_a", "org_a", "org_b"],
        );
        let minute = 1_795_600_800 / 60; // 2026-11-25T10:00:00Z
        assert_eq!(group.keys.len(), 3);
        assert_eq!(group.keys[0].1, minute);
        assert_eq!(group.keys[1].1, minute);
        assert_eq!(group.keys[0].3, "u\"1");
        assert_eq!(group.keys[0].7, "");
        // 200 cached at 1.25, 1000 at 2.5 and 300 at 10 per 10**6 tokens: 0.00575 USD
        let one = [
            1,
            0,
            1200,
            300,
            1500,
            200,
            0,
            0,
            1500,
            0,
            0,
            57_500_000,
            150_000_000_000,
        ];
        assert_eq!(group.counters[0], one);
        assert_eq!(group.counters[1][ERRORS], 1);
        assert_eq!(group.counters[1][COST], 57_500_000);
        let firsts: Vec<_> = group
            .firsts
            .iter()
            .map(|f| (f.0.as_str(), f.1.as_str(), f.2))
            .collect();
        assert_eq!(firsts, [("org_a", "s1", 0), ("org_b", "s2", 2)]);
        assert!(group.undecided.is_empty());
    }

    #[test]
    fn unknown_models_are_unpriced_and_undecided_costs_are_left_to_python() {
        let group = counted(
            &[
                entry("e1", "s1", "mystery", "success", "2026-11-25T10:00:00Z"),
                entry(
                    "e2",
                    "s2",
                    "gpt-4\u{212a}",
                    "success",
                    "2026-11-25T10:00:00Z",
                ),
            ],
            &["org_a", "org_a"],
        );
        assert_eq!(group.counters[0][UNPRICED], 1);
        assert_eq!(group.counters[0][COST], 0);
        assert_eq!(group.counters[1][UNPRICED], 0);
        assert_eq!(group.undecided, [(1, 1)]);
    }

    #[test]
    fn a_group_it_cannot_read_is_refused_whole() {
        let good = entry("e1", "s1", "gpt-4o", "success", "2026-11-25T10:00:00Z");
        let table = table();
        let refused = |text: &str, tenants: &[&str]| count_usage(&table, tenants, text.as_bytes());
        assert_eq!(
            refused(&format!("{good}\n{{}}\n"), &["a", "a"]),
            Err(CountError::Unreadable { entry: 1 })
        );
        let bad_time = good.replace("2026-11-25T10:00:00Z", "yesterday");
        assert_eq!(
            refused(&format!("{bad_time}\n"), &["a"]),
            Err(CountError::Unreadable { entry: 0 })
        );
        assert_eq!(
            refused(&format!("{good}\n"), &[]),
            Err(CountError::Mismatch {
                entries: 1,
                tenants: 0
            })
        );
        assert_eq!(
            count_usage(&table, &[], b"\xff\n"),
            Err(CountError::NotJsonLines)
        );
        assert_eq!(refused("", &[]), Ok(GroupUsage::default()));
    }
}
