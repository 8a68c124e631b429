//! Which events a destination takes (`scr.route.selection`): its filter, then its sampling,
//! over a batch of events as JSON lines, each read for the six fields a filter names and its
//! event id, the rest skipped.
//!
//! A model condition's values are shell wildcards, matched as Python's `fnmatch.fnmatchcase`
//! matches them: `Pattern` compiles a value the way `fnmatch.translate` (Python 3.11) writes its
//! regular expression, and refuses one whose expression Python's `re` would itself refuse.

use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::event_view::{json_lines, Text};

/// What a destination does with an event (one byte a line in `select_events`' answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Verdict {
    Chosen = 0,
    FilteredOut = 1,
    SampledOut = 2,
    /// The line could not be read here: the Python reference decides it.
    Undecided = 3,
}

#[derive(Debug, PartialEq)]
pub enum SelectionError {
    Rate(f64),
    Pattern(String),
    Lines,
}

impl fmt::Display for SelectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectionError::Rate(rate) => {
                write!(f, "a sampling rate is between 0.0 and 1.0, not {rate}")
            }
            SelectionError::Pattern(pattern) => {
                write!(
                    f,
                    "the model pattern {pattern:?} is left to Python's fnmatch"
                )
            }
            SelectionError::Lines => f.write_str("the events are not JSON lines"),
        }
    }
}

/// A destination's filter (each condition its accepted values; none: no condition) and its
/// sampling rate.
pub struct Selection {
    destination: String,
    rate: f64,
    session_type: Vec<String>,
    outcome_status: Vec<String>,
    tier: Vec<String>,
    model: Vec<Pattern>,
    provider: Vec<String>,
    tenant: Vec<String>,
}

/// The conditions of a filter, in `scr.route.selection`'s order.
pub struct Conditions {
    pub session_type: Vec<String>,
    pub outcome_status: Vec<String>,
    pub tier: Vec<String>,
    pub model: Vec<String>,
    pub provider: Vec<String>,
    pub tenant: Vec<String>,
}

impl Selection {
    pub fn new(
        destination: String,
        rate: f64,
        conditions: Conditions,
    ) -> Result<Selection, SelectionError> {
        if rate.is_nan() || !(0.0..=1.0).contains(&rate) {
            return Err(SelectionError::Rate(rate));
        }
        let model = conditions
            .model
            .iter()
            .map(|pattern| Pattern::compile(pattern))
            .collect::<Result<_, _>>()?;
        Ok(Selection {
            destination,
            rate,
            session_type: conditions.session_type,
            outcome_status: conditions.outcome_status,
            tier: conditions.tier,
            model,
            provider: conditions.provider,
            tenant: conditions.tenant,
        })
    }

    fn passes(&self, event: &Picked<'_>) -> bool {
        meets(&self.session_type, Some(&event.session.session_type))
            && meets(&self.outcome_status, Some(&event.outcome.status))
            && meets(&self.tier, Some(&event.user.tier))
            && (self.model.is_empty() || self.model.iter().any(|p| p.matches(&event.usage.model.0)))
            && meets(&self.provider, event.usage.provider.as_ref())
            && meets(&self.tenant, Some(&event.user.organization_id))
    }

    fn sampled_in(&self, event_id: &str) -> bool {
        self.rate >= 1.0 || sample_point(&self.destination, event_id) < self.rate
    }

    fn verdict(&self, line: &str) -> Verdict {
        let Ok(event) = serde_json::from_str::<Picked<'_>>(line) else {
            return Verdict::Undecided;
        };
        if !self.passes(&event) {
            Verdict::FilteredOut
        } else if !self.sampled_in(&event.event_id.0) {
            Verdict::SampledOut
        } else {
            Verdict::Chosen
        }
    }
}

fn meets(accepted: &[String], value: Option<&Text<'_>>) -> bool {
    accepted.is_empty() || value.is_some_and(|value| accepted.iter().any(|a| *a == value.0))
}

/// The event's point in [0, 1) for `destination`: SHA-256 of destination NUL event id, its
/// first 53 bits over 2**53 (exact in an f64, as in Python).
pub fn sample_point(destination: &str, event_id: &str) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(destination.as_bytes());
    hasher.update([0u8]);
    hasher.update(event_id.as_bytes());
    let digest = hasher.finalize();
    let mut prefix = [0u8; 8];
    prefix.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(prefix) >> 11) as f64 / (1u64 << 53) as f64
}

