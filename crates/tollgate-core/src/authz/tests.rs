#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Map, Value};
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

const FP: [u8; 32] = [7; 32];

fn rule() -> Rule {
    Rule {
        pdp: 0,
        label: "docs".to_owned(),
        subject: Subject {
            kind: "user".to_owned(),
            id: vec!["sub".to_owned()],
            properties: vec![
                ("roles".to_owned(), vec!["roles".to_owned()]),
                ("dept".to_owned(), vec!["org".to_owned(), "dept".to_owned()]),
            ],
        },
        resource: Resource {
            kind: "document".to_owned(),
            template: Template::parse("/api/docs/{owner}/{id}"),
            id: Source::Param("id".to_owned()),
            properties: vec![("owner".to_owned(), Source::Param("owner".to_owned()))],
        },
        actions: vec![
            ("GET".to_owned(), "read".to_owned()),
            ("DELETE".to_owned(), "delete".to_owned()),
        ],
        context: ContextFields {
            issuer: true,
            scopes: true,
            acr: true,
            client_id: true,
        },
        ttl_ms: 60_000,
        negative_ttl_ms: 10_000,
        expose_reason: true,
    }
}

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn facts<'a>(method: &'a str, path: &'a str, headers: &'a [(String, String)]) -> RequestFacts<'a> {
    RequestFacts {
        method,
        path,
        authority: "api.example.com",
        route_name: None,
        headers,
    }
}

fn body(q: &Query) -> Value {
    serde_json::from_slice(&q.body).unwrap()
}

#[test]
fn the_evaluation_request_carries_subject_resource_action_and_context() {
    let c = claims(json!({
        "sub": "alice", "roles": ["user"], "org": {"dept": "eng"},
        "scope": "write read read", "acr": "urn:loa:2", "azp": "spa", "email": "a@x",
    }));
    let q = query(
        3,
        &rule(),
        &FP,
        "as1",
        &c,
        &facts("GET", "/api/docs/alice/42?x=1", &[]),
    )
    .unwrap();
    assert_eq!(q.rule, 3);
    assert_eq!(
        body(&q),
        json!({
            "subject": {"type": "user", "id": "alice",
                        "properties": {"roles": ["user"], "dept": "eng"}},
            "resource": {"type": "document", "id": "42", "properties": {"owner": "alice"}},
            "action": {"name": "read"},
            "context": {"issuer": "as1", "scopes": ["read", "write"], "acr": "urn:loa:2",
                        "client_id": "spa"},
        })
    );
    // Claims the rule does not use change nothing, not even the cache key.
    let mut more = c.clone();
    more.insert("name".into(), json!("Alice"));
    let q2 = query(
        3,
        &rule(),
        &FP,
        "as1",
        &more,
        &facts("GET", "/api/docs/alice/42", &[]),
    )
    .unwrap();
    assert_eq!(q2.key, q.key);
    // Everything used does.
    for (c2, path, method) in [
        (
            json!({"sub": "bob", "roles": ["user"], "org": {"dept": "eng"}, "scope": "read write", "acr": "urn:loa:2", "azp": "spa"}),
            "/api/docs/alice/42",
            "GET",
        ),
        (
            json!({"sub": "alice", "roles": ["admin"], "org": {"dept": "eng"}, "scope": "read write", "acr": "urn:loa:2", "azp": "spa"}),
            "/api/docs/alice/42",
            "GET",
        ),
        (
            json!({"sub": "alice", "roles": ["user"], "org": {"dept": "eng"}, "scope": "read write", "acr": "urn:loa:2", "azp": "spa"}),
            "/api/docs/alice/43",
            "GET",
        ),
        (
            json!({"sub": "alice", "roles": ["user"], "org": {"dept": "eng"}, "scope": "read write", "acr": "urn:loa:2", "azp": "spa"}),
            "/api/docs/alice/42",
            "DELETE",
        ),
        (
            json!({"sub": "alice", "roles": ["user"], "org": {"dept": "eng"}, "scope": "read write", "acr": "urn:loa:1", "azp": "spa"}),
            "/api/docs/alice/42",
            "GET",
        ),
    ] {
        let other = query(
            3,
            &rule(),
            &FP,
            "as1",
            &claims(c2),
            &facts(method, path, &[]),
        )
        .unwrap();
        assert_ne!(other.key, q.key, "{path} {method}");
    }
    let other_config = query(
        3,
        &rule(),
        &[8; 32],
        "as1",
        &c,
        &facts("GET", "/api/docs/alice/42", &[]),
    )
    .unwrap();
    assert_ne!(other_config.key, q.key);
}

