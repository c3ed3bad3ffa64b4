//! The OAuth endpoints the gateway exposes, and the one table of what sets them apart: the path
//! each answers at ([`Endpoint::segments`]), the authorization server's metadata field it
//! stands for, whether the browser is redirected or the call forwarded, its counter, whether
//! routing reads its body, and whether its answer is rewritten. Everything else (configuration,
//! path parsing, documents, counters, planning) asks these methods.
//!
//! It is a leaf module: the configuration names endpoints by [`Endpoint::server_field`] and
//! the gateway plans with them.

/// An OAuth endpoint the gateway exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Authorize,
    Token,
    Introspect,
    Revoke,
    Userinfo,
    /// RFC 7591 registration.
    Register,
    /// RFC 7592 management of one registered client (`register/{client_id}`): GET, PUT,
    /// DELETE.
    ClientConfiguration,
    /// RFC 9126 pushed authorization requests.
    Par,
    /// RFC 8628 device authorization.
    DeviceAuthorization,
    /// OpenID CIBA Core backchannel authentication.
    BackchannelAuthentication,
    /// OpenID RP-Initiated Logout (browser-facing).
    EndSession,
    /// `.well-known/openid-configuration`
    OidcDiscovery,
    /// `.well-known/oauth-authorization-server` (RFC 8414)
    AsMetadata,
}

/// Counter names (`tollgate.issuer.<name>.gateway.<counter>`), in the order of
/// [`Endpoint::counter_slot`]. Both metadata documents count as `metadata`.
pub const COUNTERS: [&str; 12] = [
    "authorize",
    "token",
    "introspect",
    "revoke",
    "userinfo",
    "register",
    "client_configuration",
    "par",
    "device_authorization",
    "backchannel_authentication",
    "end_session",
    "metadata",
];

/// The placeholder for the client id segment in [`Endpoint::segments`].
pub const CLIENT_ID: &str = "{client_id}";

/// The two kinds of authorization server metadata document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// OpenID Connect Discovery 1.0 (`openid-configuration`).
    OpenId,
    /// RFC 8414 (`oauth-authorization-server`).
    OAuth,
}

impl DocumentKind {
    pub const ALL: [DocumentKind; 2] = [DocumentKind::OpenId, DocumentKind::OAuth];

    /// The well-known name (`/.well-known/<name>`).
    pub fn well_known(self) -> &'static str {
        match self {
            DocumentKind::OpenId => "openid-configuration",
            DocumentKind::OAuth => "oauth-authorization-server",
        }
    }

    /// An index for per-kind arrays.
    pub fn index(self) -> usize {
        match self {
            DocumentKind::OpenId => 0,
            DocumentKind::OAuth => 1,
        }
    }
}

impl Endpoint {
    /// Every endpoint, in the order the gateway's documents list them.
    pub const ALL: [Endpoint; 13] = [
        Endpoint::Authorize,
        Endpoint::Token,
        Endpoint::Introspect,
        Endpoint::Revoke,
        Endpoint::Userinfo,
        Endpoint::Register,
        Endpoint::ClientConfiguration,
        Endpoint::Par,
        Endpoint::DeviceAuthorization,
        Endpoint::BackchannelAuthentication,
        Endpoint::EndSession,
        Endpoint::OidcDiscovery,
        Endpoint::AsMetadata,
    ];

