//! The gateway's metadata documents: fetched by the refresh job after the keys, once per
//! attempt, shared by every worker; a document that fails never holds keys back, and the
//! gateway answers "not ready" only until each document has been fetched once.

use super::*;
use crate::endpoint::DocumentKind;
use crate::flow::Metric;

/// `as1` behind the gateway, `metadata: true` (both documents at their standard places,
/// through upstream `as1`).
fn gateway_config() -> FilterConfig {
    let mut cfg = config_json(json!({
        "gateway": {"base_path": "/oauth2", "public_origins": ["https://gw.example"]}
    }));
    cfg["issuers"][0]["gateway"] = json!({"metadata": true, "upstream": "as1"});
    FilterConfig::parse(cfg.to_string().as_bytes()).unwrap()
}

fn document(kind: DocumentKind) -> Option<HttpResponse> {
    answer(
        200,
        &json!({"issuer": ISS_A, "token_endpoint": format!("{ISS_A}/token"),
                        "kind": kind.well_known()}),
    )
}

/// The next callout through `as1`: (token, path).
fn next(vm: &Vm) -> (u32, String) {
    let (token, request) = vm.one_callout_to("as1");
    (token, request.path)
}

#[test]
fn keys_come_first_and_a_failing_document_does_not_hold_them_back() {
    let mut vm = Vm::new(gateway_config(), CalloutMode::Background);
    let token = jwt(ISS_A, TestKey::RsaA);
    assert_eq!(vm.request(10, "/api", Some(&token), T0), Flow::Pause);
    vm.tick(T0 + 1);
    let (call, path) = next(&vm);
    assert_eq!(path, "/jwks");
    assert!(!vm.flow.issuer_documents(AS1).ready);
    vm.answer(ROOT, call, as1_keys(&[TestKey::RsaA]), T0 + 2);
    assert_eq!(
        vm.outcome(10),
        Outcome::Resumed,
        "the keys serve the request at once"
    );
    // Then the documents, in the same attempt; one failing does not stop the other.
    let (call, path) = next(&vm);
    assert_eq!(path, "/.well-known/openid-configuration");
    vm.answer(ROOT, call, answer(500, &json!({})), T0 + 3);
    let (call, path) = next(&vm);
    assert_eq!(path, "/.well-known/oauth-authorization-server");
    vm.answer(ROOT, call, document(DocumentKind::OAuth), T0 + 4);
    assert!(
        vm.callouts_to("as1").is_empty(),
        "the attempt is over, and failed"
    );
    let docs = vm.flow.issuer_documents(AS1);
    assert!(
        !docs.ready,
        "the OpenID document was never fetched: 503 for it"
    );
    assert!(docs.docs[1].is_some(), "the RFC 8414 one is served");
    // The retry fetches keys and both documents again; an optional 404 means "none".
    vm.tick(T0 + 5_004);
    let (call, path) = next(&vm);
    assert_eq!(path, "/jwks");
    vm.answer(ROOT, call, as1_keys(&[TestKey::RsaA]), T0 + 5_004);
    let (call, _) = next(&vm);
    vm.answer(ROOT, call, document(DocumentKind::OpenId), T0 + 5_005);
    let (call, path) = next(&vm);
    assert_eq!(path, "/.well-known/oauth-authorization-server");
    vm.answer(ROOT, call, answer(404, &json!({})), T0 + 5_006);
    assert!(vm.callouts_to("as1").is_empty(), "the attempt is complete");
    let docs = vm.flow.issuer_documents(AS1);
    assert!(docs.ready);
    assert_eq!(
        docs.docs[0].as_ref().unwrap()["kind"],
        "openid-configuration"
    );
    assert_eq!(docs.docs[1], None, "the server has none of this kind");
}

#[test]
fn documents_are_shared_by_every_worker_and_refetched_at_each_refresh() {
    let mut fetcher = Vm::new(gateway_config(), CalloutMode::Background);
    let other = fetcher.peer(gateway_config(), CalloutMode::Background);
    fetcher.tick(T0);
    let (call, _) = next(&fetcher);
    fetcher.answer(ROOT, call, as1_keys(&[TestKey::RsaA]), T0 + 1);
    for (i, kind) in DocumentKind::ALL.into_iter().enumerate() {
        let (call, _) = next(&fetcher);
        fetcher.answer(ROOT, call, document(kind), T0 + 2 + i as u64);
    }
    let docs = other.flow.issuer_documents(AS1);
    assert!(docs.ready);
    assert_eq!(
        docs.docs[1].as_ref().unwrap()["kind"],
        "oauth-authorization-server"
    );
    // A document whose issuer is another server's is a failed fetch: what is held stays.
    let refresh_at = T0 + 300_000 + 10;
    fetcher.tick(refresh_at);
    let (call, path) = next(&fetcher);
    assert_eq!(path, "/jwks");
    fetcher.answer(ROOT, call, as1_keys(&[TestKey::RsaA]), refresh_at + 1);
    let (call, _) = next(&fetcher);
    let impostor = answer(200, &json!({"issuer": "https://evil.example"}));
    fetcher.answer(ROOT, call, impostor, refresh_at + 2);
    assert_eq!(other.flow.issuer_documents(AS1), docs);
}

#[test]
fn failing_keys_do_not_hold_the_documents_back() {
    let mut vm = Vm::new(gateway_config(), CalloutMode::Background);
    vm.tick(T0);
    let (call, path) = next(&vm);
    assert_eq!(path, "/jwks");
    vm.answer(ROOT, call, answer(503, &json!({})), T0 + 1);
    for (i, kind) in DocumentKind::ALL.into_iter().enumerate() {
        let (call, _) = next(&vm);
        vm.answer(ROOT, call, document(kind), T0 + 2 + i as u64);
    }
    assert!(vm.flow.issuer_documents(AS1).ready);
    assert_eq!(
        vm.host.count(Metric::Fetched {
            issuer: AS1,
            ok: false
        }),
        1
    );
    // The attempt failed: the keys are retried at the retry interval, not the refresh one.
    vm.tick(T0 + 5_003);
    assert_eq!(next(&vm).1, "/jwks");
}
