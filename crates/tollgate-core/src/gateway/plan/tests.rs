//! The gateway's HTTP behaviour, one plan at a time: what each call is answered with or where it
//! is forwarded, as `tests/e2e/test_gateway.py` sees it through Envoy (statuses, redirects,
//! rewrites, 404s, documents per origin, body limits, evictions on revocation).
//!
//! The deployment mirrors the end-to-end rig: `as1` (oidc-provider style: endpoints from its
//! OIDC document, configured client ids, 43-character opaque tokens) and `as2` (django-oauth-
//! toolkit style: its RFC 8414 document on another port, `dot-` client ids, `dot_` tokens, a
//! configured userinfo endpoint), behind `/oauth2` at `https://gw.example`.

use serde_json::{json, Value};
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::basic_auth;
use crate::outcome::gateway_reply;

const FORM: &str = "application/x-www-form-urlencoded";
const LIMIT: usize = 65536;

/// The rig's configuration; `gateway` is merged into its `gateway` section.
fn config(gateway: Value) -> FilterConfig {
    let mut gw = json!({"base_path": "/oauth2", "public_origins": ["https://gw.example"],
                        "selector_param": "as", "selector_header": "x-oauth-as"});
    for (k, v) in gateway.as_object().cloned().unwrap_or_default() {
        gw[k] = v;
    }
    let text = json!({
        "issuers": [
            {
                "name": "as1", "issuer": "https://as1.example",
                "jwks": {"discovery": true, "upstream": "as1"},
                "introspection": {"discovery": true, "upstream": "as1",
                                  "client_id": "rs-client", "client_secret": "rs-secret"},
                "opaque_tokens": {"pattern": "[A-Za-z0-9_-]{43}"},
                "gateway": {"metadata": true, "upstream": "as1",
                            "client_ids": ["demo-client", "post-client", "rs-client"]}
            },
            {
                "name": "as2", "issuer": "https://as2.example:8443/o",
                "jwks": {"uri": "https://as2.example:8443/o/jwks", "upstream": "as2"},
                "introspection": {"endpoint": "https://as2.example:8443/o/introspect/",
                                  "upstream": "as2", "client_id": "rs:client@2",
                                  "client_secret": "s3cr3t+/=%&"},
                "opaque_tokens": {"prefixes": ["dot_"]},
                "gateway": {"metadata": "https://as2.example:8443/.well-known/oauth-authorization-server/o",
                            "upstream": "as2",
                            "endpoints": {"userinfo": "https://as2.example:8443/o/userinfo/"},
                            "client_id_prefixes": ["dot-"]}
            },
            {
                "name": "nogw", "issuer": "https://other.example",
                "jwks": {"uri": "https://other.example/jwks", "upstream": "other"}
            }
        ],
        "gateway": gw
    });
    FilterConfig::parse(text.to_string().as_bytes()).unwrap()
}

fn rig() -> FilterConfig {
    config(json!({}))
}

fn tagging() -> FilterConfig {
    config(json!({"tagging": true}))
}

/// The servers' own metadata documents: as1 publishes the same one under both names
/// (oidc-provider does), as2's configuration names only its RFC 8414 document.
fn docs(idx: usize) -> Documents {
    let Some(doc) = server_doc(idx) else {
        return Documents::none();
    };
    match idx {
        0 => Documents {
            docs: [Some(doc.clone()), Some(doc)],
            ready: true,
        },
        _ => Documents {
            docs: [None, Some(doc)],
            ready: true,
        },
    }
}

fn server_doc(idx: usize) -> Option<Document> {
    let doc = match idx {
        0 => json!({
            "issuer": "https://as1.example",
            "authorization_endpoint": "https://as1.example/auth",
            "token_endpoint": "https://as1.example/token",
            "introspection_endpoint": "https://as1.example/token/introspection",
            "revocation_endpoint": "https://as1.example/token/revocation",
            "userinfo_endpoint": "https://as1.example/me",
            "registration_endpoint": "https://as1.example/reg",
            "end_session_endpoint": "https://as1.example/session/end",
            "pushed_authorization_request_endpoint": "https://as1.example/request",
            "device_authorization_endpoint": "https://as1.example/device/auth",
            "backchannel_authentication_endpoint": "https://as1.example/backchannel",
            "jwks_uri": "https://as1.example/jwks",
            "code_challenge_methods_supported": ["S256"]
        }),
        1 => json!({
            "issuer": "https://as2.example:8443/o",
            "authorization_endpoint": "https://as2.example:8443/o/authorize/",
            "token_endpoint": "https://as2.example:8443/o/token/",
            "introspection_endpoint": "https://as2.example:8443/o/introspect/",
            "revocation_endpoint": "https://as2.example:8443/o/revoke_token/",
            "registration_endpoint": "https://as2.example:8443/o/register/",
            "jwks_uri": "https://as2.example:8443/o/jwks"
        }),
        _ => return None,
    };
    doc.as_object().cloned()
}

/// No server's metadata is known yet.
fn no_docs(_: usize) -> Documents {
    Documents {
        docs: [None, None],
        ready: false,
    }
}

/// A request as a client sends it to `https://gw.example`.
struct Req {
    method: String,
    path: String,
    authority: String,
    authorization: Option<String>,
    headers: Vec<(String, String)>,
}

fn req(path: &str) -> Req {
    Req {
        method: "GET".to_owned(),
        path: path.to_owned(),
        authority: "gw.example".to_owned(),
        authorization: None,
        headers: Vec::new(),
    }
}

/// A form POST (the content type set; the body is given to [`Req::plan`]).
fn form(path: &str) -> Req {
    req(path).method("POST").header("content-type", FORM)
}

