//! The PyO3 bindings: `scr._core`. Each function takes a whole batch, borrows the bytes
//! and text of its arguments (immutable Python objects, kept alive by the caller's
//! references for the whole call), and releases the GIL while it hashes or shapes outputs.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::prices::PriceTable;
use crate::selection::{self, Conditions, Selection};
use crate::transforms::{self, EntryFacts, Transform};
use crate::{edge, keys, ledger, usage, webhooks};

fn bytes_of<'a>(items: &'a [Bound<'_, PyBytes>]) -> Vec<&'a [u8]> {
    items.iter().map(|item| item.as_bytes()).collect()
}

fn texts_of<'a>(items: &'a [Bound<'_, PyString>]) -> PyResult<Vec<&'a str>> {
    items.iter().map(|item| item.to_str()).collect()
}

fn to_bytes<'py>(py: Python<'py>, hashes: &[ledger::Hash]) -> Vec<Bound<'py, PyBytes>> {
    hashes.iter().map(|hash| PyBytes::new(py, hash)).collect()
}

/// The RFC 6962 leaf hash of each stored entry.
#[pyfunction]
fn leaf_hashes<'py>(
    py: Python<'py>,
    entries: Vec<Bound<'py, PyBytes>>,
) -> Vec<Bound<'py, PyBytes>> {
    let stored = bytes_of(&entries);
    let hashes = py.detach(|| ledger::leaf_hashes(&stored));
    to_bytes(py, &hashes)
}

/// The chain hash of each entry of a group; entry `i` follows `heads[tenants[i]]`.
#[pyfunction]
fn chain_hashes<'py>(
    py: Python<'py>,
    heads: Vec<Bound<'py, PyBytes>>,
    tenants: Vec<i64>,
    stored: Vec<Bound<'py, PyBytes>>,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let head_bytes = bytes_of(&heads);
    let entries = bytes_of(&stored);
    let hashes = py
        .detach(|| ledger::chain_hashes(&head_bytes, &tenants, &entries))
        .map_err(|error| PyValueError::new_err(error.to_string()))?;
    Ok(to_bytes(py, &hashes))
}

type PyNode<'py> = (u32, u64, Bound<'py, PyBytes>);

/// The nodes `leaves` complete on a tree of `size` leaves with this `frontier`, and the
/// frontier after them.
#[pyfunction]
fn extend_frontier<'py>(
    py: Python<'py>,
    frontier: Vec<Bound<'py, PyBytes>>,
    size: u64,
    leaves: Vec<Bound<'py, PyBytes>>,
) -> PyResult<(Vec<PyNode<'py>>, Vec<Bound<'py, PyBytes>>)> {
    let mut roots = hashes_of(&frontier, "frontier hash")?;
    if roots.len() != size.count_ones() as usize {
        return Err(PyValueError::new_err(format!(
            "a tree of {size} leaves has {} frontier hashes, not {}",
            size.count_ones(),
            roots.len()
        )));
    }
    let added = hashes_of(&leaves, "leaf hash")?;
    let nodes = py.detach(|| ledger::extend_frontier(&mut roots, size, &added));
    let nodes = nodes
        .iter()
        .map(|(level, index, hash)| (*level, *index, PyBytes::new(py, hash)))
        .collect();
    Ok((nodes, to_bytes(py, &roots)))
}

