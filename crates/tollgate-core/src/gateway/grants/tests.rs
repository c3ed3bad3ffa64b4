//! What a token answer adds to its grant, the record format, and the plan's side: which calls
//! are read for their grant, and which id a revocation names.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
// On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::basic_auth;
use crate::gateway::metadata::Documents;
use crate::gateway::plan::{plan, Body, OnResponse, Request, Step};

const NOW: u64 = 1_700_000_000_000;
const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";

/// `op` introspects its opaque `op_` tokens (max_ttl_s 300); `jw` only verifies JWTs.
fn config(tagging: bool, cache: u32) -> FilterConfig {
    let text = json!({
        "issuers": [
            {
                "name": "op", "issuer": "https://op.example",
                "introspection": {"endpoint": "https://op.example/introspect", "upstream": "op",
                                  "client_id": "rs", "client_secret": "s", "max_ttl_s": 300},
                "opaque_tokens": {"prefixes": ["op_"]},
                "gateway": {"upstream": "op", "client_ids": ["app"],
                            "endpoints": {"token": "https://op.example/token",
                                          "revocation": "https://op.example/revoke"}}
            },
            {
                "name": "jw", "issuer": "https://jw.example",
                "jwks": {"uri": "https://jw.example/jwks", "upstream": "jw"},
                "gateway": {"upstream": "jw", "client_ids": ["jw-app"],
                            "endpoints": {"token": "https://jw.example/token"}}
            }
        ],
        "cache": {"max_entries": cache},
        "gateway": {"base_path": "/oauth2", "public_origins": ["https://gw.example"],
                    "tagging": tagging}
    });
    FilterConfig::parse(text.to_string().as_bytes()).unwrap()
}

fn key(cfg: &FilterConfig, token: &str) -> CacheKey {
    cache::key_for(&cfg.fingerprint, token)
}

