//! Gateway routing: precedence of selectors, client ids and tokens; byte-for-byte forwarding.

use serde_json::json;
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

fn cfg(tagging: bool) -> FilterConfig {
    let text = json!({
        "issuers": [
            {
                "name": "as1", "issuer": "https://as1.example",
                "jwks": {"uri": "https://as1.example/jwks", "upstream": "as1"},
                "introspection": {"endpoint": "https://as1.example/introspect", "upstream": "as1",
                                  "client_id": "rs", "client_secret": "s"},
                "opaque_tokens": {"pattern": "[A-Za-z0-9_-]{43}"},
                "gateway": {"endpoints": {"token": "https://as1.example/token",
                                          "authorization": "https://as1.example/auth?prompt=x"},
                            "client_ids": ["demo-client"]}
            },
            {
                "name": "as2", "issuer": "https://as2.example/o",
                "introspection": {"endpoint": "https://as2.example/o/introspect/", "upstream": "as2",
                                  "client_id": "rs", "client_secret": "s"},
                "opaque_tokens": {"prefixes": ["dot_"]},
                "gateway": {"endpoints": {"token": "https://as2.example/o/token/"},
                            "client_id_prefixes": ["dot-"]}
            },
            {
                "name": "nogw", "issuer": "https://other.example",
                "jwks": {"uri": "https://other.example/jwks", "upstream": "x"}
            }
        ],
        "gateway": {"base_path": "/oauth2", "public_origins": ["https://gw.example"], "selector_param": "as", "selector_header": "x-oauth-as",
                    "tagging": tagging}
    });
    FilterConfig::parse(text.to_string().as_bytes()).unwrap()
}

fn choose_for(
    cfg: &FilterConfig,
    endpoint: Endpoint,
    call: Call<'_>,
) -> Result<usize, GatewayError> {
    choose(cfg, cfg.gateway.as_ref().unwrap(), endpoint, &call)
}

#[test]
fn explicit_selectors_come_first_in_order() {
    let c = cfg(false);
    let form = vec![
        ("client_id".to_owned(), "demo-client".to_owned()),
        ("as".to_owned(), "as2".to_owned()),
    ];
    let call = Call {
        path_issuer: Some("as2"),
        form: Some(&form),
        ..Call::default()
    };
    assert_eq!(choose_for(&c, Endpoint::Token, call), Ok(1), "path wins");
    let call = Call {
        form: Some(&form),
        selector_header: Some("as1"),
        ..Call::default()
    };
    assert_eq!(
        choose_for(&c, Endpoint::Token, call),
        Ok(1),
        "param beats header and client id"
    );
    let call = Call {
        query: Some("client_id=demo-client"),
        selector_header: Some("as2"),
        ..Call::default()
    };
    assert_eq!(
        choose_for(&c, Endpoint::Authorize, call),
        Ok(1),
        "header beats client id"
    );
}

#[test]
fn unknown_selectors_are_errors_not_fallbacks() {
    let c = cfg(false);
    let call = Call {
        query: Some("as=as9&client_id=demo-client"),
        ..Call::default()
    };
    assert_eq!(
        choose_for(&c, Endpoint::Authorize, call),
        Err(GatewayError::UnknownSelector)
    );
    let call = Call {
        selector_header: Some("nogw"),
        ..Call::default()
    };
    assert_eq!(
        choose_for(&c, Endpoint::Token, call),
        Err(GatewayError::UnknownSelector),
        "issuer without gateway"
    );
}

#[test]
fn client_ids_by_map_prefix_and_basic_credentials() {
    let c = cfg(false);
    let basic = basic_auth::encode("dot-app", "pw");
    let call = Call {
        authorization: Some(&basic),
        ..Call::default()
    };
    assert_eq!(choose_for(&c, Endpoint::Token, call), Ok(1));
    let call = Call {
        query: Some("response_type=code&client_id=demo-client"),
        ..Call::default()
    };
    assert_eq!(choose_for(&c, Endpoint::Authorize, call), Ok(0));
    let form = vec![("client_id".to_owned(), "stranger".to_owned())];
    let call = Call {
        form: Some(&form),
        ..Call::default()
    };
    assert_eq!(
        choose_for(&c, Endpoint::Token, call),
        Err(GatewayError::UnknownClient)
    );
    assert_eq!(
        choose_for(&c, Endpoint::Token, Call::default()),
        Err(GatewayError::NoRoute)
    );
}