    /// The path segments below the base path (and the issuer segment, if any); [`CLIENT_ID`]
    /// stands for one non-empty segment.
    pub fn segments(self) -> &'static [&'static str] {
        match self {
            Endpoint::Authorize => &["authorize"],
            Endpoint::Token => &["token"],
            Endpoint::Introspect => &["introspect"],
            Endpoint::Revoke => &["revoke"],
            Endpoint::Userinfo => &["userinfo"],
            Endpoint::Register => &["register"],
            Endpoint::ClientConfiguration => &["register", CLIENT_ID],
            Endpoint::Par => &["par"],
            Endpoint::DeviceAuthorization => &["device_authorization"],
            Endpoint::BackchannelAuthentication => &["backchannel_authentication"],
            Endpoint::EndSession => &["end_session"],
            Endpoint::OidcDiscovery => &[".well-known", "openid-configuration"],
            Endpoint::AsMetadata => &[".well-known", "oauth-authorization-server"],
        }
    }

    /// The metadata field (RFC 8414 §2, OpenID Connect Discovery §3, RFC 9126 §5, RFC 8628
    /// §4, CIBA §4, RP-Initiated Logout §2.1) that names the authorization server's URL a call
    /// to this endpoint goes to; `None` for the gateway's own documents.
    pub fn server_field(self) -> Option<&'static str> {
        Some(match self {
            Endpoint::Authorize => "authorization_endpoint",
            Endpoint::Token => "token_endpoint",
            Endpoint::Introspect => "introspection_endpoint",
            Endpoint::Revoke => "revocation_endpoint",
            Endpoint::Userinfo => "userinfo_endpoint",
            Endpoint::Register | Endpoint::ClientConfiguration => "registration_endpoint",
            Endpoint::Par => "pushed_authorization_request_endpoint",
            Endpoint::DeviceAuthorization => "device_authorization_endpoint",
            Endpoint::BackchannelAuthentication => "backchannel_authentication_endpoint",
            Endpoint::EndSession => "end_session_endpoint",
            Endpoint::OidcDiscovery | Endpoint::AsMetadata => return None,
        })
    }

    /// The endpoint a metadata field names (the inverse of [`Endpoint::server_field`]; client
    /// configuration URLs are handed out by registration, not listed).
    pub fn for_field(field: &str) -> Option<Endpoint> {
        Endpoint::ALL
            .into_iter()
            .find(|e| e.is_published() && e.server_field() == Some(field))
    }

    /// Whether the gateway's metadata documents list this endpoint, under
    /// [`Endpoint::server_field`].
    pub fn is_published(self) -> bool {
        self.server_field().is_some() && self != Endpoint::ClientConfiguration
    }

    /// The metadata document this endpoint serves, if it is one.
    pub fn document(self) -> Option<DocumentKind> {
        match self {
            Endpoint::OidcDiscovery => Some(DocumentKind::OpenId),
            Endpoint::AsMetadata => Some(DocumentKind::OAuth),
            _ => None,
        }
    }

    /// Whether this is one of the gateway's own metadata documents.
    pub fn is_metadata(self) -> bool {
        self.document().is_some()
    }

    /// Whether the browser is sent to the server itself rather than the call forwarded: the
    /// endpoints a user agent visits, whose pages, cookies and forms are the server's.
    pub fn redirects(self) -> bool {
        matches!(self, Endpoint::Authorize | Endpoint::EndSession)
    }

    /// This endpoint's counter, an index into [`COUNTERS`].
    pub fn counter_slot(self) -> usize {
        match self {
            Endpoint::Authorize => 0,
            Endpoint::Token => 1,
            Endpoint::Introspect => 2,
            Endpoint::Revoke => 3,
            Endpoint::Userinfo => 4,
            Endpoint::Register => 5,
            Endpoint::ClientConfiguration => 6,
            Endpoint::Par => 7,
            Endpoint::DeviceAuthorization => 8,
            Endpoint::BackchannelAuthentication => 9,
            Endpoint::EndSession => 10,
            Endpoint::OidcDiscovery | Endpoint::AsMetadata => 11,
        }
    }

    /// Whether a call with `method` needs its whole request body before it is forwarded: to be
    /// routed or rewritten (the forms), or to be forwarded with its length (registration's and
    /// client updates' JSON).
    pub fn reads_body(self, method: &str) -> bool {
        match self {
            Endpoint::Register => true,
            Endpoint::ClientConfiguration => method == "PUT",
            Endpoint::EndSession => method == "POST",
            e => e.takes_form(),
        }
    }

    /// Whether the body must be `application/x-www-form-urlencoded` (RFC 6749 §3.2, RFC 7662
    /// §2.1, RFC 7009 §2.1, RFC 9126 §2.1, RFC 8628 §3.1, CIBA §7.1; a logout POST is a form
    /// too, RP-Initiated Logout §2).
    pub fn takes_form(self) -> bool {
        matches!(
            self,
            Endpoint::Token
                | Endpoint::Introspect
                | Endpoint::Revoke
                | Endpoint::Par
                | Endpoint::DeviceAuthorization
                | Endpoint::BackchannelAuthentication
                | Endpoint::EndSession
        )
    }

    /// Whether the server's successful answer is rewritten on its way to the client: routing
    /// tags on opaque tokens (with `tagging`), and `registration_client_uri` from registration.
    pub fn rewrites_response(self, tagging: bool) -> bool {
        match self {
            Endpoint::Token => tagging,
            Endpoint::Register | Endpoint::ClientConfiguration => true,
            _ => false,
        }
    }
}