impl Req {
    fn method(mut self, method: &str) -> Req {
        self.method = method.to_owned();
        self
    }

    fn basic(mut self, id: &str, secret: &str) -> Req {
        self.authorization = Some(basic_auth::encode(id, secret));
        self
    }

    fn bearer(mut self, token: &str) -> Req {
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn host(mut self, authority: &str) -> Req {
        self.authority = authority.to_owned();
        self
    }

    fn plan_with(
        &self,
        cfg: &FilterConfig,
        body: Body<'_>,
        metadata: impl Fn(usize) -> Documents,
    ) -> Step {
        let request = Request {
            method: &self.method,
            path: &self.path,
            authority: &self.authority,
            authorization: self.authorization.as_deref(),
            headers: &self.headers,
        };
        plan(cfg, &request, body, metadata)
    }

    /// Planned with the whole body (`None`: the headers ended the stream).
    fn plan(&self, cfg: &FilterConfig, body: Option<&str>) -> Step {
        let body = body.map_or(Body::Absent, |b| Body::Complete(b.as_bytes()));
        self.plan_with(cfg, body, docs)
    }
}

fn forwarded(step: Step) -> Forward {
    match step {
        Step::Forward(f) => *f,
        other => panic!("not forwarded: {other:?}"),
    }
}

fn refused(step: Step) -> GatewayError {
    match step {
        Step::Refuse(e) => e,
        other => panic!("not refused: {other:?}"),
    }
}

/// The local reply of a redirect or a document, and what it was counted as.
fn replied(step: Step) -> (Routed, LocalReply) {
    match step {
        Step::Reply { to, reply } | Step::Redirect { to, reply } => (to, reply),
        other => panic!("not answered by the gateway: {other:?}"),
    }
}

fn header<'r>(r: &'r LocalReply, name: &str) -> Option<&'r str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn json_body(r: &LocalReply) -> Value {
    serde_json::from_str(&r.body).unwrap()
}

/// Where a forwarded call goes: (issuer, authority, path).
fn target(f: &Forward) -> (usize, &str, &str) {
    (f.to.issuer, f.authority.as_str(), f.path.as_str())
}

const CC: &str = "grant_type=client_credentials&scope=read";

#[test]
fn paths_outside_the_base_path_are_api_calls() {
    let cfg = rig();
    for path in [
        "/api/orders",
        "/oauth2",
        "/oauth2?x=1",
        "/oauth2-docs/token",
        "/",
    ] {
        assert_eq!(req(path).plan(&cfg, None), Step::NotMine, "{path}");
    }
    // Without a gateway section, nothing is.
    let text = json!({"issuers": [{"name": "a", "issuer": "https://a.example",
                                   "jwks": {"uri": "https://a.example/jwks", "upstream": "a"}}]});
    let plain = FilterConfig::parse(text.to_string().as_bytes()).unwrap();
    assert_eq!(req("/oauth2/token").plan(&plain, None), Step::NotMine);
}

#[test]
fn unknown_endpoints_under_the_base_path_are_404() {
    let cfg = rig();
    for path in [
        "/oauth2/",
        "/oauth2/nope",
        "/oauth2/token/extra",
        "/oauth2/as1/token/x",
        "/oauth2/register/",
        "/oauth2/as1/.well-known/jwks.json",
    ] {
        assert_eq!(
            refused(req(path).plan(&cfg, None)),
            GatewayError::NoSuchEndpoint,
            "{path}"
        );
    }
    let r = gateway_reply(GatewayError::NoSuchEndpoint);
    assert_eq!(r.status, 404);
    assert_eq!(json_body(&r)["error"], "invalid_request");
    assert_eq!(header(&r, "cache-control"), Some("no-store"));
}

#[test]
fn authorize_redirects_to_the_servers_endpoint_with_the_query_as_sent() {
    let cfg = rig();
    // Mixed encodings on purpose: '+' and %20, escaped reserved characters, UTF-8.
    let query = "response_type=code&client_id=demo-client&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb\
                 &scope=openid+read&state=a%20%2F%2B%25%26%3D%3F%C3%A9&nonce=n-1%2B%2F%3D\
                 &code_challenge=abc-_~&code_challenge_method=S256";
    let (to, reply) = replied(req(&format!("/oauth2/authorize?{query}")).plan(&cfg, None));
    assert_eq!(
        to,
        Routed {
            issuer: 0,
            endpoint: Endpoint::Authorize
        }
    );
    assert_eq!(reply.status, 302);
    assert_eq!(
        header(&reply, "location"),
        Some(format!("https://as1.example/auth?{query}").as_str())
    );
    assert_eq!(header(&reply, "cache-control"), Some("no-store"));
    assert_eq!(reply.body, "");

    // By the path, and by Tollgate's own parameter (which comes off, wherever it is).
    let (to, reply) = replied(req(&format!("/oauth2/as1/authorize?{query}")).plan(&cfg, None));
    assert_eq!(to.issuer, 0);
    assert_eq!(
        header(&reply, "location"),
        Some(format!("https://as1.example/auth?{query}").as_str())
    );
    let sent = "response_type=code&client_id=someone&as=as2&state=x%20y";
    let (to, reply) = replied(req(&format!("/oauth2/authorize?{sent}")).plan(&cfg, None));
    assert_eq!(to.issuer, 1);
    assert_eq!(
        header(&reply, "location"),
        Some("https://as2.example:8443/o/authorize/?response_type=code&client_id=someone&state=x%20y")
    );
}

