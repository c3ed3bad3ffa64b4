//! The OAuth endpoint gateway ("authorization server replacement"): clients talk to one set of
//! OAuth endpoints on the gateway, and each call goes to the authorization server that owns it.
//!
//! - [`path`]: which endpoint, and the issuer named in the path
//! - [`form`]: form bodies and queries (Basic client credentials: [`crate::basic_auth`])
//! - [`route`]: which authorization server, and the forwarded form of the call
//! - [`metadata`]: the gateway's own discovery documents, naming the configured public origins
//!   ([`crate::origin`], never the request's `Host`)
//!
//! The `<issuer>.<value>` tags of stateless routing ("authorization server proxy") are
//! [`crate::token`]'s: the issuer choice reads them too.

pub mod form;
pub mod metadata;
pub mod path;
pub mod route;
