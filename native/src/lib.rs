//! scr's native per-event core, the extension module `scr._core`.
//!
//! Pure functions live in their own modules (`ledger`, `webhooks`, and for the edge's
//! per-event validation `edge` with the modules it reads and writes events by) and are
//! tested in Rust;
//! the `python` feature (turned on by setuptools-rust) adds the PyO3 bindings, which cross
//! the boundary once per batch and release the GIL while they hash. Every function gives
//! byte for byte what its Python reference gives (`scr.native` names the references).
#![forbid(unsafe_code)]

pub mod address;
pub mod canonical;
pub mod datetime;
pub mod edge;
pub mod event;
pub mod event_rules;
pub mod json;
pub mod ledger;
pub mod money;
pub mod webhooks;

#[cfg(feature = "python")]
mod python;