#[test]
fn token_calls_go_to_the_server_the_client_belongs_to() {
    let cfg = rig();
    // client_secret_basic, as1 by its configured client ids.
    let f = forwarded(
        form("/oauth2/token")
            .basic("demo-client", "demo-secret")
            .plan(&cfg, Some(CC)),
    );
    assert_eq!(target(&f), (0, "as1.example", "/token"));
    assert_eq!(f.to.endpoint, Endpoint::Token);
    assert_eq!(
        f.route_header,
        ("x-tollgate-as".to_owned(), "as1".to_owned())
    );
    assert_eq!(f.authorization, None, "credentials go as they came");
    assert_eq!(
        f.body,
        Some(ForwardBody {
            replacement: None,
            content_length: CC.len()
        })
    );
    assert_eq!(f.response.evictions, Vec::<CacheKey>::new(), "no eviction");
    assert_eq!(f.response.rewrite, None, "no tagging");
    assert!(
        f.response.grant.is_some(),
        "read for its grant (as1 introspects)"
    );
    assert_eq!(
        f.headers().collect::<Vec<_>>(),
        vec![
            (":authority", "as1.example"),
            (":path", "/token"),
            ("x-tollgate-as", "as1"),
        ]
    );
    // client_secret_post, as2 by its client id prefix; the server's port stays.
    let body = format!("{CC}&client_id=dot-client&client_secret=dot-secret");
    let f = forwarded(form("/oauth2/token").plan(&cfg, Some(&body)));
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/token/"));
    assert_eq!(
        f.route_header,
        ("x-tollgate-as".to_owned(), "as2".to_owned())
    );
}

#[test]
fn selectors_route_a_client_the_configuration_does_not_know() {
    let cfg = rig();
    let client = || form("/oauth2/token").basic("rs:client@2", "s3cr3t+/=%&");
    let e = refused(client().plan(&cfg, Some(CC)));
    assert_eq!(e, GatewayError::UnknownClient);
    let r = gateway_reply(e);
    assert_eq!(r.status, 401);
    assert_eq!(
        header(&r, "www-authenticate"),
        Some("Basic realm=\"oauth\"")
    );

    let f = forwarded(client().header("x-oauth-as", "as2").plan(&cfg, Some(CC)));
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/token/"));
    assert_eq!(
        f.authorization, None,
        "the Basic header reaches the server unchanged"
    );

    // The form's selector pair comes off the body, which then has a new length.
    let f = forwarded(client().plan(&cfg, Some(&format!("{CC}&as=as1"))));
    assert_eq!(target(&f), (0, "as1.example", "/token"));
    assert_eq!(
        f.body,
        Some(ForwardBody {
            replacement: Some(CC.to_owned()),
            content_length: CC.len()
        })
    );
    // And the query's.
    let mut q = client();
    q.path = "/oauth2/token?as=as2".to_owned();
    let f = forwarded(q.plan(&cfg, Some(CC)));
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/token/"));
    let mut q = client();
    q.path = "/oauth2/as1/token".to_owned();
    assert_eq!(target(&forwarded(q.plan(&cfg, Some(CC)))).0, 0);
}

#[test]
fn unknown_selectors_are_invalid_request_wherever_they_are() {
    let cfg = rig();
    let demo = |path: &str| form(path).basic("demo-client", "demo-secret");
    let cases = [
        demo("/oauth2/as9/token").plan(&cfg, Some(CC)),
        demo("/oauth2/as9/introspect").plan(&cfg, Some("token=x")),
        demo("/oauth2/token?as=as9").plan(&cfg, Some(CC)),
        demo("/oauth2/token").plan(&cfg, Some(&format!("{CC}&as=as9"))),
        demo("/oauth2/token")
            .header("x-oauth-as", "as9")
            .plan(&cfg, Some(CC)),
        demo("/oauth2/nogw/token").plan(&cfg, Some(CC)),
        req("/oauth2/authorize?client_id=demo-client&as=as9").plan(&cfg, None),
        req("/oauth2/as9/authorize?client_id=demo-client").plan(&cfg, None),
        req("/oauth2/as9/.well-known/openid-configuration").plan(&cfg, None),
    ];
    for step in cases {
        assert_eq!(refused(step), GatewayError::UnknownSelector);
    }
    let r = gateway_reply(GatewayError::UnknownSelector);
    assert_eq!(r.status, 400);
    assert_eq!(
        json_body(&r),
        json!({"error": "invalid_request",
               "error_description": "the request names an authorization server that is not configured"})
    );
}

#[test]
fn unknown_clients_are_invalid_client() {
    let cfg = rig();
    let cases = [
        form("/oauth2/token")
            .basic("nobody", "x")
            .plan(&cfg, Some(CC)),
        form("/oauth2/token").plan(
            &cfg,
            Some(&format!("{CC}&client_id=nobody&client_secret=x")),
        ),
        req("/oauth2/authorize?client_id=nobody&response_type=code").plan(&cfg, None),
        // A token no rule recognises does not route an unknown client either.
        form("/oauth2/introspect")
            .basic("nobody", "x")
            .plan(&cfg, Some("token=not-a-known-token")),
    ];
    for step in cases {
        assert_eq!(refused(step), GatewayError::UnknownClient);
    }
    // Nothing names a client or a server.
    assert_eq!(
        refused(form("/oauth2/token").plan(&cfg, Some(CC))),
        GatewayError::NoRoute
    );
}

