//! RFC 9728 protected-resource metadata: the documents Tollgate answers itself at
//! `/.well-known/oauth-protected-resource{path}` (§3.1: the well-known part goes in front of
//! the resource's path), and the URL that each challenge of a route under a resource names
//! (`resource_metadata`, §5.1).
//!
//! Everything is fixed when the configuration is compiled ([`crate::config`] builds each
//! document from the resource's configured public origin and its routes); a request only
//! selects one. The request's `Host` picks among the configured origins, as for the gateway's
//! documents ([`crate::origin`]), and never appears in a document or a challenge;
//! `X-Forwarded-*` is never read.

use crate::origin::PublicOrigin;
use crate::outcome::LocalReply;

/// The well-known prefix of every protected-resource metadata document.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// One protected resource, compiled.
#[derive(Debug)]
pub struct ProtectedResource {
    /// The public origin clients reach it at.
    pub origin: PublicOrigin,
    /// Its path: `/`, or segments without a trailing `/`.
    pub path: String,
    /// `resource`: the origin then the path (the root resource: the origin alone).
    pub resource: String,
    /// Where its document is: the origin, [`WELL_KNOWN`], then the path unless it is `/`.
    pub metadata_url: String,
    /// The document, serialised once.
    pub document: String,
}

/// The request path of the document of the resource at `path` (RFC 9728 §3.1).
pub fn well_known_path(path: &str) -> String {
    match path {
        "/" => WELL_KNOWN.to_owned(),
        _ => format!("{WELL_KNOWN}{path}"),
    }
}

/// The resource path a request path asks the document of, if it is a well-known one:
/// `/.well-known/oauth-protected-resource` itself names `/`.
fn asked_path(request_path: &str) -> Option<&str> {
    let path = request_path
        .split_once('?')
        .map_or(request_path, |(p, _)| p);
    match path.strip_prefix(WELL_KNOWN)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}

/// Tollgate's own answer to a `GET` (or `HEAD`) of a configured resource's document at one of
/// its origin's hosts; `None` for any other request, which goes on as usual (routes apply).
pub fn answer(
    resources: &[ProtectedResource],
    method: &str,
    path: &str,
    authority: &str,
) -> Option<LocalReply> {
    if resources.is_empty() || !matches!(method, "GET" | "HEAD") {
        return None;
    }
    let asked = asked_path(path)?;
    let r = resources
        .iter()
        .find(|r| r.path == asked && r.origin.serves(authority))?;
    Some(LocalReply {
        status: 200,
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: r.document.clone(),
    })
}

#[cfg(test)]
mod tests;
