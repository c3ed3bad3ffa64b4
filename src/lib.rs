//! # Tollgate
//!
//! The proxy-wasm plugin: the host adapter ([`proxy`]) over the host-free core,
//! [`tollgate_core`] (`crates/tollgate-core`), which decides everything. The core's modules are
//! re-exported here, so `crate::authn`, `crate::config`, ... name the core's.
//!
//! The core has no proxy-wasm dependency: only [`proxy`] talks to the host.

pub use tollgate_core::*;

pub mod proxy;