#[test]
fn a_call_that_is_routed_by_its_body_waits_for_all_of_it() {
    let cfg = rig();
    let token = form("/oauth2/token").basic("demo-client", "demo-secret");
    for size in [0, 1, LIMIT] {
        assert_eq!(
            token.plan_with(&cfg, Body::Partial(size), docs),
            Step::NeedBody
        );
    }
    for path in [
        "/oauth2/introspect",
        "/oauth2/revoke",
        "/oauth2/as1/register",
    ] {
        assert_eq!(
            form(path).plan_with(&cfg, Body::Partial(0), docs),
            Step::NeedBody,
            "{path}"
        );
    }
    // A call without a body is routed by its headers, and its length is not touched.
    let f = forwarded(token.plan(&cfg, None));
    assert_eq!(target(&f), (0, "as1.example", "/token"));
    assert_eq!(f.body, None);

    // Endpoints that do not read the body are routed at once; their body streams through.
    let f = forwarded(req("/oauth2/as1/userinfo").bearer("x").plan_with(
        &cfg,
        Body::Partial(0),
        docs,
    ));
    assert_eq!(target(&f), (0, "as1.example", "/me"));
    assert_eq!(f.body, None);
}

#[test]
fn a_body_over_the_limit_is_413_and_one_at_the_limit_goes_on() {
    let cfg = rig();
    let token = form("/oauth2/token").basic("demo-client", "demo-secret");
    assert_eq!(
        refused(token.plan_with(&cfg, Body::Partial(LIMIT + 1), docs)),
        GatewayError::BodyTooLarge
    );
    let pad = |n: usize| format!("{CC}&pad={}", "x".repeat(n - CC.len() - 5));
    let over = pad(LIMIT + 1);
    assert_eq!(over.len(), LIMIT + 1);
    assert_eq!(
        refused(token.plan(&cfg, Some(&over))),
        GatewayError::BodyTooLarge
    );
    let at = pad(LIMIT);
    let f = forwarded(token.plan(&cfg, Some(&at)));
    assert_eq!(f.body.map(|b| b.content_length), Some(LIMIT));
    // Registration's JSON too.
    let register = req("/oauth2/as1/register").header("content-type", "application/json");
    assert_eq!(
        refused(register.plan_with(&cfg, Body::Partial(LIMIT + 1), docs)),
        GatewayError::BodyTooLarge
    );
    let r = gateway_reply(GatewayError::BodyTooLarge);
    assert_eq!(r.status, 413);
    assert_eq!(
        json_body(&r),
        json!({"error": "invalid_request", "error_description": "the request body is too large"})
    );
    // The limit is the configured one.
    let small = config(json!({"max_body_bytes": 64}));
    assert_eq!(
        refused(token.plan_with(&small, Body::Partial(65), docs)),
        GatewayError::BodyTooLarge
    );
}

#[test]
fn forms_must_be_forms_and_well_formed() {
    let cfg = rig();
    let token = || form("/oauth2/token").basic("demo-client", "demo-secret");
    for body in [
        "grant_type=client_credentials&scope=read&scope=write",
        "grant_type=client_credentials&client_id=demo-client&client_id=demo-client",
        "grant_type=client_credentials&scope=%FF",
        "grant_type=client_credentials&scope=%E2%82",
    ] {
        assert_eq!(
            refused(token().plan(&cfg, Some(body))),
            GatewayError::MalformedForm,
            "{body}"
        );
    }
    let r = gateway_reply(GatewayError::MalformedForm);
    assert_eq!(
        (r.status, header(&r, "cache-control")),
        (400, Some("no-store"))
    );

    let json_token = req("/oauth2/token")
        .basic("demo-client", "demo-secret")
        .header("content-type", "application/json");
    assert_eq!(
        refused(json_token.plan(&cfg, Some("{}"))),
        GatewayError::NotAForm
    );
    let untyped = req("/oauth2/revoke").basic("demo-client", "demo-secret");
    assert_eq!(
        refused(untyped.plan(&cfg, Some("token=x"))),
        GatewayError::NotAForm
    );
    let spelled = req("/oauth2/token")
        .basic("demo-client", "demo-secret")
        .header(
            "content-type",
            " Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        );
    assert_eq!(target(&forwarded(spelled.plan(&cfg, Some(CC)))).0, 0);
    // Registration takes JSON, forwarded as it came with its length.
    let json = r#"{"client_name":"x","grant_types":["client_credentials"]}"#;
    let f = forwarded(
        req("/oauth2/as2/register")
            .header("content-type", "application/json")
            .plan(&cfg, Some(json)),
    );
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/register/"));
    assert_eq!(
        f.body,
        Some(ForwardBody {
            replacement: None,
            content_length: json.len()
        })
    );
}

#[test]
fn metadata_documents_are_the_servers_with_the_gateways_endpoints() {
    let cfg = rig();
    let (to, reply) = replied(req("/oauth2/as1/.well-known/openid-configuration").plan(&cfg, None));
    assert_eq!(
        to,
        Routed {
            issuer: 0,
            endpoint: Endpoint::OidcDiscovery
        }
    );
    assert_eq!(reply.status, 200);
    assert_eq!(header(&reply, "content-type"), Some("application/json"));
    let doc = json_body(&reply);
    let theirs = Value::Object(server_doc(0).unwrap());
    for (field, path) in [
        ("authorization_endpoint", "authorize"),
        ("token_endpoint", "token"),
        ("introspection_endpoint", "introspect"),
        ("revocation_endpoint", "revoke"),
        ("userinfo_endpoint", "userinfo"),
        ("registration_endpoint", "register"),
        ("end_session_endpoint", "end_session"),
    ] {
        assert_eq!(doc[field], format!("https://gw.example/oauth2/as1/{path}"));
    }
    // The issuer, its keys and everything else stay the server's.
    for field in ["issuer", "jwks_uri", "code_challenge_methods_supported"] {
        assert_eq!(doc[field], theirs[field], "{field}");
    }
    assert_eq!(
        doc.as_object().unwrap().len(),
        theirs.as_object().unwrap().len()
    );

    // as2's RFC 8414 document: the configured userinfo endpoint is listed too.
    let (to, reply) =
        replied(req("/oauth2/as2/.well-known/oauth-authorization-server").plan(&cfg, None));
    assert_eq!(
        to,
        Routed {
            issuer: 1,
            endpoint: Endpoint::AsMetadata
        }
    );
    let doc = json_body(&reply);
    assert_eq!(doc["issuer"], "https://as2.example:8443/o");
    assert_eq!(
        doc["userinfo_endpoint"],
        "https://gw.example/oauth2/as2/userinfo"
    );
    assert_eq!(doc["jwks_uri"], "https://as2.example:8443/o/jwks");
}

#[test]
fn documents_name_only_configured_origins_whatever_the_request_says() {
    let cfg = config(json!({"public_origins": ["https://gw.example", "http://127.0.0.1:10000"]}));
    let path = "/oauth2/as1/.well-known/openid-configuration";
    for host in [
        "evil.example",
        "evil.example:80",
        "gw.example:8443",
        "127.0.0.1",
    ] {
        assert_eq!(
            refused(req(path).host(host).plan(&cfg, None)),
            GatewayError::UnknownHost,
            "{host}"
        );
    }
    let r = gateway_reply(GatewayError::UnknownHost);
    assert_eq!(
        (r.status, json_body(&r)["error"].as_str()),
        (404, Some("invalid_request"))
    );
    // The origin the request reached, in any spelling of its host; forwarded headers are
    // never read.
    let spoofing = req(path)
        .host("GW.example.:443")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "http")
        .header("forwarded", "host=evil.example;proto=http");
    let (_, reply) = replied(spoofing.plan(&cfg, None));
    assert_eq!(
        json_body(&reply)["token_endpoint"],
        "https://gw.example/oauth2/as1/token"
    );
    assert!(!reply.body.contains("evil"));
    let (_, reply) = replied(req(path).host("127.0.0.1:10000").plan(&cfg, None));
    assert_eq!(
        json_body(&reply)["token_endpoint"],
        "http://127.0.0.1:10000/oauth2/as1/token"
    );
}