#[test]
fn what_the_rule_cannot_describe_is_refused_without_asking() {
    let forbidden = |d: &'static str| Denial::Forbidden {
        description: d,
        reason: None,
    };
    let c = claims(json!({"sub": "alice"}));
    for (path, method, why) in [
        ("/api/docs/alice", "GET", NO_RESOURCE),
        ("/api/docs/alice/42/x", "GET", NO_RESOURCE),
        ("/api/docs//42", "GET", NO_RESOURCE),
        ("/api/docs/a%2Fb/42", "GET", NO_RESOURCE),
        ("/api/docs/a%5Cb/42", "GET", NO_RESOURCE),
        ("/api/docs/a%00b/42", "GET", NO_RESOURCE),
        ("/api/docs/a%FFb/42", "GET", NO_RESOURCE),
        ("/api/files/alice/42", "GET", NO_RESOURCE),
        ("/api/docs/alice/42", "POST", NO_ACTION),
    ] {
        let r = query(0, &rule(), &FP, "as1", &c, &facts(method, path, &[]));
        assert_eq!(r, Err(forbidden(why)), "{method} {path}");
    }
    for no_subject in [
        json!({}),
        json!({"sub": ""}),
        json!({"sub": ["a"]}),
        json!({"sub": null}),
    ] {
        let r = query(
            0,
            &rule(),
            &FP,
            "as1",
            &claims(no_subject),
            &facts("GET", "/api/docs/a/1", &[]),
        );
        assert_eq!(r, Err(forbidden(NO_SUBJECT)));
    }
    // A numeric subject id is a string in AuthZEN; a percent-encoded segment is decoded.
    let q = query(
        0,
        &rule(),
        &FP,
        "as1",
        &claims(json!({"sub": 7})),
        &facts("GET", "/api/docs/%61lice/4%202", &[]),
    )
    .unwrap();
    assert_eq!(body(&q)["subject"]["id"], json!("7"));
    assert_eq!(
        body(&q)["resource"],
        json!({"type": "document", "id": "4 2", "properties": {"owner": "alice"}})
    );
}

#[test]
fn a_resource_id_from_a_header_must_be_there_exactly_once() {
    let mut r = rule();
    r.resource.template = None;
    r.resource.id = Source::Header("x-doc-id".to_owned());
    r.resource.properties = vec![("tier".to_owned(), Source::Fixed("gold".to_owned()))];
    let c = claims(json!({"sub": "alice"}));
    let h = |vals: &[&str]| -> Vec<(String, String)> {
        vals.iter()
            .map(|v| ("x-doc-id".to_owned(), (*v).to_owned()))
            .collect()
    };
    let once = h(&["d1"]);
    let q = query(0, &r, &FP, "as1", &c, &facts("GET", "/anything", &once)).unwrap();
    assert_eq!(
        body(&q)["resource"],
        json!({"type": "document", "id": "d1", "properties": {"tier": "gold"}})
    );
    for bad in [h(&[]), h(&["d1", "d2"]), h(&[""])] {
        assert!(query(0, &r, &FP, "as1", &c, &facts("GET", "/anything", &bad)).is_err());
    }
}

#[test]
fn templates_parse_whole_segment_parameters_only() {
    assert!(Template::parse("/a/{b}/c").is_some());
    assert!(Template::parse("/").is_some());
    for bad in [
        "a/{b}", "/a/{b", "/a/b}", "/a/x{b}", "/a/{}", "/a/{b-c}", "/{a}/{a}",
    ] {
        assert_eq!(Template::parse(bad), None, "{bad}");
    }
}

fn ok(body: Value) -> Option<HttpResponse> {
    Some(HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: body.to_string().into_bytes(),
    })
}