#[test]
fn tokens_route_by_the_api_rules() {
    let c = cfg(false);
    let form = vec![("token".to_owned(), "dot_abc".to_owned())];
    let call = Call {
        form: Some(&form),
        ..Call::default()
    };
    assert_eq!(choose_for(&c, Endpoint::Revoke, call), Ok(1));
    let opaque43 = "A".repeat(43);
    let bearer = format!("Bearer {opaque43}");
    let call = Call {
        authorization: Some(&bearer),
        ..Call::default()
    };
    assert_eq!(choose_for(&c, Endpoint::Userinfo, call), Ok(0));
    // The token only counts for endpoints that carry one.
    let call = Call {
        form: Some(&form),
        ..Call::default()
    };
    assert_eq!(
        choose_for(&c, Endpoint::Token, call),
        Err(GatewayError::NoRoute)
    );
}

#[test]
fn tags_route_and_come_off_before_forwarding() {
    let c = cfg(true);
    let gw = c.gateway.as_ref().unwrap();
    let form = vec![
        ("grant_type".to_owned(), "client_credentials".to_owned()),
        ("client_id".to_owned(), "as2.newclient".to_owned()),
        ("client_secret".to_owned(), "x y".to_owned()),
    ];
    let call = Call {
        form: Some(&form),
        ..Call::default()
    };
    assert_eq!(choose_for(&c, Endpoint::Token, call), Ok(1));
    let rw = rewrite(&c, gw, Endpoint::Token, &call);
    assert_eq!(
        rw.body.as_deref(),
        Some("grant_type=client_credentials&client_id=newclient&client_secret=x+y")
    );
    let basic = basic_auth::encode("as1.c:1", "p&w");
    let call = Call {
        authorization: Some(&basic),
        ..Call::default()
    };
    let rw = rewrite(&c, gw, Endpoint::Token, &call);
    assert_eq!(rw.authorization, Some(basic_auth::encode("c:1", "p&w")));
    let token = vec![("token".to_owned(), "as2.dot_abc".to_owned())];
    let call = Call {
        form: Some(&token),
        ..Call::default()
    };
    assert_eq!(choose_for(&c, Endpoint::Introspect, call), Ok(1));
    assert_eq!(
        rewrite(&c, gw, Endpoint::Introspect, &call).body.as_deref(),
        Some("token=dot_abc")
    );
}

#[test]
fn tagged_refresh_tokens_come_off_before_forwarding() {
    // tag_response tags opaque refresh tokens; the refresh grant must send the AS its own.
    let c = cfg(true);
    let gw = c.gateway.as_ref().unwrap();
    let form = vec![
        ("grant_type".to_owned(), "refresh_token".to_owned()),
        ("refresh_token".to_owned(), "as1.r1+x".to_owned()),
    ];
    let basic = basic_auth::encode("demo-client", "s");
    let call = Call {
        form: Some(&form),
        authorization: Some(&basic),
        ..Call::default()
    };
    assert_eq!(choose_for(&c, Endpoint::Token, call), Ok(0));
    assert_eq!(
        rewrite(&c, gw, Endpoint::Token, &call).body.as_deref(),
        Some("grant_type=refresh_token&refresh_token=r1%2Bx")
    );
    // Untagged (or tagging off): the body goes as it came.
    let form = vec![("refresh_token".to_owned(), "as1.r1".to_owned())];
    let call = Call {
        form: Some(&form),
        ..Call::default()
    };
    let off = cfg(false);
    assert_eq!(
        rewrite(&off, off.gateway.as_ref().unwrap(), Endpoint::Token, &call).body,
        None
    );
}

