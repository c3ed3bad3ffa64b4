//! # Tollgate core
//!
//! A proxy-wasm HTTP filter that lets an API gateway accept OAuth 2.0 access tokens from
//! several authorization servers (issuers) at once. For each API call it takes the bearer token,
//! picks the one issuer that minted it (the JWT `iss`), verifies the token in-process against
//! that issuer's JWKS, enforces the route's requirements (issuers, scopes, claims) and forwards
//! the verified identity as request headers.
//!
//! ## Threat model (what Tollgate defends)
//! - Forged tokens: the signature algorithm comes from configuration and the key, never from the
//!   token alone; `none` and HMAC are refused; RSA keys under 2048 bits are not loaded.
//! - Cross-issuer confusion: a token is checked only with the keys of the issuer its `iss` names,
//!   and `iss` must equal that issuer exactly; a route may accept only some issuers.
//! - Spoofed identity: inbound copies of every identity header Tollgate sets are removed from
//!   every request, whatever the outcome.
//! - Leaks: tokens and secrets never appear in logs, metrics or error bodies; the token cache is
//!   keyed by a hash.
//! - Availability: a JWKS is fetched once per refresh per process and shared across workers;
//!   keys already held keep working while an AS is down, up to a configured staleness.
//!
//! This crate is everything that decides, and has no proxy-wasm dependency: the compiler keeps
//! it host-free. The plugin itself (`tollgate`, the cdylib at the repository root) holds the
//! host adapter, the only code that talks to the proxy-wasm host.
//!
//! ## Module map
//! - [`config`]: plugin JSON -> validated [`config::FilterConfig`], errors with JSON paths
//! - [`extract`]: RFC 6750 bearer extraction
//! - [`issuer`]: which issuer a token belongs to (JWT `iss`; opaque-token rules)
//! - [`token`]: a token's shape (JWS or opaque) and the gateway's `<issuer>.<value>` tags
//! - [`jwt`]: unverified `iss` peek, signature/time/issuer/audience checks
//! - [`audience`]: the one `aud` rule, for JWTs and introspection answers
//! - [`key`]: verifying keys and the algorithms they serve
//! - [`crypto`]: RSA, ECDSA and Ed25519 verification, plugged into jwt-compact
//! - [`sign`]: the gateway's own signing keys (private JWKs, one active `kid`), compact JWS
//!   minting (EdDSA, ES256) and the public JWKS it publishes
//! - [`introspect`]: RFC 7662 requests and answers
//! - [`basic_auth`]: RFC 6749 §2.3.1 Basic client credentials, both directions
//! - [`jwks`]: JWKS parsing, per-worker key ring
//! - [`refresh`]: when to fetch each issuer's metadata and JWKS (the shared fetch state)
//! - [`cache`]: the verified-token cache (bounded slots, TTL never past `exp`)
//! - [`policy`]: route matching and requirements
//! - [`dpop`]: DPoP proofs at the resource (RFC 9449); [`binding`]: whether a token's `cnf`
//!   binding (DPoP, mTLS) and the route's modes hold for a request; [`client_cert`]: the client
//!   certificate's thumbprint from each place a host gives it
//! - [`gateway`]: the OAuth endpoint gateway; [`endpoint`]: its endpoints and the metadata
//!   fields they stand for; [`origin`]: its configured public origins
//! - [`resource`]: RFC 9728 protected-resource metadata documents (served by Tollgate)
//! - [`identity`]: identity headers
//! - [`authn`]: the per-request decision; [`authz`]: the AuthZEN evaluation a route's
//!   `authorize` rule asks a policy decision point, and its answer
//! - [`flow`]: the request flow behind a [`flow::Host`]: waits, resumes, deadlines, key refresh
//!   and introspection callouts, leases, peer waits
//! - [`outcome`]: every refusal -> status, `WWW-Authenticate`, JSON body
//! - [`http`]: outbound requests and responses as values

pub mod audience;
pub mod authn;
pub mod authz;
pub mod basic_auth;
pub mod binding;
pub mod cache;
pub mod client_cert;
pub mod config;
/// The verification arithmetic, a crate of its own (`crates/tollgate-crypto`) so that it keeps
/// `opt-level = 3` in a size-optimised release build (issue 18).
pub use tollgate_crypto as crypto;
pub mod dpop;
pub mod endpoint;
pub mod extract;
pub mod flow;
pub mod gateway;
pub mod http;
pub mod identity;
pub mod introspect;
pub mod issuer;
pub mod jwks;
pub mod jwt;
pub mod key;
pub mod origin;
pub mod outcome;
pub mod policy;
pub mod refresh;
pub mod resource;
pub mod sign;
pub mod token;
pub mod upstream;

/// Fixed test keys, clock and token minting for the unit tests.
#[cfg(test)]
mod testdata;