/// The verdict of each event of `lines` (JSON lines, each an event as msgspec writes it).
pub fn select_events(selection: &Selection, lines: &str) -> Result<Vec<Verdict>, SelectionError> {
    let lines = json_lines(lines).ok_or(SelectionError::Lines)?;
    Ok(lines.iter().map(|line| selection.verdict(line)).collect())
}

#[derive(Deserialize)]
struct Picked<'a> {
    #[serde(borrow)]
    event_id: Text<'a>,
    #[serde(borrow)]
    session: PickedSession<'a>,
    #[serde(borrow)]
    user: PickedUser<'a>,
    #[serde(borrow)]
    usage: PickedUsage<'a>,
    #[serde(borrow)]
    outcome: PickedOutcome<'a>,
}

#[derive(Deserialize)]
struct PickedSession<'a> {
    #[serde(borrow)]
    session_type: Text<'a>,
}

#[derive(Deserialize)]
struct PickedUser<'a> {
    #[serde(borrow)]
    organization_id: Text<'a>,
    #[serde(borrow)]
    tier: Text<'a>,
}

#[derive(Deserialize)]
struct PickedUsage<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow, default)]
    provider: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct PickedOutcome<'a> {
    #[serde(borrow)]
    status: Text<'a>,
}

// ----- shell wildcards, as fnmatch.fnmatchcase ------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters (consecutive stars are one).
    Star,
    /// `?`, or a negated empty set: any one character.
    Any,
    Literal(char),
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// An empty set: matches nothing.
    Never,
}

/// A compiled shell wildcard.
#[derive(Debug)]
pub struct Pattern(Vec<Token>);

/// A symbol of a set's text as `fnmatch.translate` writes it: a literal character, or the
/// unescaped hyphen between two chunks, which makes a range.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetSymbol {
    Char(char),
    Hyphen,
}

impl Pattern {
    pub fn compile(pattern: &str) -> Result<Pattern, SelectionError> {
        let chars: Vec<char> = pattern.chars().collect();
        let refused = || SelectionError::Pattern(pattern.to_owned());
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            match c {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                }
                '?' => tokens.push(Token::Any),
                '[' => match set_end(&chars, i) {
                    None => tokens.push(Token::Literal('[')),
                    Some(end) => {
                        tokens.push(set_token(&set_symbols(&chars, i, end)).ok_or_else(refused)?);
                        i = end + 1;
                    }
                },
                other => tokens.push(Token::Literal(other)),
            }
        }
        Ok(Pattern(tokens))
    }

    /// Whether the whole of `text` matches (greedy stars, backtracking to the last one: exact
    /// for wildcards whose other tokens each match one character).
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let tokens = &self.0;
        let (mut t, mut p) = (0, 0);
        let mut star: Option<(usize, usize)> = None; // (token after the star, text position)
        while t < text.len() {
            match tokens.get(p) {
                Some(Token::Star) => {
                    star = Some((p + 1, t));
                    p += 1;
                    continue;
                }
                Some(token) if token.matches(text[t]) => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
            match star {
                Some((after, from)) => {
                    star = Some((after, from + 1));
                    p = after;
                    t = from + 1;
                }
                None => return false,
            }
        }
        tokens[p..].iter().all(|token| *token == Token::Star)
    }
}

impl Token {
    fn matches(&self, c: char) -> bool {
        match self {
            Token::Any => true,
            Token::Literal(literal) => *literal == c,
            Token::Set { negated, ranges } => {
                ranges.iter().any(|&(low, high)| low <= c && c <= high) != *negated
            }
            Token::Star | Token::Never => false,
        }
    }
}

/// Where the set opened before `start` closes: the first `]` after an optional `!` and an
/// optional leading `]`; `None`: it never closes (the `[` is a literal).
fn set_end(chars: &[char], start: usize) -> Option<usize> {
    let mut j = start;
    if chars.get(j) == Some(&'!') {
        j += 1;
    }
    if chars.get(j) == Some(&']') {
        j += 1;
    }
    (j..chars.len()).find(|&k| chars[k] == ']')
}

