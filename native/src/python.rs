//! The PyO3 bindings: `scr._core`. Each function takes a whole batch, borrows the bytes
//! and text of its arguments (immutable Python objects, kept alive by the caller's
//! references for the whole call), and releases the GIL while it hashes.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::{edge, ledger, webhooks};

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

// ----- the edge: per-event validation ------------------------------------------------------

/// What `check_events` answers for one event: `(event_id, tenant, canonical bytes, digest)`
/// when it is accepted, `None` when the Python reference must judge it.
type Verdict<'py> = Option<(String, String, Bound<'py, PyBytes>, Bound<'py, PyBytes>)>;

/// Judge each raw event of a request (valid schema v1.2, no repeated key, times no later than
/// `latest_epoch_us`); for each accepted one, its id, tenant, canonical bytes and digest.
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
    module.add_function(wrap_pyfunction!(webhook_ids, module)?)?;
    module.add_function(wrap_pyfunction!(batch_webhook_id, module)?)?;
    module.add_function(wrap_pyfunction!(sign, module)?)?;
    module.add_function(wrap_pyfunction!(check_events, module)?)?;
    Ok(())
}