fn answer(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// The plan's answer-handling for a form call by `client` to `endpoint`.
fn on_response(cfg: &FilterConfig, endpoint: &str, client: &str, body: &str) -> OnResponse {
    let headers = vec![(
        "content-type".to_owned(),
        "application/x-www-form-urlencoded".to_owned(),
    )];
    let authorization = basic_auth::encode(client, "secret");
    let request = Request {
        method: "POST",
        path: endpoint,
        authority: "gw.example",
        authorization: Some(&authorization),
        headers: &headers,
    };
    match plan(cfg, &request, Body::Complete(body.as_bytes()), |_| {
        Documents::none()
    }) {
        Step::Forward(f) => f.response,
        other => panic!("not forwarded: {other:?}"),
    }
}

#[test]
fn token_calls_of_an_introspecting_issuer_are_read_for_their_grant() {
    let cfg = config(false, 8192);
    let code = on_response(
        &cfg,
        "/oauth2/token",
        "app",
        "grant_type=authorization_code&code=c",
    );
    assert_eq!(
        code.grant,
        Some(GrantCall {
            issuer: 0,
            presented: None
        })
    );
    let refresh = on_response(
        &cfg,
        "/oauth2/token",
        "app",
        "grant_type=refresh_token&refresh_token=op_r1",
    );
    assert_eq!(refresh.grant.unwrap().presented, Some(key(&cfg, "op_r1")));
    // Not a token call; an issuer whose tokens are never introspected; the cache off.
    let revoke = on_response(&cfg, "/oauth2/revoke", "app", "token=op_r1");
    assert_eq!(revoke.grant, None);
    let jw = on_response(
        &cfg,
        "/oauth2/token",
        "jw-app",
        "grant_type=refresh_token&refresh_token=x",
    );
    assert_eq!(jw.grant, None);
    let off = config(false, 0);
    assert_eq!(GrantCall::of(&off, 0, None), None);
}

#[test]
fn tokens_are_known_by_their_untagged_hash_whichever_form_the_client_presents() {
    let cfg = config(true, 8192);
    let refresh = on_response(
        &cfg,
        "/oauth2/token",
        "app",
        "grant_type=refresh_token&refresh_token=op.op_r1",
    );
    assert_eq!(refresh.grant.unwrap().presented, Some(key(&cfg, "op_r1")));
    assert_eq!(id_of(&cfg, "op.op_r1"), key(&cfg, "op_r1"));
    assert_eq!(id_of(&cfg, "op_r1"), key(&cfg, "op_r1"));
    // A revocation names its token by the same id, tagged or not.
    for sent in ["op.op_a1", "op_a1"] {
        let revoke = on_response(&cfg, "/oauth2/revoke", "app", &format!("token={sent}"));
        assert_eq!(
            revoked_id(&revoke.evictions),
            Some(&key(&cfg, "op_a1")),
            "{sent}"
        );
    }
    let cfg = config(false, 8192);
    let revoke = on_response(&cfg, "/oauth2/revoke", "app", "token=op_a1");
    assert_eq!(revoked_id(&revoke.evictions), Some(&key(&cfg, "op_a1")));
    assert_eq!(revoked_id(&[]), None);
}

#[test]
fn a_first_answer_starts_a_grant_under_its_refresh_token() {
    let cfg = config(false, 8192);
    let call = GrantCall::of(&cfg, 0, None).unwrap();
    let got = answer(json!({"access_token": "op_a1", "refresh_token": "op_r1",
                            "token_type": "Bearer", "expires_in": 3600}));
    assert_eq!(
        issued(&cfg, &call, &got, NOW),
        Some(Issued {
            grant: key(&cfg, "op_r1"),
            access: key(&cfg, "op_a1"),
            keys: key(&cfg, "op_a1").to_vec(),
            refresh: None,
            until_ms: NOW + 3_600_000,
        })
    );
    // Without expires_in: as long as the issuer's answers are cached at most.
    let got = answer(json!({"access_token": "op_a1", "refresh_token": "op_r1"}));
    assert_eq!(
        issued(&cfg, &call, &got, NOW).unwrap().until_ms,
        NOW + 300_000
    );
    // A nonsense lifetime saturates instead of wrapping.
    let got =
        answer(json!({"access_token": "op_a1", "refresh_token": "r", "expires_in": u64::MAX}));
    assert_eq!(issued(&cfg, &call, &got, NOW).unwrap().until_ms, u64::MAX);
}

#[test]
fn answers_without_a_grant_to_remember_are_ignored() {
    let cfg = config(false, 8192);
    let call = GrantCall::of(&cfg, 0, None).unwrap();
    for body in [
        answer(json!({"access_token": "op_a1", "expires_in": 600})), // client_credentials
        answer(json!({"refresh_token": "op_r1"})),
        answer(json!({"access_token": 7, "refresh_token": "op_r1"})),
        answer(json!(["op_a1", "op_r1"])),
        b"access_token=op_a1&refresh_token=op_r1".to_vec(),
        Vec::new(),
    ] {
        assert_eq!(issued(&cfg, &call, &body, NOW), None, "{body:?}");
    }
}

#[test]
fn a_refresh_adds_to_the_presented_tokens_grant_and_a_rotated_token_links_to_it() {
    let cfg = config(false, 8192);
    let call = GrantCall::of(
        &cfg,
        0,
        Some(&[("refresh_token".to_owned(), "op_r1".to_owned())]),
    )
    .unwrap();
    // The server keeps the refresh token (answered again, or not at all).
    for got in [
        json!({"access_token": "op_a2", "expires_in": 60}),
        json!({"access_token": "op_a2", "refresh_token": "op_r1", "expires_in": 60}),
    ] {
        let i = issued(&cfg, &call, &answer(got), NOW).unwrap();
        assert_eq!((i.grant, i.refresh), (key(&cfg, "op_r1"), None));
    }
    // It rotates it: the new one is remembered as a link.
    let got = answer(json!({"access_token": "op_a2", "refresh_token": "op_r2", "expires_in": 60}));
    let i = issued(&cfg, &call, &got, NOW).unwrap();
    assert_eq!(i.grant, key(&cfg, "op_r1"));
    assert_eq!(i.refresh, Some(key(&cfg, "op_r2")));
    assert_eq!(i.keys, key(&cfg, "op_a2"));
}

#[test]
fn with_tagging_an_opaque_access_token_is_known_tagged_and_untagged_a_jwt_as_it_is() {
    let cfg = config(true, 8192);
    let call = GrantCall::of(&cfg, 0, None).unwrap();
    let got = answer(json!({"access_token": "op_a1", "refresh_token": "op_r1"}));
    let i = issued(&cfg, &call, &got, NOW).unwrap();
    assert_eq!(i.keys, [key(&cfg, "op_a1"), key(&cfg, "op.op_a1")].concat());
    assert_eq!(i.access, key(&cfg, "op_a1"));
    let got = answer(json!({"access_token": JWT, "refresh_token": "op_r1"}));
    assert_eq!(issued(&cfg, &call, &got, NOW).unwrap().keys, key(&cfg, JWT));
}

/// [`decode`], with the keys one by one.
fn dec(id: &CacheKey, value: &[u8], now_ms: u64) -> Option<(u64, Vec<CacheKey>)> {
    decode(id, value.to_vec(), now_ms).map(|(until, k)| (until, keys(&k).collect()))
}

#[test]
fn records_round_trip_while_alive_and_only_for_their_id() {
    let (id, other) = ([1u8; 32], [2u8; 32]);
    let keys = [[3u8; 32], [4u8; 32]];
    let v = encode(&id, NOW, &keys.concat());
    assert_eq!(v.len(), 32 + 8 + 64);
    assert_eq!(dec(&id, &v, NOW - 1), Some((NOW, keys.to_vec())));
    assert_eq!(dec(&id, &v, NOW), None, "dead at its end");
    assert_eq!(dec(&other, &v, 0), None, "another grant's");
    assert_eq!(dec(&id, &v[..v.len() - 1], 0), None, "a torn key");
    assert_eq!(dec(&id, &v[..39], 0), None, "no end");
    assert_eq!(dec(&id, &encode(&id, NOW, &[]), 0), Some((NOW, vec![])));
}

fn adding(keys: Vec<CacheKey>, until_ms: u64) -> Issued {
    Issued {
        grant: [0; 32],
        access: keys[0],
        keys: keys.concat(),
        refresh: None,
        until_ms,
    }
}

#[test]
fn merging_adds_the_newest_keys_last_and_keeps_the_later_end() {
    let g = [9u8; 32];
    let (until, v) = merge(&g, None, &adding(vec![[1; 32], [2; 32]], NOW));
    assert_eq!(until, NOW);
    assert_eq!(dec(&g, &v, 0), Some((NOW, vec![[1; 32], [2; 32]])));
    let (until, v) = merge(
        &g,
        decode(&g, v, 0),
        &adding(vec![[3; 32], [1; 32]], NOW - 5),
    );
    assert_eq!(until, NOW, "an earlier end does not shorten the record");
    assert_eq!(
        dec(&g, &v, 0),
        Some((NOW, vec![[1; 32], [2; 32], [3; 32], [1; 32]]))
    );
}

#[test]
fn a_full_record_forgets_its_oldest_keys() {
    let g = [9u8; 32];
    let mut record = None;
    for i in 0..(MAX_KEYS as u8 + 3) {
        let (_, v) = merge(&g, record, &adding(vec![[i; 32]], NOW + u64::from(i)));
        record = decode(&g, v, 0);
    }
    let (until, kept) = record.unwrap();
    let keys: Vec<CacheKey> = keys(&kept).collect();
    assert_eq!(until, NOW + MAX_KEYS as u64 + 2);
    assert_eq!(keys.len(), MAX_KEYS);
    assert_eq!(keys.first(), Some(&[3u8; 32]), "the three oldest are gone");
    assert_eq!(keys.last(), Some(&[MAX_KEYS as u8 + 2; 32]));
}