#[test]
fn only_a_boolean_decision_in_a_200_is_a_decision() {
    assert_eq!(
        read(ok(json!({"decision": true})).as_ref(), false),
        Ok(Answer::Allow)
    );
    assert_eq!(
        read(
            ok(json!({"decision": false, "context": {"reason_user": "no"}})).as_ref(),
            false
        ),
        Ok(Answer::Deny { reason: None })
    );
    assert_eq!(read(None, false), Err(PdpError::NoAnswer));
    let mut r = ok(json!({"decision": true})).unwrap();
    r.status = 500;
    assert_eq!(read(Some(&r), false), Err(PdpError::Status(500)));
    for bad in [
        json!({"decision": "true"}),
        json!({"decision": 1}),
        json!({}),
        json!([true]),
        json!(null),
    ] {
        assert_eq!(
            read(ok(bad.clone()).as_ref(), false),
            Err(PdpError::BadAnswer),
            "{bad}"
        );
    }
}

#[test]
fn a_reason_is_passed_on_only_when_exposed_and_safe() {
    let deny = |ctx: Value| {
        read(
            ok(json!({"decision": false, "context": ctx})).as_ref(),
            true,
        )
    };
    let reason = |s: &str| {
        Ok(Answer::Deny {
            reason: Some(s.to_owned()),
        })
    };
    assert_eq!(
        deny(json!({"reason_user": "not the owner"})),
        reason("not the owner")
    );
    assert_eq!(
        deny(json!({"reason_user": {"en-403": "not the owner"}})),
        reason("not the owner")
    );
    for unsafe_reason in [
        json!("say \"hi\""),
        json!("a\\b"),
        json!("line\nbreak"),
        json!("é"),
        json!(""),
        json!("x".repeat(201)),
        json!(5),
    ] {
        assert_eq!(
            deny(json!({"reason_user": unsafe_reason})),
            Ok(Answer::Deny { reason: None })
        );
    }
    assert_eq!(
        deny(json!({"reason_admin": "policy 7"})),
        Ok(Answer::Deny { reason: None })
    );
}

#[test]
fn cached_decisions_belong_to_their_key_and_expire() {
    let key = [1; 32];
    for answer in [
        Answer::Allow,
        Answer::Deny { reason: None },
        Answer::Deny {
            reason: Some("no".into()),
        },
    ] {
        let v = encode(&key, &answer, 1_000);
        assert_eq!(decode(&key, &v, 999), Some(answer.clone()));
        assert_eq!(decode(&key, &v, 1_000), None);
        assert_eq!(decode(&[2; 32], &v, 0), None);
    }
    assert_eq!(decode(&key, &[1; 20], 0), None);
    let mut v = encode(&key, &Answer::Allow, 1_000);
    v.push(0);
    assert_eq!(decode(&key, &v, 0), None);
}

#[test]
fn the_call_authenticates_as_configured() {
    let q = Query {
        rule: 0,
        key: [0; 32],
        body: b"{}".to_vec(),
    };
    let pdp = |auth| Pdp {
        name: "p".into(),
        url: crate::http::parse_url("https://pdp.example.com:8443/access/v1/evaluation").unwrap(),
        upstream: "pdp".into(),
        auth,
        timeout_ms: 300,
    };
    let auth_of = |r: HttpRequest| {
        r.headers
            .into_iter()
            .find(|(n, _)| n == "authorization")
            .map(|(_, v)| v)
    };
    let r = request(&pdp(PdpAuth::None), &q);
    assert_eq!(
        (r.method, r.scheme, r.authority.as_str(), r.path.as_str()),
        (
            "POST",
            "https",
            "pdp.example.com:8443",
            "/access/v1/evaluation"
        )
    );
    assert_eq!(r.timeout_ms, 300);
    assert_eq!(r.body.as_deref(), Some(&b"{}"[..]));
    assert_eq!(auth_of(r), None);
    let bearer = request(&pdp(PdpAuth::Bearer(Secret::new("s3cret".into()))), &q);
    assert_eq!(auth_of(bearer).as_deref(), Some("Bearer s3cret"));
    // RFC 7617: nothing is form-encoded (unlike OAuth client credentials).
    let basic = PdpAuth::Basic {
        user: "pep".into(),
        password: Secret::new("p@ss:w+rd".into()),
    };
    assert_eq!(
        auth_of(request(&pdp(basic), &q)).as_deref(),
        Some("Basic cGVwOnBAc3M6dytyZA==")
    );
    assert_eq!(
        format!("{:?}", PdpAuth::Bearer(Secret::new("s3cret".into()))),
        "Bearer([redacted])"
    );
}
