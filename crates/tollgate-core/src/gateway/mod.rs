//! The OAuth endpoint gateway ("authorization server replacement"): clients talk to one set of
//! OAuth endpoints on the gateway, and each call goes to the authorization server that owns it.
//!
//! - [`plan`]: the decision for one call, as a [`plan::Step`] the host adapter carries out
//! - [`endpoint`]: the endpoints, and everything that sets them apart (paths, metadata fields,
//!   counters, body rules)
//! - [`path`]: which endpoint, and the issuer named in the path
//! - [`form`]: form bodies and Basic client credentials (RFC 6749 §2.3.1)
//! - [`route`]: which authorization server, and the forwarded form of the call
//! - [`metadata`]: the gateway's own discovery documents
//! - [`origin`]: the public origins those documents name (never the request's `Host`)
//! - [`tag`]: `<issuer>.<value>` tags for stateless routing ("authorization server proxy")
//!
//! Its refusals are [`crate::outcome::GatewayError`]s, answered by
//! [`crate::outcome::gateway_reply`].

pub mod endpoint;
pub mod form;
pub mod metadata;
pub mod origin;
pub mod path;
pub mod plan;
pub mod route;
pub mod tag;

pub use endpoint::Endpoint;
pub use plan::{plan, Step};
