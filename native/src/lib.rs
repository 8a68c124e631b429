//! scr's native per-event core, the extension module `scr._core`.
//!
//! Pure functions live in their own modules (`ledger`, `keys`, `webhooks`, `transforms` and the
//! pieces it shapes outputs with: `json_out`, `times`, `ip_prefix`, `prices`) and are tested in Rust;
//! the `python` feature (turned on by setuptools-rust) adds the PyO3 bindings, which cross
//! the boundary once per batch and release the GIL while they hash. Every function gives
//! byte for byte what its Python reference gives (`scr.native` names the references).
#![forbid(unsafe_code)]

pub mod ip_prefix;
pub mod json_out;
pub mod keys;
pub mod ledger;
pub mod prices;
pub mod times;
pub mod transforms;
pub mod webhooks;

#[cfg(feature = "python")]
mod python;