fn hashes_of(items: &[Bound<'_, PyBytes>], what: &str) -> PyResult<Vec<ledger::Hash>> {
    items
        .iter()
        .map(|item| {
            item.as_bytes().try_into().map_err(|_| {
                PyValueError::new_err(format!("{what} must be {} bytes", ledger::HASH_BYTES))
            })
        })
        .collect()
}

/// The `webhook-id` of each event's delivery to `destination`.
#[pyfunction]
fn webhook_ids(
    py: Python<'_>,
    destination: &str,
    event_ids: Vec<Bound<'_, PyString>>,
) -> PyResult<Vec<String>> {
    let ids = texts_of(&event_ids)?;
    Ok(py.detach(|| {
        ids.iter()
            .map(|event_id| webhooks::webhook_id(destination, event_id))
            .collect()
    }))
}

/// The `webhook-id` of a batch; the positions are written as Python's `str` writes them.
#[pyfunction]
fn batch_webhook_id(
    destination: &str,
    first_seq: &Bound<'_, PyAny>,
    last_seq: &Bound<'_, PyAny>,
) -> PyResult<String> {
    let first = first_seq.str()?;
    let last = last_seq.str()?;
    Ok(webhooks::batch_webhook_id(
        destination,
        first.to_str()?,
        last.to_str()?,
    ))
}

/// The `webhook-signature` header of one delivery's body, signed with every key.
#[pyfunction]
fn sign(
    py: Python<'_>,
    secrets: Vec<Bound<'_, PyBytes>>,
    msg_id: &str,
    timestamp: &Bound<'_, PyAny>,
    body: &Bound<'_, PyBytes>,
) -> PyResult<String> {
    let keys = bytes_of(&secrets);
    let stamp = timestamp.str()?;
    let stamp = stamp.to_str()?;
    let body = body.as_bytes();
    py.detach(|| webhooks::signature_header(&keys, msg_id, stamp, body))
        .ok_or_else(|| PyValueError::new_err("signing needs at least one secret"))
}

// ----- the embedded store's dedup index (keys.rs) ---------------------------------------------

/// The signed 64-bit hash of each `(tenant, event_id)`.
#[pyfunction]
fn event_keys(
    tenants: Vec<Bound<'_, PyString>>,
    event_ids: Vec<Bound<'_, PyString>>,
) -> PyResult<Vec<i64>> {
    if tenants.len() != event_ids.len() {
        return Err(PyValueError::new_err(format!(
            "event_keys needs one tenant per event id: {} tenants for {} ids",
            tenants.len(),
            event_ids.len()
        )));
    }
    let tenants = texts_of(&tenants)?;
    let ids = texts_of(&event_ids)?;
    Ok(tenants
        .iter()
        .zip(&ids)
        .map(|(tenant, id)| keys::event_key(tenant, id))
        .collect())
}

/// Every event key's hash and its seq, in memory (`scr.store.keylog` keeps it durable).
#[pyclass(name = "KeyIndex", module = "scr._core")]
#[derive(Default)]
struct PyKeyIndex {
    index: keys::KeyIndex,
}

#[pymethods]
impl PyKeyIndex {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    fn __len__(&self) -> usize {
        self.index.len()
    }

    /// The seq each key hash maps to, 0 where it maps to none (seqs start at 1).
    fn seqs(&self, keys: Vec<i64>) -> Vec<i64> {
        keys.iter()
            .map(|key| self.index.get(*key).unwrap_or(0))
            .collect()
    }

    /// Maps each key hash to its seq; returns the log records of the pairs.
    fn insert<'py>(
        &mut self,
        py: Python<'py>,
        keys: Vec<i64>,
        seqs: Vec<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if keys.len() != seqs.len() {
            return Err(PyValueError::new_err(format!(
                "insert needs one seq per key: {} keys for {} seqs",
                keys.len(),
                seqs.len()
            )));
        }
        for (key, seq) in keys.iter().zip(&seqs) {
            self.index.insert(*key, *seq);
        }
        Ok(PyBytes::new(py, &keys::records(&keys, &seqs)))
    }

    /// Inserts the whole records of `log`: (bytes that were whole records, largest seq).
    fn load(&mut self, log: &Bound<'_, PyBytes>) -> (usize, i64) {
        self.index.load(log.as_bytes())
    }
}

// ----- the destinations' transforms (scr.route.transforms) --------------------------------------

