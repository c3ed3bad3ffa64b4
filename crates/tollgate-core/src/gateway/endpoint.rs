//! The gateway's endpoints, and the one table of what sets them apart: the path each answers
//! at ([`Endpoint::segments`]), the authorization server's metadata field it is forwarded to, whether the gateway's own
//! documents list it, its counter, whether routing reads its body, and whether its answer is
//! rewritten. Everything else (path parsing, documents, counters, planning) asks these methods.

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
    /// RFC 7592 management of one registered client (`register/{client_id}`).
    ClientConfiguration,
    /// `.well-known/openid-configuration`
    OidcDiscovery,
    /// `.well-known/oauth-authorization-server` (RFC 8414)
    AsMetadata,
}

/// Counter names (`tollgate.issuer.<name>.gateway.<counter>`), in the order of
/// [`Endpoint::counter_slot`]. Both metadata documents count as `metadata`.
pub const COUNTERS: [&str; 8] = [
    "authorize",
    "token",
    "introspect",
    "revoke",
    "userinfo",
    "register",
    "client_configuration",
    "metadata",
];

/// The placeholder for the client id segment in [`Endpoint::segments`].
pub const CLIENT_ID: &str = "{client_id}";

impl Endpoint {
    /// Every endpoint, in the order the gateway's documents list them.
    pub const ALL: [Endpoint; 9] = [
        Endpoint::Authorize,
        Endpoint::Token,
        Endpoint::Introspect,
        Endpoint::Revoke,
        Endpoint::Userinfo,
        Endpoint::Register,
        Endpoint::ClientConfiguration,
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
            Endpoint::OidcDiscovery => &[".well-known", "openid-configuration"],
            Endpoint::AsMetadata => &[".well-known", "oauth-authorization-server"],
        }
    }

    /// The metadata field (RFC 8414 §2) that names the authorization server's URL a call to
    /// this endpoint is forwarded to; `None` for the gateway's own documents.
    pub fn server_field(self) -> Option<&'static str> {
        Some(match self {
            Endpoint::Authorize => "authorization_endpoint",
            Endpoint::Token => "token_endpoint",
            Endpoint::Introspect => "introspection_endpoint",
            Endpoint::Revoke => "revocation_endpoint",
            Endpoint::Userinfo => "userinfo_endpoint",
            Endpoint::Register | Endpoint::ClientConfiguration => "registration_endpoint",
            Endpoint::OidcDiscovery | Endpoint::AsMetadata => return None,
        })
    }

    /// Whether the gateway's metadata documents list this endpoint, under
    /// [`Endpoint::server_field`] (client configuration URLs are handed out by registration).
    pub fn is_published(self) -> bool {
        self.server_field().is_some() && self != Endpoint::ClientConfiguration
    }

    /// Whether this is one of the gateway's own metadata documents.
    pub fn is_metadata(self) -> bool {
        matches!(self, Endpoint::OidcDiscovery | Endpoint::AsMetadata)
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
            Endpoint::OidcDiscovery | Endpoint::AsMetadata => 7,
        }
    }

    /// Whether the call needs its whole request body before it is forwarded: to be routed or
    /// rewritten (the forms), or to be forwarded with its length (registration's JSON).
    pub fn reads_body(self) -> bool {
        self.takes_form() || self == Endpoint::Register
    }

    /// Whether the body must be `application/x-www-form-urlencoded` (RFC 6749 §3.2, RFC 7662
    /// §2.1, RFC 7009 §2.1).
    pub fn takes_form(self) -> bool {
        matches!(
            self,
            Endpoint::Token | Endpoint::Introspect | Endpoint::Revoke
        )
    }

    /// Whether the server's successful answer is rewritten on its way to the client: routing
    /// tags on tokens (with `tagging`), and client ids and `registration_client_uri` from
    /// registration.
    pub fn rewrites_response(self, tagging: bool) -> bool {
        match self {
            Endpoint::Token => tagging,
            Endpoint::Register | Endpoint::ClientConfiguration => true,
            _ => false,
        }
    }
}

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
        assert_eq!(counter(Endpoint::AsMetadata), "metadata");
        assert_eq!(counter(Endpoint::OidcDiscovery), "metadata");
    }

    #[test]
    fn published_endpoints_are_the_six_of_rfc_8414() {
        let published: Vec<_> = Endpoint::ALL
            .iter()
            .filter(|e| e.is_published())
            .filter_map(|e| e.server_field())
            .collect();
        assert_eq!(published, crate::config::ENDPOINTS);
        for e in Endpoint::ALL {
            assert_eq!(e.is_metadata(), e.server_field().is_none(), "{e:?}");
        }
    }
}
