//! Identity forwarding: which request headers carry a verified identity upstream.
//!
//! Values come only from verified claims. A value that could not be a header value (control
//! characters) is left out rather than altered.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::cache::Shared;
use crate::config::Identity;
use crate::policy::claim_at;

/// The headers a verdict adds to its request: the identity rendered for the token (shared
/// with the cache entry it came from, see [`crate::cache::Rendered`]), then any this request adds (the
/// binding's thumbprint, a gateway-signed backend token).
#[derive(Debug, Clone, Default)]
pub struct Headers {
    /// `None` for none (an anonymous route's verdict allocates nothing).
    identity: Option<Shared>,
    added: Vec<(String, String)>,
}

impl Headers {
    /// `identity`, and nothing added yet.
    pub fn new(identity: Shared) -> Headers {
        Headers {
            identity: Some(identity),
            added: Vec::new(),
        }
    }

    /// Adds a header of this request's own after the identity.
    pub fn push(&mut self, name: String, value: String) {
        self.added.push((name, value));
    }

    /// Every header, identity first.
    pub fn iter(&self) -> impl Iterator<Item = &(String, String)> {
        self.identity
            .iter()
            .flat_map(|i| i.iter())
            .chain(&self.added)
    }

    pub fn is_empty(&self) -> bool {
        self.identity.as_ref().is_none_or(|i| i.is_empty()) && self.added.is_empty()
    }

    /// Every header, identity first, as owned pairs.
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter().cloned().collect()
    }
}

/// Equal when they set the same headers in the same order, however they were put together.
impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl From<Vec<(String, String)>> for Headers {
    fn from(identity: Vec<(String, String)>) -> Headers {
        Headers::new(identity.into())
    }
}

/// The headers to set for a request authenticated by `issuer_name` with `claims`.
pub fn headers(
    cfg: &Identity,
    issuer_name: &str,
    claims: &Map<String, Value>,
) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(cfg.headers.len() + 2);
    for (path, header) in &cfg.headers {
        if let Some(value) = claim_at(claims, path).and_then(render) {
            out.push((header.clone(), value));
        }
    }
    if let Some(header) = &cfg.issuer_name_header {
        out.push((header.clone(), issuer_name.to_owned()));
    }
    if let Some(header) = &cfg.payload_header {
        if let Ok(json) = serde_json::to_vec(claims) {
            out.push((header.clone(), URL_SAFE_NO_PAD.encode(json)));
        }
    }
    out
}

/// A claim as a header value: strings as they are, numbers and booleans as JSON, arrays of
/// those space-separated (like `scope`), objects as compact JSON.
fn render(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => return None,
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?
            .join(" "),
        other => other.to_string(),
    };
    text.chars()
        .all(|c| c == '\t' || !c.is_control())
        .then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn an_entry_renders_once_and_its_clones_share_what_it_rendered() {
        use crate::cache::Rendered;
        use std::rc::Rc;
        let rendered = Rendered::default();
        let clone = rendered.clone();
        let calls = std::cell::Cell::new(0);
        let render = || {
            calls.set(calls.get() + 1);
            vec![("x-sub".to_owned(), "alice".to_owned())]
        };
        let first = rendered.get_or_render(render);
        let second = clone.get_or_render(render);
        assert_eq!(calls.get(), 1);
        assert!(Rc::ptr_eq(&first, &second));
        // A new entry (another token, or the same one verified again) renders for itself.
        assert_eq!(Rendered::default().get_or_render(render).len(), 1);
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn headers_list_the_identity_then_what_the_request_added_and_compare_by_that_list() {
        let mut headers = Headers::new(vec![("x-sub".to_owned(), "alice".to_owned())].into());
        headers.push("x-tollgate-cnf".to_owned(), "dpop;jkt=abc".to_owned());
        let all = vec![
            ("x-sub".to_owned(), "alice".to_owned()),
            ("x-tollgate-cnf".to_owned(), "dpop;jkt=abc".to_owned()),
        ];
        assert_eq!(headers.to_vec(), all);
        assert_eq!(headers, Headers::from(all));
        assert!(!headers.is_empty() && Headers::default().is_empty());
    }

    fn cfg() -> Identity {
        Identity {
            headers: vec![
                (vec!["sub".into()], "x-sub".into()),
                (vec!["aud".into()], "x-aud".into()),
                (vec!["org".into(), "id".into()], "x-org".into()),
                (vec!["absent".into()], "x-absent".into()),
            ],
            payload_header: Some("x-claims".into()),
            issuer_name_header: Some("x-issuer".into()),
            binding_header: None,
            authorization: crate::config::ForwardAuthorization::Unchanged,
        }
    }

    #[test]
    fn claims_become_headers() {
        let claims = json!({"sub": "alice", "aud": ["a", "b"], "org": {"id": 7}});
        let h = headers(&cfg(), "as1", claims.as_object().unwrap());
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("x-sub"), Some("alice"));
        assert_eq!(get("x-aud"), Some("a b"));
        assert_eq!(get("x-org"), Some("7"));
        assert_eq!(get("x-absent"), None);
        assert_eq!(get("x-issuer"), Some("as1"));
        let payload = URL_SAFE_NO_PAD.decode(get("x-claims").unwrap()).unwrap();
        let back: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(back, claims);
    }

    #[test]
    fn values_with_control_characters_are_left_out() {
        let claims = json!({"sub": "alice\r\nx-admin: true"});
        let h = headers(&cfg(), "as1", claims.as_object().unwrap());
        assert!(h.iter().all(|(k, _)| k != "x-sub"));
    }
}