/// The set `chars[start..end]` as fnmatch.translate writes it: without a hyphen, its characters;
/// with one, split into chunks at the hyphens that make ranges, the empty ranges removed (a
/// chunk's last character above the next one's first), joined by those hyphens.
fn set_symbols(chars: &[char], start: usize, end: usize) -> Vec<SetSymbol> {
    let stuff = &chars[start..end];
    if !stuff.contains(&'-') {
        return stuff.iter().map(|&c| SetSymbol::Char(c)).collect();
    }
    let mut chunks: Vec<Vec<char>> = Vec::new();
    let mut i = start;
    let mut k = if chars[start] == '!' {
        start + 2
    } else {
        start + 1
    };
    while let Some(hyphen) = (k..end).find(|&at| chars[at] == '-') {
        chunks.push(chars[i..hyphen].to_vec());
        i = hyphen + 1;
        k = hyphen + 3;
    }
    let last = &chars[i.min(end)..end];
    if last.is_empty() {
        if let Some(chunk) = chunks.last_mut() {
            chunk.push('-');
        }
    } else {
        chunks.push(last.to_vec());
    }
    for k in (1..chunks.len()).rev() {
        let (before, after) = (chunks[k - 1].last().copied(), chunks[k].first().copied());
        if let (Some(before), Some(after)) = (before, after) {
            if before > after {
                let mut merged = chunks[k - 1][..chunks[k - 1].len() - 1].to_vec();
                merged.extend_from_slice(&chunks[k][1..]);
                chunks[k - 1] = merged;
                chunks.remove(k);
            }
        }
    }
    let mut symbols = Vec::new();
    for (n, chunk) in chunks.iter().enumerate() {
        if n > 0 {
            symbols.push(SetSymbol::Hyphen);
        }
        symbols.extend(chunk.iter().map(|&c| SetSymbol::Char(c)));
    }
    symbols
}

/// The token Python's `re` reads from `[symbols]`; `None` where it would refuse it (a range
/// whose ends are out of order).
fn set_token(symbols: &[SetSymbol]) -> Option<Token> {
    let body = match symbols {
        [] => return Some(Token::Never),
        [SetSymbol::Char('!')] => return Some(Token::Any),
        [SetSymbol::Char('!'), rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let (negated, mut rest) = body;
    let char_of = |symbol: SetSymbol| match symbol {
        SetSymbol::Char(c) => c,
        SetSymbol::Hyphen => '-',
    };
    let mut ranges = Vec::new();
    while let Some((&first, after)) = rest.split_first() {
        let low = char_of(first);
        match after {
            [SetSymbol::Hyphen, high, tail @ ..] => {
                let high = char_of(*high);
                if high < low {
                    return None;
                }
                ranges.push((low, high));
                rest = tail;
            }
            [SetSymbol::Hyphen] => {
                ranges.push((low, low));
                ranges.push(('-', '-'));
                rest = &[];
            }
            _ => {
                ranges.push((low, low));
                rest = after;
            }
        }
    }
    Some(Token::Set { negated, ranges })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        Pattern::compile(pattern).unwrap().matches(text)
    }

    #[test]
    fn wildcards_match_as_fnmatchcase_does() {
        assert!(matches("gpt-4o*", "gpt-4o-mini"));
        assert!(matches("gpt-4o*", "gpt-4o"));
        assert!(!matches("gpt-4o*", "GPT-4o"));
        assert!(matches("claude-?-*", "claude-3-opus"));
        assert!(matches("*a*b", "xxaxxb"));
        assert!(!matches("*a*b", "xxaxxbc"));
        assert!(matches("[a-c]x", "bx"));
        assert!(!matches("[!a-c]x", "bx"));
        assert!(matches("[!a-c]x", "\nx"));
        assert!(matches("[", "["));
        assert!(matches("[]]", "]"));
        assert!(matches("[a-]", "-"));
        assert!(matches("[!]", "[!]")); // never closed: literal
        assert!(!matches("[!]", "!"));
        assert!(matches("*", ""));
        assert!(!matches("?", ""));
    }

    #[test]
    fn empty_ranges_are_removed_as_fnmatch_removes_them() {
        assert!(!matches("[b-a]", "a")); // an empty set: never
        assert!(matches("[!b-a]", "z")); // a negated empty set: any character
        assert!(matches("[b-ac-d]", "c"));
        assert!(!matches("[b-ac-d]", "b"));
    }

    #[test]
    fn sampling_points_are_the_sha256_prefix() {
        // hashlib.sha256(b"d\0e").digest()[:8] >> 11, over 2**53, computed in Python
        assert_eq!(sample_point("d", "e"), 0.07920103932156675);
    }

    #[test]
    fn a_bad_rate_is_refused() {
        let none = || Conditions {
            session_type: vec![],
            outcome_status: vec![],
            tier: vec![],
            model: vec![],
            provider: vec![],
            tenant: vec![],
        };
        assert!(Selection::new("d".into(), 1.5, none()).is_err());
        assert!(Selection::new("d".into(), f64::NAN, none()).is_err());
        assert!(Selection::new("d".into(), 0.5, none()).is_ok());
    }
}
