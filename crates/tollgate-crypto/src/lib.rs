//! The signature verification behind JWS: each algorithm Tollgate verifies, plugged into
//! jwt-compact through its public `Algorithm` trait, and the arithmetic under it. Verify-only:
//! nothing here signs outside the unit tests.
//!
//! - [`rsa`]: `RS256/384/512` and `PS256/384/512` (the encoding checks, and the modular
//!   arithmetic in `rsa::monty`)
//! - [`es_algorithm`]: `ES256` / `ES384` as jwt-compact `Algorithm`s (signature encoding)
//! - [`ecdsa_math`]: the ECDSA verification arithmetic on P-256 / P-384 (per-key tables)
//! - [`eddsa_algorithm`]: `EdDSA` (Ed25519) as a jwt-compact `Algorithm`
//! - [`ed25519_math`]: the Ed25519 verification schedule and equation on curve25519-dalek's
//!   arithmetic (per-key tables), and exactly which signatures it accepts
//! - [`precompute`]: what the two table verifiers share (digit recoding, the key-table registry)
//!
//! A crate of its own, used as `tollgate_core::crypto`, so that the release profile can
//! compile this hot arithmetic at `opt-level = 3` while the rest of the plugin is optimised for
//! size (issue 18; the table of opt-levels is in the workspace's Cargo.toml).

pub mod ecdsa_math;
pub mod ed25519_math;
pub mod eddsa_algorithm;
pub mod es_algorithm;
pub mod precompute;
pub mod rsa;

pub use eddsa_algorithm::{EdDsa, EdSignature};
pub use es_algorithm::{Es256, Es384, EsSignature};