/// A price table read once for every `transform_events` call that costs with it: made from
/// `scr.route.prices.PriceTable.plain` (its version, and per model its case-folded name and
/// prices as `str(Decimal)` writes them).
#[pyclass(frozen, name = "Prices", module = "scr._core")]
struct PyPrices {
    table: PriceTable,
}

#[pymethods]
impl PyPrices {
    #[new]
    fn new(version: String, rows: Vec<(String, String, String, String)>) -> PyPrices {
        PyPrices {
            table: PriceTable::new(version, &rows),
        }
    }
}

/// Each event's output of a built-in transform, as `encode_output(transform(event, entry))`
/// gives it; `None` for an event only the Python reference shapes. `events` are JSON lines, one
/// event a line as msgspec writes it (its members in any order); entry `i` was committed at `seqs[i]`, `tenant_seqs[i]`, `entry_hashes[i]`.
#[pyfunction]
fn transform_events<'py>(
    py: Python<'py>,
    transform: &str,
    prices: Option<Bound<'py, PyPrices>>,
    events: &Bound<'py, PyBytes>,
    seqs: Vec<i64>,
    tenant_seqs: Vec<i64>,
    entry_hashes: Vec<Bound<'py, PyBytes>>,
) -> PyResult<Vec<Option<Bound<'py, PyBytes>>>> {
    let shape = Transform::named(transform).ok_or_else(|| {
        PyValueError::new_err(format!("{transform:?} is not a built-in transform"))
    })?;
    if seqs.len() != tenant_seqs.len() || seqs.len() != entry_hashes.len() {
        return Err(PyValueError::new_err(
            "seqs, tenant_seqs and entry_hashes differ in length",
        ));
    }
    let hashes = bytes_of(&entry_hashes);
    let entries: Vec<EntryFacts<'_>> = seqs
        .iter()
        .zip(&tenant_seqs)
        .zip(&hashes)
        .map(|((&seq, &tenant_seq), &entry_hash)| EntryFacts {
            seq,
            tenant_seq,
            entry_hash,
        })
        .collect();
    let events = events.as_bytes();
    let table = prices.as_ref().map(|prices| &prices.get().table);
    let outputs = py
        .detach(|| transforms::transform_events(shape, table, events, &entries))
        .map_err(|error| PyValueError::new_err(error.to_string()))?;
    Ok(outputs
        .iter()
        .map(|output| output.as_deref().map(|body| PyBytes::new(py, body)))
        .collect())
}

// ----- the destinations' filter and sampling (scr.route.selection) ----------------------------

/// A destination's filter and sampling rate, its model wildcards compiled once; refused
/// (`ValueError`) for a rate outside [0, 1] or a wildcard left to Python's fnmatch.
#[pyclass(frozen, name = "Selection", module = "scr._core")]
struct PySelection {
    selection: Selection,
}

#[pymethods]
impl PySelection {
    #[new]
    #[allow(clippy::too_many_arguments)] // the filter's six conditions, as Python names them
    fn new(
        destination: String,
        rate: f64,
        session_type: Vec<String>,
        outcome_status: Vec<String>,
        tier: Vec<String>,
        model: Vec<String>,
        provider: Vec<String>,
        tenant: Vec<String>,
    ) -> PyResult<PySelection> {
        let conditions = Conditions {
            session_type,
            outcome_status,
            tier,
            model,
            provider,
            tenant,
        };
        Selection::new(destination, rate, conditions)
            .map(|selection| PySelection { selection })
            .map_err(|error| PyValueError::new_err(error.to_string()))
    }
}

/// One verdict byte for each event of `events` (JSON lines, as stored): 0 chosen, 1 filtered
/// out, 2 sampled out, 3 left to the Python reference.
#[pyfunction]
fn select_events<'py>(
    py: Python<'py>,
    selection: Bound<'py, PySelection>,
    events: &Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyBytes>> {
    let text = std::str::from_utf8(events.as_bytes())
        .map_err(|_| PyValueError::new_err("the events are not UTF-8"))?;
    let selection = &selection.get().selection;
    let verdicts = py
        .detach(|| selection::select_events(selection, text))
        .map_err(|error| PyValueError::new_err(error.to_string()))?;
    let bytes: Vec<u8> = verdicts.iter().map(|verdict| *verdict as u8).collect();
    Ok(PyBytes::new(py, &bytes))
}