#[test]
fn top_level_documents_and_unrouted_calls_need_a_default_issuer() {
    let cfg = rig();
    let e = refused(req("/oauth2/.well-known/openid-configuration").plan(&cfg, None));
    assert_eq!(e, GatewayError::NoDefaultIssuer);
    assert_eq!(gateway_reply(e).status, 404);

    let cfg = config(json!({"default_issuer": "as2"}));
    let (to, reply) =
        replied(req("/oauth2/.well-known/oauth-authorization-server").plan(&cfg, None));
    assert_eq!(to.issuer, 1);
    let doc = json_body(&reply);
    assert_eq!(doc["issuer"], "https://as2.example:8443/o");
    assert_eq!(doc["token_endpoint"], "https://gw.example/oauth2/token");
    // A client the configuration does not know goes to the default issuer.
    let f = forwarded(
        form("/oauth2/token")
            .basic("someone", "x")
            .plan(&cfg, Some(CC)),
    );
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/token/"));
}

#[test]
fn nothing_that_needs_the_servers_document_is_served_before_it_is_known() {
    let cfg = rig();
    let doc = req("/oauth2/as1/.well-known/openid-configuration");
    let e = refused(doc.plan_with(&cfg, Body::Absent, no_docs));
    assert_eq!(e, GatewayError::NotReady);
    let r = gateway_reply(e);
    assert_eq!(r.status, 503);
    assert_eq!(header(&r, "retry-after"), Some("1"));
    assert_eq!(json_body(&r)["error"], "temporarily_unavailable");
    let token = form("/oauth2/token").basic("demo-client", "demo-secret");
    assert_eq!(
        refused(token.plan_with(&cfg, Body::Complete(CC.as_bytes()), no_docs)),
        GatewayError::NotReady
    );
    // A configured endpoint does not wait for the document.
    let userinfo = req("/oauth2/as2/userinfo").bearer("dot_x");
    let f = forwarded(userinfo.plan_with(&cfg, Body::Absent, no_docs));
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/userinfo/"));
}

#[test]
fn an_endpoint_the_server_does_not_offer_is_404() {
    let cfg = rig();
    let without_userinfo = |idx: usize| {
        let mut held = docs(idx);
        for d in held.docs.iter_mut().flatten() {
            d.remove("userinfo_endpoint");
        }
        held
    };
    let e = refused(req("/oauth2/as1/userinfo").plan_with(&cfg, Body::Absent, without_userinfo));
    assert_eq!(e, GatewayError::NoEndpoint);
    assert_eq!(gateway_reply(e).status, 404);
    // Left out of the document too.
    let (_, reply) = replied(
        req("/oauth2/as1/.well-known/openid-configuration").plan_with(
            &cfg,
            Body::Absent,
            without_userinfo,
        ),
    );
    assert!(json_body(&reply).get("userinfo_endpoint").is_none());
}

