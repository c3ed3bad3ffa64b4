//! The signature verification behind JWS: each algorithm Tollgate verifies, plugged into
//! jwt-compact through its public `Algorithm` trait, and the arithmetic under it. Verify-only:
//! nothing here signs outside the unit tests. Ed25519 is jwt-compact's own (`ed25519-compact`).
//!
//! - [`rsa`]: `RS256/384/512` and `PS256/384/512` (the encoding checks, and the modular
//!   arithmetic in `rsa::monty`)
//! - [`es_algorithm`]: `ES256` / `ES384` as jwt-compact `Algorithm`s (signature encoding)
//! - [`ecdsa_math`]: the ECDSA verification arithmetic on P-256 / P-384 (per-key tables)
//!
//! A crate of its own, used as `tollgate_core::crypto`, so that the release profile can
//! compile this hot arithmetic at `opt-level = 3` while the rest of the plugin is optimised for
//! size (issue 18; the table of opt-levels is in the workspace's Cargo.toml).

pub mod ecdsa_math;
pub mod es_algorithm;
pub mod rsa;

pub use es_algorithm::{Es256, Es384, EsSignature};