#[test]
fn forwarding_keeps_queries_and_bodies_byte_for_byte() {
    let c = cfg(false);
    let gw = c.gateway.as_ref().unwrap();
    let raw = "response_type=code&client_id=demo-client&state=a%2Fb%20c&code_challenge=xyz-_~&as=as1&nonce=n+1";
    let call = Call {
        query: Some(raw),
        ..Call::default()
    };
    let rw = rewrite(&c, gw, Endpoint::Authorize, &call);
    assert_eq!(
        rw.query.as_deref(),
        Some("response_type=code&client_id=demo-client&state=a%2Fb%20c&code_challenge=xyz-_~&nonce=n+1"),
        "only the selector pair goes; every other byte stays"
    );
    let form = vec![("grant_type".to_owned(), "refresh_token".to_owned())];
    let call = Call {
        form: Some(&form),
        ..Call::default()
    };
    assert_eq!(
        rewrite(&c, gw, Endpoint::Token, &call),
        Rewrite {
            query: None,
            path_client_id: None,
            body: None,
            authorization: None
        }
    );
    let (authority, path) = target(
        &Url::parse("https://as1.example/auth?prompt=x").unwrap(),
        Some("a=1"),
    );
    assert_eq!(
        (authority.as_str(), path.as_str()),
        ("as1.example", "/auth?prompt=x&a=1")
    );
}

#[test]
fn responses_get_tagged_values() {
    let body =
        br#"{"access_token":"abc","refresh_token":"r1","token_type":"Bearer","expires_in":60}"#;
    let out: serde_json::Value =
        serde_json::from_slice(&rewrite_response(Endpoint::Token, "as1", true, "", body).unwrap())
            .unwrap();
    assert_eq!(out["access_token"], "as1.abc");
    assert_eq!(out["refresh_token"], "as1.r1");
    assert_eq!(out["expires_in"], 60);
    let jwt = br#"{"access_token":"eyJhbGciOiJSUzI1NiJ9.e30.sig"}"#;
    assert_eq!(
        rewrite_response(Endpoint::Token, "as1", true, "", jwt),
        None,
        "JWTs carry iss already"
    );
    // An access token that comes with an ID token is bound by its `at_hash`: only the
    // refresh token is tagged.
    let with_id_token =
        br#"{"access_token":"abc","refresh_token":"r1","id_token":"eyJhbGciOiJSUzI1NiJ9.e30.sig"}"#;
    let out: serde_json::Value = serde_json::from_slice(
        &rewrite_response(Endpoint::Token, "as1", true, "", with_id_token).unwrap(),
    )
    .unwrap();
    assert_eq!(out["access_token"], "abc");
    assert_eq!(out["refresh_token"], "as1.r1");
    assert_eq!(out["id_token"], "eyJhbGciOiJSUzI1NiJ9.e30.sig");
    // Client ids are never tagged: they are the `aud` of the client's ID tokens.
    let reg = br#"{"client_id":"xyz","client_secret":"s"}"#;
    for endpoint in [Endpoint::Register, Endpoint::ClientConfiguration] {
        assert_eq!(rewrite_response(endpoint, "as2", true, "", reg), None);
    }
    assert_eq!(
        rewrite_response(Endpoint::Userinfo, "as1", true, "", reg),
        None
    );
}

