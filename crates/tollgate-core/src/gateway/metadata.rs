//! The gateway's own metadata documents (OpenID Connect Discovery and RFC 8414), each made
//! from the authorization server's document of the same kind: every endpoint the gateway serves
//! points at the gateway, every other endpoint is dropped (none is passed through unchanged),
//! and the rest stays as the server wrote it. `issuer` and `jwks_uri` stay the server's own, so
//! clients still validate its ID tokens and find its keys.

use serde_json::{Map, Value};
use url::Url;

use crate::config::Issuer;
use crate::endpoint::{DocumentKind, Endpoint, OTHER_SERVER_URL_FIELDS};

/// An issuer's metadata document as fetched, parsed.
pub type Document = Map<String, Value>;

/// An issuer's metadata documents as the gateway holds them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Documents {
    /// By [`DocumentKind::index`]; `None`: the server has none, or it is not fetched yet.
    pub docs: [Option<Document>; 2],
    /// Every document the configuration names has been fetched (stored, or known to be absent)
    /// at least once.
    pub ready: bool,
}

impl Documents {
    /// No documents, and none wanted (an issuer whose endpoints are all configured).
    pub fn none() -> Documents {
        Documents {
            docs: [None, None],
            ready: true,
        }
    }
}

/// The server's URL for the metadata field `name` (`token_endpoint`, ...,
/// [`Endpoint::server_field`]): configured, else from its OpenID Connect document, else from
/// its RFC 8414 one.
pub fn endpoint_url(issuer: &Issuer, docs: &Documents, name: &str) -> Option<Url> {
    if let Some(url) = issuer.gateway.as_ref().and_then(|g| g.endpoints.get(name)) {
        return Some(url.clone());
    }
    docs.docs
        .iter()
        .flatten()
        .find_map(|doc| doc.get(name)?.as_str())
        .and_then(|text| crate::http::parse_url(text).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

/// The gateway's document of `kind` for `issuer`, whose endpoints live under `gateway_base`
/// (e.g. `https://api.example.com/oauth2/as1`); `None` when the server has no document of
/// this kind.
pub fn document(
    issuer: &Issuer,
    kind: DocumentKind,
    docs: &Documents,
    gateway_base: &str,
) -> Option<Value> {
    let mut doc = docs.docs[kind.index()].clone()?;
    let served = |field: &str| {
        Endpoint::for_field(field).is_some() && endpoint_url(issuer, docs, field).is_some()
    };
    // What the server's document names that the gateway does not serve goes.
    doc.retain(|name, _| {
        let names_server =
            name.ends_with("_endpoint") || OTHER_SERVER_URL_FIELDS.contains(&name.as_str());
        !names_server || served(name)
    });
    // Each endpoint the document lists, or the configuration names, points at the gateway.
    for endpoint in Endpoint::ALL.into_iter().filter(|e| e.is_published()) {
        let Some(field) = endpoint.server_field() else {
            continue;
        };
        let configured = issuer
            .gateway
            .as_ref()
            .is_some_and(|g| g.endpoints.contains_key(field));
        if (doc.contains_key(field) || configured) && served(field) {
            let path = endpoint.segments().join("/");
            doc.insert(
                field.into(),
                Value::String(format!("{gateway_base}/{path}")),
            );
        }
    }
    doc.insert("issuer".into(), Value::String(issuer.issuer.clone()));
    Some(Value::Object(doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterConfig;
    use serde_json::json;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// One issuer `as1` behind the gateway, with metadata and the given issuer `gateway` part.
    fn config(issuer_gateway: serde_json::Value) -> FilterConfig {
        FilterConfig::parse(
            json!({
                "issuers": [{"name": "as1", "issuer": "https://as1.example",
                             "jwks": {"uri": "https://as1.example/jwks", "upstream": "as1"},
                             "gateway": issuer_gateway}],
                "gateway": {"base_path": "/oauth2", "public_origins": ["https://gw.example"]}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    fn held(oidc: Option<serde_json::Value>, oauth: Option<serde_json::Value>) -> Documents {
        let doc = |v: Option<serde_json::Value>| v.and_then(|v| v.as_object().cloned());
        Documents {
            docs: [doc(oidc), doc(oauth)],
            ready: true,
        }
    }

    const GW: &str = "https://gw.example/oauth2/as1";

    #[test]
    fn endpoints_point_at_the_gateway_and_the_rest_stays() {
        let cfg = config(json!({"endpoints": {"userinfo": "https://as1.example/me"},
                                "metadata": true, "upstream": "as1"}));
        let as_doc = json!({
            "issuer": "https://as1.example",
            "token_endpoint": "https://as1.example/token",
            "jwks_uri": "https://as1.example/jwks",
            "end_session_endpoint": "https://as1.example/logout",
            "pushed_authorization_request_endpoint": "https://as1.example/par",
            "code_challenge_methods_supported": ["S256"],
            "op_policy_uri": "https://as1.example/policy"
        });
        let docs = held(Some(as_doc), None);
        let issuer = &cfg.issuers[0];
        let doc = document(issuer, DocumentKind::OpenId, &docs, GW).unwrap();
        assert_eq!(doc["issuer"], "https://as1.example");
        assert_eq!(doc["token_endpoint"], format!("{GW}/token"));
        assert_eq!(doc["userinfo_endpoint"], format!("{GW}/userinfo"));
        assert_eq!(doc["end_session_endpoint"], format!("{GW}/end_session"));
        assert_eq!(
            doc["pushed_authorization_request_endpoint"],
            format!("{GW}/par")
        );
        assert_eq!(doc["jwks_uri"], "https://as1.example/jwks");
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            doc["op_policy_uri"], "https://as1.example/policy",
            "a page, not an endpoint"
        );
        assert!(doc.get("registration_endpoint").is_none());
        assert_eq!(
            endpoint_url(issuer, &docs, "userinfo_endpoint")
                .unwrap()
                .as_str(),
            "https://as1.example/me",
            "configured endpoints win"
        );
        // The server has no RFC 8414 document: the gateway has none either.
        assert_eq!(document(issuer, DocumentKind::OAuth, &docs, GW), None);
    }

    /// Endpoints the gateway does not serve, and other places that are the server's, are
    /// dropped: nothing in a gateway document sends a client to the server but `jwks_uri`.
    #[test]
    fn endpoints_the_gateway_does_not_serve_are_dropped() {
        let cfg = config(json!({"metadata": true, "upstream": "as1"}));
        let as_doc = json!({
            "issuer": "https://as1.example",
            "token_endpoint": "https://as1.example/token",
            "jwks_uri": "https://as1.example/jwks",
            "some_future_endpoint": "https://as1.example/future",
            "check_session_iframe": "https://as1.example/session/check",
            "mtls_endpoint_aliases": {"token_endpoint": "https://mtls.as1.example/token"},
            "signed_metadata": "eyJ...",
        });
        let docs = held(None, Some(as_doc));
        let doc = document(&cfg.issuers[0], DocumentKind::OAuth, &docs, GW).unwrap();
        let names: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(names, ["issuer", "jwks_uri", "token_endpoint"]);
        assert_eq!(
            document(&cfg.issuers[0], DocumentKind::OpenId, &docs, GW),
            None
        );
    }

    /// Each document lists what the server's document of its kind lists; endpoints come from
    /// either (django-oauth-toolkit lists introspection only in its RFC 8414 document and
    /// userinfo only in its OpenID one).
    #[test]
    fn each_kind_is_made_from_its_own_document_and_calls_find_either() {
        let cfg = config(json!({"metadata": true, "upstream": "as1"}));
        let oidc = json!({"issuer": "https://as1.example",
                          "userinfo_endpoint": "https://as1.example/o/userinfo/",
                          "subject_types_supported": ["public"]});
        let oauth = json!({"issuer": "https://as1.example",
                           "introspection_endpoint": "https://as1.example/o/introspect/"});
        let docs = held(Some(oidc), Some(oauth));
        let issuer = &cfg.issuers[0];
        let o = document(issuer, DocumentKind::OpenId, &docs, GW).unwrap();
        assert_eq!(o["userinfo_endpoint"], format!("{GW}/userinfo"));
        assert!(o.get("introspection_endpoint").is_none());
        assert_eq!(o["subject_types_supported"], json!(["public"]));
        let a = document(issuer, DocumentKind::OAuth, &docs, GW).unwrap();
        assert_eq!(a["introspection_endpoint"], format!("{GW}/introspect"));
        assert!(a.get("userinfo_endpoint").is_none());
        assert!(a.get("subject_types_supported").is_none());
        for field in ["userinfo_endpoint", "introspection_endpoint"] {
            assert!(endpoint_url(issuer, &docs, field).is_some(), "{field}");
        }
    }

    /// An endpoint URL from the server's document that is not one Tollgate can use (not http(s),
    /// not a URL, or a percent-encoded or non-ASCII host, which would reach a `debug_assert` in
    /// `url`'s ASCII-only IDNA adapter) is left out: the gateway does not serve that endpoint.
    #[test]
    fn endpoints_with_unusable_urls_are_left_out() {
        let cfg = config(json!({"metadata": true, "upstream": "as1"}));
        let as_doc = json!({
            "issuer": "https://as1.example",
            "authorization_endpoint": "https://as1.example/authorize",
            "token_endpoint": "https://login.exampleDD%DD.com/token",
            "introspection_endpoint": "https://AS1.EXAMPLE%DD/introspect",
            "userinfo_endpoint": "https://bÜcher.example/me",
            "revocation_endpoint": "ftp://as1.example/revoke",
            "registration_endpoint": "not a URL",
        });
        let docs = held(Some(as_doc), None);
        let doc = document(
            &cfg.issuers[0],
            DocumentKind::OpenId,
            &docs,
            "https://gw.example/as1",
        )
        .unwrap();
        assert_eq!(
            doc["authorization_endpoint"],
            "https://gw.example/as1/authorize"
        );
        for name in [
            "token_endpoint",
            "introspection_endpoint",
            "userinfo_endpoint",
            "revocation_endpoint",
            "registration_endpoint",
        ] {
            assert!(doc.get(name).is_none(), "{name}");
            assert!(endpoint_url(&cfg.issuers[0], &docs, name).is_none());
        }
    }
}
