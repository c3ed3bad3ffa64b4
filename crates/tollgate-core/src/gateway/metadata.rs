//! The gateway's own metadata documents (OIDC Discovery / RFC 8414): the authorization
//! server's document with each endpoint the gateway serves replaced by the gateway's URL.
//! `issuer` and `jwks_uri` stay the server's own, so clients still validate its ID tokens.

use serde_json::{Map, Value};
use url::Url;

use super::endpoint::Endpoint;
use crate::config::Issuer;

/// The server's URL for the metadata field `name` (`token_endpoint`, ...,
/// [`Endpoint::server_field`]): configured, else from its metadata document.
pub fn endpoint_url(
    issuer: &Issuer,
    as_doc: Option<&Map<String, Value>>,
    name: &str,
) -> Option<Url> {
    if let Some(url) = issuer.gateway.as_ref().and_then(|g| g.endpoints.get(name)) {
        return Some(url.clone());
    }
    let text = as_doc?.get(name)?.as_str()?;
    crate::http::parse_url(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
}

/// The document for `issuer` behind the gateway, whose endpoints live under `gateway_base`
/// (e.g. `https://api.example.com/oauth2/as1`).
pub fn document(issuer: &Issuer, as_doc: Option<&Map<String, Value>>, gateway_base: &str) -> Value {
    let mut doc = as_doc.cloned().unwrap_or_default();
    doc.insert("issuer".into(), Value::String(issuer.issuer.clone()));
    for endpoint in Endpoint::ALL.into_iter().filter(|e| e.is_published()) {
        let Some(name) = endpoint.server_field() else {
            continue;
        };
        if endpoint_url(issuer, as_doc, name).is_some() {
            let path = endpoint.segments().join("/");
            doc.insert(name.into(), Value::String(format!("{gateway_base}/{path}")));
        } else {
            doc.remove(name);
        }
    }
    Value::Object(doc)
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

    #[test]
    fn endpoints_point_at_the_gateway_and_the_rest_stays() {
        let cfg = config(json!({"endpoints": {"userinfo": "https://as1.example/me"},
                                "metadata": true, "upstream": "as1"}));
        let as_doc = json!({
            "issuer": "https://as1.example",
            "token_endpoint": "https://as1.example/token",
            "jwks_uri": "https://as1.example/jwks",
            "end_session_endpoint": "https://as1.example/logout",
            "code_challenge_methods_supported": ["S256"]
        });
        let doc = document(
            &cfg.issuers[0],
            as_doc.as_object(),
            "https://gw.example/oauth2/as1",
        );
        assert_eq!(doc["issuer"], "https://as1.example");
        assert_eq!(doc["token_endpoint"], "https://gw.example/oauth2/as1/token");
        assert_eq!(
            doc["userinfo_endpoint"],
            "https://gw.example/oauth2/as1/userinfo"
        );
        assert_eq!(doc["jwks_uri"], "https://as1.example/jwks");
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert!(doc.get("registration_endpoint").is_none());
        assert_eq!(
            endpoint_url(&cfg.issuers[0], as_doc.as_object(), "userinfo_endpoint")
                .unwrap()
                .as_str(),
            "https://as1.example/me",
            "configured endpoints win"
        );
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
        let doc = document(
            &cfg.issuers[0],
            as_doc.as_object(),
            "https://gw.example/as1",
        );
        assert_eq!(
            doc["authorization_endpoint"],
            "https://gw.example/as1/authorize"
        );
        let published = Endpoint::ALL.into_iter().filter(|e| e.is_published());
        for name in published.skip(1).filter_map(Endpoint::server_field) {
            assert!(doc.get(name).is_none(), "{name}");
            assert!(endpoint_url(&cfg.issuers[0], as_doc.as_object(), name).is_none());
        }
    }
}