#[test]
fn registration_points_management_at_the_gateway() {
    let reg = br#"{"client_id":"a b","registration_client_uri":"https://as1.example/reg/a%20b","registration_access_token":"t"}"#;
    let out: serde_json::Value = serde_json::from_slice(
        &rewrite_response(
            Endpoint::Register,
            "as1",
            false,
            "https://gw/oauth2/as1/register",
            reg,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(out["client_id"], "a b");
    assert_eq!(
        out["registration_client_uri"],
        "https://gw/oauth2/as1/register/a%20b"
    );
    let with_tagging: serde_json::Value = serde_json::from_slice(
        &rewrite_response(
            Endpoint::Register,
            "as1",
            true,
            "https://gw/oauth2/as1/register",
            reg,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(with_tagging, out, "tagging leaves client ids alone");
    assert_eq!(
        rewrite_response(
            Endpoint::Register,
            "as1",
            false,
            "x",
            br#"{"client_id":"c"}"#
        ),
        None
    );
}

#[test]
fn client_configuration_urls_follow_the_servers_style() {
    let oidc = Url::parse("https://as1.example/reg").unwrap();
    assert_eq!(
        client_configuration_url(&oidc, "abc").unwrap().as_str(),
        "https://as1.example/reg/abc"
    );
    let dot = Url::parse("https://as2.example/o/register/").unwrap();
    assert_eq!(
        client_configuration_url(&dot, "abc").unwrap().as_str(),
        "https://as2.example/o/register/abc/"
    );
}

#[test]
fn a_tagged_client_id_in_the_path_routes_and_comes_off() {
    let c = cfg(true);
    let gw = c.gateway.as_ref().unwrap();
    let call = Call {
        path_client_id: Some("as2.xyz"),
        ..Call::default()
    };
    assert_eq!(choose_for(&c, Endpoint::ClientConfiguration, call), Ok(1));
    assert_eq!(
        rewrite(&c, gw, Endpoint::ClientConfiguration, &call)
            .path_client_id
            .as_deref(),
        Some("xyz")
    );
}

#[test]
fn path_client_ids_are_decoded_once_and_dot_segments_are_refused() {
    assert_eq!(path_client_id("abc"), Ok("abc".to_owned()));
    assert_eq!(path_client_id("a%20b"), Ok("a b".to_owned()));
    assert_eq!(path_client_id("a%2Fb"), Ok("a/b".to_owned()));
    assert_eq!(
        path_client_id("a+b"),
        Ok("a+b".to_owned()),
        "+ is not a space in a path"
    );
    assert_eq!(
        path_client_id("%252e%252e"),
        Ok("%2e%2e".to_owned()),
        "decoded once"
    );
    assert_eq!(path_client_id("..."), Ok("...".to_owned()));
    for segment in [
        "", ".", "..", "%2e", "%2E", "%2e%2e", "%2E%2e", ".%2e", "%2e.", "%2E%2E",
    ] {
        assert_eq!(
            path_client_id(segment),
            Err(GatewayError::BadClientId),
            "{segment:?}"
        );
    }
    assert_eq!(
        path_client_id("%ff%fe"),
        Err(GatewayError::BadClientId),
        "not UTF-8"
    );
}

#[test]
fn a_client_id_stays_one_segment_of_the_servers_url() {
    let oidc = Url::parse("https://as1.example/reg").unwrap();
    let dot = Url::parse("https://as2.example/o/register/").unwrap();
    let at = |base: &Url, id: &str| client_configuration_url(base, id).map(|u| u.to_string());
    assert_eq!(
        at(&oidc, "a/../../admin").as_deref(),
        Ok("https://as1.example/reg/a%2F..%2F..%2Fadmin")
    );
    assert_eq!(
        at(&dot, "x?y#z").as_deref(),
        Ok("https://as2.example/o/register/x%3Fy%23z/")
    );
    assert_eq!(
        at(&oidc, "a b+c%2e").as_deref(),
        Ok("https://as1.example/reg/a%20b%2Bc%252e")
    );
    assert_eq!(
        at(&oidc, "..\\x").as_deref(),
        Ok("https://as1.example/reg/..%5Cx")
    );
    assert_eq!(
        at(&oidc, "caf\u{e9}").as_deref(),
        Ok("https://as1.example/reg/caf%C3%A9")
    );
    // Whatever the id, the server's URL stays under its registration endpoint.
    for id in [
        "a/..",
        "%2e%2e",
        "..%2f",
        "/",
        "//evil.example",
        "\\..",
        "a\nb",
    ] {
        let url = client_configuration_url(&oidc, id).unwrap();
        assert_eq!(url.host_str(), Some("as1.example"), "{id:?}");
        assert!(
            url.path().starts_with("/reg/") && url.path().len() > 5,
            "{id:?}"
        );
        assert_eq!(url.path().matches('/').count(), 2, "{id:?}");
    }
    for id in ["", ".", ".."] {
        assert_eq!(
            client_configuration_url(&oidc, id),
            Err(GatewayError::BadClientId),
            "{id:?}"
        );
        assert_eq!(
            client_configuration_url(&dot, id),
            Err(GatewayError::BadClientId),
            "{id:?}"
        );
    }
}

#[test]
fn a_tag_that_leaves_a_dot_segment_is_refused_too() {
    let c = cfg(true);
    let gw = c.gateway.as_ref().unwrap();
    let id = path_client_id("as1.%2e").unwrap();
    let call = Call {
        path_client_id: Some(&id),
        ..Call::default()
    };
    assert_eq!(choose_for(&c, Endpoint::ClientConfiguration, call), Ok(0));
    let bare = rewrite(&c, gw, Endpoint::ClientConfiguration, &call).path_client_id;
    assert_eq!(bare.as_deref(), Some("."));
    let reg = Url::parse("https://as1.example/reg").unwrap();
    assert_eq!(
        client_configuration_url(&reg, bare.as_deref().unwrap()),
        Err(GatewayError::BadClientId)
    );
}