/// Metadata fields that name a place a client sends requests or a browser to, other than the
/// `*_endpoint` fields: a gateway document must not pass one through unchanged.
/// `check_session_iframe` (OpenID Session Management) runs in the server's origin;
/// `mtls_endpoint_aliases` (RFC 8705 §5) names the server's own mTLS endpoints; and
/// `signed_metadata` (RFC 8414 §2.1) would override every rewritten value.
pub const OTHER_SERVER_URL_FIELDS: [&str; 3] = [
    "check_session_iframe",
    "mtls_endpoint_aliases",
    "signed_metadata",
];

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn every_counter_slot_is_used_and_names_its_endpoint() {
        let mut used = [false; COUNTERS.len()];
        for e in Endpoint::ALL {
            used[e.counter_slot()] = true;
        }
        assert!(used.iter().all(|u| *u));
        let counter = |e: Endpoint| COUNTERS[e.counter_slot()];
        assert_eq!(counter(Endpoint::Token), "token");
        assert_eq!(
            counter(Endpoint::ClientConfiguration),
            "client_configuration"
        );
        assert_eq!(counter(Endpoint::Par), "par");
        assert_eq!(counter(Endpoint::EndSession), "end_session");
        assert_eq!(
            counter(Endpoint::BackchannelAuthentication),
            "backchannel_authentication"
        );
        assert_eq!(counter(Endpoint::AsMetadata), "metadata");
        assert_eq!(counter(Endpoint::OidcDiscovery), "metadata");
    }

    #[test]
    fn published_fields_are_endpoints_and_name_one_endpoint_each() {
        for e in Endpoint::ALL {
            assert_eq!(e.is_metadata(), e.server_field().is_none(), "{e:?}");
            if e.is_published() {
                let field = e.server_field().unwrap();
                assert!(field.ends_with("_endpoint"), "{field}");
                assert_eq!(Endpoint::for_field(field), Some(e));
            }
        }
        assert_eq!(
            Endpoint::for_field("registration_endpoint"),
            Some(Endpoint::Register)
        );
        assert_eq!(Endpoint::for_field("jwks_uri"), None);
    }

    #[test]
    fn bodies_are_read_where_routing_or_forwarding_needs_them() {
        assert!(Endpoint::Par.reads_body("POST"));
        assert!(Endpoint::Register.reads_body("POST"));
        assert!(Endpoint::ClientConfiguration.reads_body("PUT"));
        assert!(!Endpoint::ClientConfiguration.reads_body("GET"));
        assert!(!Endpoint::ClientConfiguration.reads_body("DELETE"));
        assert!(Endpoint::EndSession.reads_body("POST"));
        assert!(!Endpoint::EndSession.reads_body("GET"));
        assert!(!Endpoint::Authorize.reads_body("GET"));
        assert!(!Endpoint::Userinfo.reads_body("POST"));
    }
}