// ----- the usage aggregator (scr.usage.aggregate) ---------------------------------------------

/// What `count_usage` answers: each key, its counters, the first event of each session
/// (tenant, session id, key position, duration) and the events whose cost Python decides
/// (entry position, key position).
type Counted = (
    Vec<usage::UsageKey>,
    Vec<[u128; usage::COUNTERS]>,
    Vec<(String, String, usize, u64)>,
    Vec<(usize, usize)>,
);

/// The usage of a group of SESSION_COMPLETION entries (JSON lines, as stored), entry `i` of
/// tenant `tenants[i]`, costed with `prices`.
#[pyfunction]
fn count_usage(
    py: Python<'_>,
    prices: Bound<'_, PyPrices>,
    tenants: Vec<Bound<'_, PyString>>,
    entries: &Bound<'_, PyBytes>,
) -> PyResult<Counted> {
    let tenants = texts_of(&tenants)?;
    let entries = entries.as_bytes();
    let table = &prices.get().table;
    let group = py
        .detach(|| usage::count_usage(table, &tenants, entries))
        .map_err(|error| PyValueError::new_err(error.to_string()))?;
    Ok((group.keys, group.counters, group.firsts, group.undecided))
}

// ----- the edge: per-event validation ------------------------------------------------------

/// What `check_events` answers for one event: `(event_id, tenant, session_id, model, canonical
/// bytes, digest)` when it is accepted, `None` when the Python reference must judge it.
type Verdict<'py> = Option<(
    String,
    String,
    String,
    String,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
)>;

/// Judge each raw event of a request (valid schema v1.2, no repeated key, times no later than
/// `latest_epoch_us`); for each accepted one, its id, tenant, session id, model, canonical bytes
/// and digest.
#[pyfunction]
fn check_events<'py>(
    py: Python<'py>,
    raws: Vec<Bound<'py, PyBytes>>,
    latest_epoch_us: i64,
) -> Vec<Verdict<'py>> {
    let events = bytes_of(&raws);
    let verdicts: Vec<Option<edge::Accepted>> = py.detach(|| {
        events
            .iter()
            .map(|raw| edge::check_event(raw, latest_epoch_us))
            .collect()
    });
    verdicts
        .into_iter()
        .map(|verdict| {
            verdict.map(|accepted| {
                (
                    accepted.event_id,
                    accepted.tenant,
                    accepted.session_id,
                    accepted.model,
                    PyBytes::new(py, &accepted.canonical),
                    PyBytes::new(py, &accepted.digest),
                )
            })
        })
        .collect()
}

#[pymodule]
fn _core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    module.add_function(wrap_pyfunction!(leaf_hashes, module)?)?;
    module.add_function(wrap_pyfunction!(chain_hashes, module)?)?;
    module.add_function(wrap_pyfunction!(extend_frontier, module)?)?;
    module.add_function(wrap_pyfunction!(webhook_ids, module)?)?;
    module.add_function(wrap_pyfunction!(batch_webhook_id, module)?)?;
    module.add_function(wrap_pyfunction!(sign, module)?)?;
    module.add_function(wrap_pyfunction!(event_keys, module)?)?;
    module.add_class::<PyKeyIndex>()?;
    module.add_class::<PyPrices>()?;
    module.add_function(wrap_pyfunction!(transform_events, module)?)?;
    module.add_function(wrap_pyfunction!(check_events, module)?)?;
    module.add_function(wrap_pyfunction!(count_usage, module)?)?;
    module.add_class::<PySelection>()?;
    module.add_function(wrap_pyfunction!(select_events, module)?)?;
    Ok(())
}
