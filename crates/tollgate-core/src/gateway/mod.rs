//! The OAuth endpoint gateway ("authorization server replacement"): clients talk to one set of
//! OAuth endpoints on the gateway, and each call goes to the authorization server that owns it.
//!
//! - [`mod@plan`]: the decision for one call, as a [`plan::Step`] the host adapter carries out
//! - [`crate::endpoint`]: the endpoints, and everything that sets them apart (paths, metadata
//!   fields, counters, body rules)
//! - [`path`]: which endpoint, and the issuer named in the path
//! - [`form`]: form bodies and queries (Basic client credentials: [`crate::basic_auth`])
//! - [`route`]: which authorization server, and the forwarded form of the call
//! - [`metadata`]: the gateway's own discovery documents, naming the configured public origins
//!   ([`crate::origin`], never the request's `Host`)
//!
//! The `<issuer>.<value>` tags of stateless routing ("authorization server proxy") are
//! [`crate::token`]'s: the issuer choice reads them too.
//!
//! Its refusals are [`crate::outcome::GatewayError`]s, answered by
//! [`crate::outcome::gateway_reply`].

pub mod form;
pub mod grants;
pub mod metadata;
pub mod path;
pub mod plan;
pub mod route;

pub use crate::endpoint::Endpoint;
pub use plan::{plan, Step};
