//! scr's native per-event core, the extension module `scr._core`.
//!
//! Pure functions live in their own modules and are tested in Rust: `ledger` and `keys` for
//! the writer; `edge` for the edge's per-event validation, with the modules it reads and
//! writes events by (`json`, `event`, `event_rules`, `datetime`, `money`, `address`,
//! `canonical`); `transforms` for the destinations, with the pieces it shapes outputs with
//! (`event_view`, `event_order`, `json_out`, `times`, `ip_prefix`, `prices`), `selection` for
//! their filters and sampling, and `webhooks`;
//! `usage` for the usage aggregator. The `python` feature (turned on by setuptools-rust) adds
//! the PyO3 bindings, which cross the boundary once per batch and release the GIL while they
//! work. Every function gives byte for byte what its Python reference gives (`scr.native`
//! names the references).
#![forbid(unsafe_code)]

pub mod address;
pub mod canonical;
pub mod datetime;
pub mod edge;
pub mod event;
pub mod event_order;
pub mod event_rules;
mod event_view;
pub mod ip_prefix;
pub mod json;
pub mod json_out;
pub mod keys;
pub mod ledger;
pub mod money;
pub mod prices;
pub mod selection;
pub mod times;
pub mod transforms;
pub mod usage;
pub mod webhooks;

#[cfg(feature = "python")]
mod python;