#[test]
fn registration_answers_point_management_at_the_configured_origin() {
    let cfg = config(json!({"public_origins": ["https://gw.example", "https://alt.example"]}));
    let json = r#"{"client_name":"x"}"#;
    let register = |host: &str| {
        forwarded(
            req("/oauth2/as2/register")
                .host(host)
                .header("content-type", "application/json")
                .plan(&cfg, Some(json)),
        )
    };
    let answer = br#"{"client_id":"abc","client_secret":"s","registration_access_token":"t",
                      "registration_client_uri":"https://as2.example:8443/o/register/abc/"}"#;
    for (host, origin) in [
        ("evil.example", "https://gw.example"),
        ("alt.example", "https://alt.example"),
    ] {
        let f = register(host);
        assert_eq!(f.to.endpoint, Endpoint::Register);
        assert_eq!(f.response.to_evict(Some("200")), &[] as &[CacheKey]);
        let rewrite = f.response.rewrite_for(Some("201")).unwrap();
        let out: Value = serde_json::from_slice(&rewrite.apply(answer).unwrap()).unwrap();
        assert_eq!(
            out["registration_client_uri"],
            format!("{origin}/oauth2/as2/register/abc")
        );
        assert_eq!(out["client_id"], "abc", "no tagging here");
        assert_eq!(f.response.rewrite_for(Some("200")), Some(rewrite));
        assert_eq!(f.response.rewrite_for(Some("400")), None);
        assert_eq!(f.response.rewrite_for(None), None);
    }
}

#[test]
fn client_configuration_goes_to_the_registration_endpoint_with_the_id() {
    let cfg = rig();
    let read = |path: &str| req(path).bearer("registration-token").plan(&cfg, None);
    let f = forwarded(read("/oauth2/as1/register/abc%2F1"));
    assert_eq!(target(&f), (0, "as1.example", "/reg/abc%2F1"));
    assert_eq!(f.to.endpoint, Endpoint::ClientConfiguration);
    assert!(f.response.rewrite.is_some(), "registration_client_uri");
    let f = forwarded(read("/oauth2/as2/register/abc"));
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/register/abc/"));
    for path in [
        "/oauth2/as1/register/%2e%2e",
        "/oauth2/as1/register/.",
        "/oauth2/as1/register/%ff",
    ] {
        assert_eq!(refused(read(path)), GatewayError::BadClientId, "{path}");
    }
    assert_eq!(gateway_reply(GatewayError::BadClientId).status, 400);
}

#[test]
fn a_revocation_evicts_the_token_only_once_the_server_confirms_it() {
    let cfg = rig();
    let f = forwarded(
        form("/oauth2/revoke")
            .basic("dot-opaque", "dot-opaque-secret")
            .plan(&cfg, Some("token=dot_abc&token_type_hint=access_token")),
    );
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/revoke_token/"));
    let key = cache::key_for(&cfg.fingerprint, "dot_abc");
    assert_eq!(f.response.evictions, vec![key]);
    assert_eq!(f.response.to_evict(Some("200")), &[key]);
    // A refused or failed revocation (wrong client, a JWT the server cannot revoke) changes
    // nothing.
    for status in [Some("400"), Some("401"), Some("503"), Some("201"), None] {
        assert!(f.response.to_evict(status).is_empty(), "{status:?}");
    }
    // Only revocations evict.
    let f = forwarded(
        form("/oauth2/introspect")
            .basic("dot-opaque", "dot-opaque-secret")
            .plan(&cfg, Some("token=dot_abc")),
    );
    assert!(f.response.to_evict(Some("200")).is_empty());

    // With tagging, the token as clients present it and as the server minted it.
    let cfg = tagging();
    let f = forwarded(
        form("/oauth2/revoke")
            .basic("as2.newclient", "s")
            .plan(&cfg, Some("token=as2.dot_abc")),
    );
    assert_eq!(target(&f).0, 1);
    assert_eq!(
        f.response.evictions,
        vec![
            cache::key_for(&cfg.fingerprint, "as2.dot_abc"),
            cache::key_for(&cfg.fingerprint, "dot_abc")
        ]
    );
    assert_eq!(
        f.body,
        Some(ForwardBody {
            replacement: Some("token=dot_abc".to_owned()),
            content_length: "token=dot_abc".len()
        })
    );
    assert_eq!(f.authorization, Some(basic_auth::encode("newclient", "s")));
}

#[test]
fn token_carrying_calls_route_by_the_token() {
    let cfg = rig();
    // Introspection by a resource server no issuer claims: the token's `dot_` prefix.
    let f = forwarded(
        form("/oauth2/introspect")
            .basic("rs:client@2", "s3cr3t+/=%&")
            .plan(&cfg, Some("token=dot_xyz")),
    );
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/introspect/"));
    assert_eq!(f.authorization, None);
    // Userinfo: an opaque token by as1's rule, a JWT by its `iss`.
    let opaque = "A".repeat(43);
    let f = forwarded(req("/oauth2/userinfo").bearer(&opaque).plan(&cfg, None));
    assert_eq!(target(&f), (0, "as1.example", "/me"));
    let jwt = crate::testdata::compact(
        r#"{"alg":"RS256"}"#,
        r#"{"iss":"https://as2.example:8443/o"}"#,
        b"sig",
    );
    let f = forwarded(req("/oauth2/userinfo").bearer(&jwt).plan(&cfg, None));
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/userinfo/"));
    assert_eq!(f.authorization, None);
}

#[test]
fn tagging_tags_answers_and_takes_tags_off_requests() {
    let cfg = tagging();
    // A tagged client routes by its tag and reaches the server as the server knows it.
    let body = "grant_type=client_credentials&client_id=as2.newclient&client_secret=x";
    let f = forwarded(form("/oauth2/token").plan(&cfg, Some(body)));
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/token/"));
    let untagged = "grant_type=client_credentials&client_id=newclient&client_secret=x";
    assert_eq!(
        f.body,
        Some(ForwardBody {
            replacement: Some(untagged.to_owned()),
            content_length: untagged.len()
        })
    );
    // Its opaque tokens come back tagged; JWTs never are.
    let rewrite = f.response.rewrite_for(Some("200")).unwrap();
    let out: Value = serde_json::from_slice(
        &rewrite
            .apply(br#"{"access_token":"dot_abc","refresh_token":"dot_r","token_type":"Bearer"}"#)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out["access_token"], "as2.dot_abc");
    assert_eq!(out["refresh_token"], "as2.dot_r");
    let jwt = crate::testdata::compact(r#"{"alg":"RS256"}"#, r#"{"iss":"x"}"#, b"sig");
    assert_eq!(
        rewrite.apply(json!({"access_token": jwt}).to_string().as_bytes()),
        None
    );
    // A tagged refresh token goes back without its tag.
    let f = forwarded(
        form("/oauth2/token")
            .basic("demo-client", "demo-secret")
            .plan(&cfg, Some("grant_type=refresh_token&refresh_token=as1.r1")),
    );
    assert_eq!(target(&f).0, 0);
    assert_eq!(
        f.body.and_then(|b| b.replacement).as_deref(),
        Some("grant_type=refresh_token&refresh_token=r1")
    );
    // Userinfo with a tagged opaque token: routed by the tag, sent as the server minted it.
    let tagged = format!("as1.{}", "B".repeat(43));
    let f = forwarded(req("/oauth2/userinfo").bearer(&tagged).plan(&cfg, None));
    assert_eq!(target(&f), (0, "as1.example", "/me"));
    let bare = format!("Bearer {}", "B".repeat(43));
    assert_eq!(f.authorization.as_deref(), Some(bare.as_str()));
    assert_eq!(f.headers().last(), Some(("authorization", bare.as_str())));
    // Registration answers keep the server's client id (the `aud` of its ID tokens); without
    // tagging, token answers are not touched.
    let f = forwarded(
        req("/oauth2/as1/register")
            .method("POST")
            .header("content-type", "application/json")
            .plan(&cfg, Some("{}")),
    );
    let rewrite = f.response.rewrite_for(Some("201")).unwrap();
    assert_eq!(rewrite.apply(br#"{"client_id":"c1"}"#), None);
    let f = forwarded(
        form("/oauth2/token")
            .basic("demo-client", "demo-secret")
            .plan(&rig(), Some(CC)),
    );
    assert_eq!(f.response.rewrite_for(Some("200")), None);
}

#[test]
fn the_route_header_is_the_configured_one() {
    let cfg = config(json!({"route_header": "x-route-to"}));
    let f = forwarded(
        form("/oauth2/token")
            .basic("demo-client", "demo-secret")
            .plan(&cfg, Some(CC)),
    );
    assert_eq!(f.route_header, ("x-route-to".to_owned(), "as1".to_owned()));
    assert!(f.headers().any(|h| h == ("x-route-to", "as1")));
}

/// The endpoints a client library reaches besides token and authorize: the form POSTs are read
/// whole and routed like token calls, to the URL the server's document names.
#[test]
fn par_device_and_ciba_are_forwarded_like_token_calls() {
    let cfg = rig();
    for (path, server_path) in [
        ("/oauth2/par", "/request"),
        ("/oauth2/device_authorization", "/device/auth"),
        ("/oauth2/backchannel_authentication", "/backchannel"),
    ] {
        let call = form(path).basic("demo-client", "demo-secret");
        assert_eq!(call.plan_with(&cfg, Body::Partial(3), docs), Step::NeedBody);
        let f = forwarded(call.plan(&cfg, Some("scope=openid&login_hint=alice")));
        assert_eq!(target(&f), (0, "as1.example", server_path), "{path}");
        assert_eq!(f.body.as_ref().unwrap().content_length, 29);
        // as2 publishes none of them: 404, and nothing is forwarded.
        let to_as2 = form(path).basic("dot-client", "dot-secret");
        assert_eq!(
            refused(to_as2.plan(&cfg, Some("scope=read"))),
            GatewayError::NoEndpoint
        );
    }
    // A body that is not a form is refused before any server sees it.
    let json = req("/oauth2/par")
        .method("POST")
        .basic("demo-client", "demo-secret")
        .header("content-type", "application/json");
    assert_eq!(refused(json.plan(&cfg, Some("{}"))), GatewayError::NotAForm);
}

/// RP-initiated logout is the browser's: redirected with every parameter as sent, routed by
/// the path, `client_id` or the `iss` of `id_token_hint`. A logout form POST gets a 307, so
/// the browser posts the same form to the server.
#[test]
fn logout_redirects_the_browser_to_the_server() {
    let cfg = rig();
    let hint = crate::testdata::compact(
        r#"{"alg":"RS256"}"#,
        r#"{"iss":"https://as1.example","aud":"demo-client"}"#,
        b"sig",
    );
    let query =
        format!("id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Frp%2Fbye&state=s1");
    let (to, reply) = replied(req(&format!("/oauth2/end_session?{query}")).plan(&cfg, None));
    assert_eq!(
        to,
        Routed {
            issuer: 0,
            endpoint: Endpoint::EndSession
        }
    );
    assert_eq!(reply.status, 302);
    assert_eq!(
        header(&reply, "location").unwrap(),
        format!("https://as1.example/session/end?{query}")
    );
    assert_eq!(header(&reply, "cache-control"), Some("no-store"));
    // The form POST: read whole to route it, then the browser is told to post it again.
    let post = form("/oauth2/end_session");
    assert_eq!(
        post.plan_with(&cfg, Body::Partial(10), docs),
        Step::NeedBody
    );
    let (to, reply) = replied(post.plan(&cfg, Some("client_id=demo-client&state=s2")));
    assert_eq!(to.issuer, 0);
    assert_eq!(reply.status, 307);
    assert_eq!(
        header(&reply, "location"),
        Some("https://as1.example/session/end")
    );
    // With the issuer in the path, a GET needs nothing else; as2 offers no logout here.
    let (_, reply) = replied(req("/oauth2/as1/end_session").plan(&cfg, None));
    assert_eq!(
        header(&reply, "location"),
        Some("https://as1.example/session/end")
    );
    assert_eq!(
        refused(req("/oauth2/as2/end_session").plan(&cfg, None)),
        GatewayError::NoEndpoint
    );
}

/// RFC 7592: read (GET), update (PUT, JSON read whole and forwarded with its length) and
/// delete (DELETE) of a registered client go to the server's client configuration URL.
#[test]
fn client_management_reads_updates_and_deletes_through_the_gateway() {
    let cfg = rig();
    let path = "/oauth2/as2/register/dot-abc";
    for method in ["GET", "DELETE"] {
        let f = forwarded(req(path).method(method).bearer("rat").plan(&cfg, None));
        assert_eq!(target(&f), (1, "as2.example:8443", "/o/register/dot-abc/"));
        assert_eq!(f.body, None, "{method}: nothing to read");
    }
    let put = req(path)
        .method("PUT")
        .bearer("rat")
        .header("content-type", "application/json");
    assert_eq!(put.plan_with(&cfg, Body::Partial(5), docs), Step::NeedBody);
    let body = r#"{"client_id":"dot-abc","redirect_uris":["https://rp/cb"]}"#;
    let f = forwarded(put.plan(&cfg, Some(body)));
    assert_eq!(target(&f), (1, "as2.example:8443", "/o/register/dot-abc/"));
    assert_eq!(
        f.body,
        Some(ForwardBody {
            replacement: None,
            content_length: body.len()
        })
    );
    // The answer's registration_client_uri points at the gateway again.
    let answer = br#"{"client_id":"dot-abc","registration_client_uri":"https://as2.example:8443/o/register/dot-abc/"}"#;
    let out: Value = serde_json::from_slice(
        &f.response
            .rewrite_for(Some("200"))
            .unwrap()
            .apply(answer)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        out["registration_client_uri"],
        "https://gw.example/oauth2/as2/register/dot-abc"
    );
}

/// Each document is the server's own of that kind; a kind the server lacks is 404, never the
/// other kind under the wrong name; RFC 8414 §3.1's path-inserted form serves the same.
#[test]
fn each_well_known_name_serves_its_own_kind() {
    let cfg = rig();
    // as2's configuration names only its RFC 8414 document.
    let e = refused(req("/oauth2/as2/.well-known/openid-configuration").plan(&cfg, None));
    assert_eq!(e, GatewayError::NoDocument);
    let r = gateway_reply(e);
    assert_eq!(
        (r.status, json_body(&r)["error"].as_str()),
        (404, Some("invalid_request"))
    );
    let (_, nested) =
        replied(req("/oauth2/as2/.well-known/oauth-authorization-server").plan(&cfg, None));
    let (to, inserted) =
        replied(req("/.well-known/oauth-authorization-server/oauth2/as2").plan(&cfg, None));
    assert_eq!(
        to,
        Routed {
            issuer: 1,
            endpoint: Endpoint::AsMetadata
        }
    );
    assert_eq!(inserted, nested);
    // The base itself names the default issuer; anything longer is not the gateway's.
    assert_eq!(
        refused(req("/.well-known/oauth-authorization-server/oauth2").plan(&cfg, None)),
        GatewayError::NoDefaultIssuer
    );
    let cfg2 = config(json!({"default_issuer": "as1"}));
    let (to, _) = replied(req("/.well-known/oauth-authorization-server/oauth2").plan(&cfg2, None));
    assert_eq!(to.issuer, 0);
    for path in [
        "/.well-known/oauth-authorization-server/oauth2/as1/token",
        "/.well-known/oauth-authorization-server/oauth2x/as1",
        "/.well-known/oauth-authorization-server/other",
        "/.well-known/openid-configuration/oauth2/as1",
    ] {
        assert_eq!(req(path).plan(&cfg, None), Step::NotMine, "{path}");
    }
    assert_eq!(
        refused(req("/.well-known/oauth-authorization-server/oauth2/as9").plan(&cfg, None)),
        GatewayError::UnknownSelector
    );
    // An issuer without a gateway part is no selector either.
    assert_eq!(
        refused(req("/.well-known/oauth-authorization-server/oauth2/nogw").plan(&cfg, None)),
        GatewayError::UnknownSelector
    );
    // Not known yet: 503, whichever kind.
    for path in [
        "/oauth2/as1/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server/oauth2/as1",
    ] {
        assert_eq!(
            refused(req(path).plan_with(&cfg, Body::Absent, no_docs)),
            GatewayError::NotReady,
            "{path}"
        );
    }
    // A server known to have none of either kind: 404 for both, and its endpoints are 404.
    let absent = |_: usize| Documents {
        docs: [None, None],
        ready: true,
    };
    assert_eq!(
        refused(
            req("/oauth2/as1/.well-known/openid-configuration").plan_with(
                &cfg,
                Body::Absent,
                absent
            )
        ),
        GatewayError::NoDocument
    );
    assert_eq!(
        refused(
            req("/oauth2/as1/authorize?client_id=demo-client").plan_with(
                &cfg,
                Body::Absent,
                absent
            )
        ),
        GatewayError::NoEndpoint
    );
}
