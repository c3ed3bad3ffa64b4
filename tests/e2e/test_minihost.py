"""Tollgate under an APISIX-like host: the real tollgate.wasm in tests/minihost's MiniHost, where
the host clock, the tick and shared data answer UNIMPLEMENTED (or, in "dummy" mode as older
APISIX did, OK without doing anything), callouts run one at a time after the callback, a
request the plugin leaves paused after its call goes upstream anyway, and a request body reaches
the plugin (whole, once, after the headers and their calls) only if it asked for it.

Against a real oidc-provider on 127.0.0.1 (tests/rig): JWTs with keys from discovery or a JWKS
URI, opaque tokens introspected at that server, fail-closed when it is down, per-VM caches.
Every request must be decided by the plugin itself: no trap, never `paused_without_call`.
"""

from __future__ import annotations

import base64
import sys
import time
from pathlib import Path

import pytest
import wasmtime

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pki  # noqa: E402  (tests/rig, on sys.path via conftest)
import servers  # noqa: E402
import tokens  # noqa: E402
from minihost.host import MiniHost, encode_map  # noqa: E402
from procs import free_port  # noqa: E402

AUDIENCE = "https://api.test"
MODES = ["unimplemented", "dummy"]
DISCOVERY = "/.well-known/openid-configuration"
INTROSPECTION = "/token/introspection"


# --- servers and tokens ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def as1(tmp_path_factory):
    """The authorization server Tollgate trusts."""
    port = free_port()
    work = tmp_path_factory.mktemp("minihost-as1")
    proc = servers.start_oidc(port, work / "state", work)
    yield port
    proc.stop()


@pytest.fixture(scope="module")
def stranger(tmp_path_factory):
    """Another oidc-provider, not configured: its tokens name an issuer Tollgate does not know."""
    port = free_port()
    work = tmp_path_factory.mktemp("minihost-stranger")
    proc = servers.start_oidc(port, work / "state", work)
    yield port
    proc.stop()


def jwt(port: int, resource: str = "https://api.test/jwt", scope: str = "read") -> str:
    return tokens.client_credentials(f"http://127.0.0.1:{port}/token", "demo-client", "demo-secret",
                                     scope=scope, resource=resource)["access_token"]


def opaque(port: int, scope: str = "read") -> str:
    return tokens.client_credentials(f"http://127.0.0.1:{port}/token", "demo-client", "demo-secret",
                                     scope=scope)["access_token"]


@pytest.fixture(scope="module")
def expired(as1):
    """A JWT that expired (2 s lifetime, 1 s clock skew allowed, whole seconds) by the time it
    is used."""
    token = jwt(as1, resource="https://api.test/short")
    exp = tokens.decode_unverified(token)[1]["exp"]
    return token, exp + 2.5


def config(port: int, jwks: str = "discovery") -> dict:
    """as1 trusted for JWTs and opaque tokens; with jwks="uri" every endpoint is configured
    (no discovery document at all), with "discovery" both come from discovery."""
    upstream = f"127.0.0.1:{port}"  # APISIX: a host:port, not an Envoy cluster
    if jwks == "discovery":
        keys, endpoint = {"discovery": True, "upstream": upstream}, {"discovery": True}
    else:
        keys = {"uri": f"http://127.0.0.1:{port}/jwks", "upstream": upstream}
        endpoint = {"endpoint": f"http://127.0.0.1:{port}{INTROSPECTION}"}
    return {
        "issuers": [{
            "name": "as1",
            "issuer": f"http://127.0.0.1:{port}",
            "jwks": keys,
            "audiences": [AUDIENCE],
            "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
            "require_at_jwt": True,
            "clock_skew_s": 1,
            "introspection": {**endpoint, "upstream": upstream, "client_id": "rs-client",
                              "client_secret": "rs-secret", "require_token_type": True},
            "opaque_tokens": {"pattern": "[A-Za-z0-9_-]{43}"},
        }],
        "routes": [{"name": "api", "match": {"prefix": "/api"}, "require": {"scopes_any": ["read"]}}],
    }


# --- the host ----------------------------------------------------------------------------------

@pytest.fixture(params=MODES)
def mode(request) -> str:
    return request.param


def start_host(wasm, cfg: dict, mode: str) -> MiniHost:
    host = MiniHost(wasm, cfg, shared_data=mode)
    assert not host.traps, f"the plugin trapped while loading/configuring: {host.traps[0]}"
    assert host.configured, f"proxy_on_configure answered false; logs: {host.logs[-5:]}"
    return host


def call(host: MiniHost, token: str | None = None, path: str = "/api/items", extra=(),
         body: bytes | None = None):
    headers = [("host", "api.test"), ("user-agent", "minihost-test"), *extra]
    if token is not None:
        headers.append(("authorization", f"Bearer {token}"))
    method = "GET"
    if body is not None:
        method = "POST"
        headers += [("content-type", "application/x-www-form-urlencoded"),
                    ("content-length", str(len(body)))]
    result = host.request(headers, method=method, path=path, body=body)
    assert result.trap is None, f"the plugin trapped: {result.trap}"
    assert not result.paused_without_call, \
        f"the plugin left the request paused with no call pending: APISIX forwards it: {result!r}"
    assert not result.local_reply_lost, \
        f"the plugin answered but also registered a call: APISIX drops the answer: {result!r}"
    assert not result.crashed, f"the plugin paused with no call registered: APISIX's worker dies: {result!r}"
    return result


def paths(result) -> list[str]:
    return [c.path for c in result.calls]


def assert_denied(result, status: int = 401):
    assert result.local_reply is not None, f"forwarded, expected {status}: {result!r}"
    assert result.local_reply.status == status, result
    assert result.forwarded is None


def tamper(token: str) -> str:
    """The same JWT with one bit of its signature flipped."""
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{base64.urlsafe_b64encode(bytes(raw)).rstrip(b'=').decode()}"


# --- no clock ----------------------------------------------------------------------------------

def test_without_any_clock_tokens_are_refused_with_503_and_anonymous_routes_work(wasm, as1, mode):
    """The host has no clock and WASI's clock_time_get answers 0: `exp` cannot be checked, so no
    token is accepted (503 temporarily_unavailable with Retry-After, counted as
    clock_unavailable), logged once; a route that needs no token still works."""
    cfg = config(as1)
    cfg["routes"].insert(0, {"name": "public", "match": {"prefix": "/public"}, "anonymous": True})
    host = MiniHost(wasm, cfg, shared_data=mode, wasi_clock="zero")
    assert not host.traps and host.configured, host.logs[-5:]
    for token in (jwt(as1), opaque(as1), None):
        result = call(host, token)
        assert_denied(result, 503)
        assert result.local_reply.header("retry-after")
        assert result.local_reply.header("www-authenticate") is None
        assert b"temporarily_unavailable" in result.local_reply.body
        assert not result.calls, "nothing is fetched or introspected for it"
    assert call(host, None, path="/public/x").forwarded is not None
    said = [m for level, m in host.logs if "tells the time" in m]
    assert len(said) == 1, host.logs
    # With a clock, the same plugin and configuration accept the token.
    host = start_host(wasm, cfg, mode)
    assert call(host, jwt(as1)).forwarded is not None


# --- host rules -----------------------------------------------------------------------------------

def test_host_rules_read_the_host_header_where_there_is_no_authority(wasm, as1, mode):
    """APISIX passes HTTP/1's Host as a plain header (no :authority): host rules read it, in any
    spelling of the host (issue 12: a trailing dot or an empty port skipped the rule)."""
    cfg = config(as1)
    cfg["routes"].insert(0, {"name": "admin-host", "match": {"prefix": "/api", "host": "admin.test"},
                             "require": {"scopes": ["admin"]}})
    host = start_host(wasm, cfg, mode)
    token = jwt(as1)
    for name in ("admin.test", "ADMIN.test.", "admin.test:", "admin.test.:8080"):
        result = host.request([("host", name), ("authorization", f"Bearer {token}")], path="/api/items")
        assert_denied(result, 403)
    result = host.request([("host", "admin.test.."), ("authorization", f"Bearer {token}")], path="/api/items")
    assert_denied(result, 400)
    assert call(host, token).forwarded is not None  # host api.test: the plain /api route


# --- JWTs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("jwks", ["discovery", "uri"])
def test_jwt_keys_fetched_on_demand_then_cached_per_vm(wasm, as1, mode, jwks):
    host = start_host(wasm, config(as1, jwks), mode)
    first = call(host, jwt(as1))
    assert first.status == 200 and first.forwarded is not None, first
    # The first JWT makes the key fetch (each document once, one callout after another), at
    # the trusted AS only.
    expected = {DISCOVERY, "/jwks"} if jwks == "discovery" else {"/jwks"}
    assert set(paths(first)) == expected and len(first.calls) == len(expected), first.calls
    assert all(c.upstream == f"127.0.0.1:{as1}" and c.status == 200 for c in first.calls)
    # Keys are fresh: later JWTs (other tokens, other algorithms) make no call at all.
    for resource in ("https://api.test/jwt", "https://api.test/es256", "https://api.test/eddsa"):
        later = call(host, jwt(as1, resource=resource))
        assert later.status == 200 and later.calls == [], later
    assert not host.traps


def test_valid_jwt_forwarded_with_identity_and_spoofed_headers_removed(wasm, as1, mode):
    host = start_host(wasm, config(as1), mode)
    token = jwt(as1)
    claims = tokens.decode_unverified(token)[1]
    spoofed = [("x-tollgate-sub", "admin"), ("x-tollgate-issuer", "evil"),
               ("x-tollgate-client-id", "root"), ("x-tollgate-scope", "admin")]
    result = call(host, token, extra=spoofed)
    assert result.status == 200, result
    fwd = result.forwarded
    for name in ("x-tollgate-sub", "x-tollgate-issuer", "x-tollgate-client-id", "x-tollgate-scope"):
        assert [n for n, _ in fwd].count(name) <= 1, f"{name} forwarded twice: {fwd}"
    assert result.header("x-tollgate-issuer") == "as1"
    assert result.header("x-tollgate-client-id") == "demo-client"
    assert result.header("x-tollgate-sub") == claims["sub"] != "admin"
    assert result.header("x-tollgate-scope") == "read"
    assert result.header("x-tollgate-iss") == f"http://127.0.0.1:{as1}"
    assert result.header("user-agent") == "minihost-test"  # other headers untouched


def test_missing_token_is_401_with_bearer_challenge(wasm, as1, mode):
    host = start_host(wasm, config(as1), mode)
    result = call(host, None, extra=[("x-tollgate-sub", "admin")])
    assert_denied(result)
    challenge = result.local_reply.header("www-authenticate")
    assert challenge is not None and challenge.startswith("Bearer"), result.local_reply
    assert result.calls == []


def test_bad_signature_expired_and_wrong_issuer_are_401(wasm, as1, stranger, expired, mode):
    host = start_host(wasm, config(as1), mode)
    assert call(host, jwt(as1)).status == 200  # keys in place: the denials below are verdicts
    assert_denied(call(host, tamper(jwt(as1))))
    assert_denied(call(host, jwt(stranger)))  # a real JWT from an issuer not configured
    token, usable_at = expired
    time.sleep(max(0.0, usable_at - time.time()))
    result = call(host, token)
    assert_denied(result)
    assert all(c.upstream == f"127.0.0.1:{as1}" for c in host.calls), host.calls  # never the stranger


# --- opaque tokens -----------------------------------------------------------------------------

def test_opaque_token_introspected_at_its_issuer_then_cached_per_vm(wasm, as1, mode):
    host = start_host(wasm, config(as1), mode)
    token = opaque(as1)
    first = call(host, token)
    assert first.status == 200, first
    assert first.header("x-tollgate-issuer") == "as1"
    assert first.header("x-tollgate-client-id") == "demo-client"
    introspections = [c for c in first.calls if c.path == INTROSPECTION]
    assert len(introspections) == 1, first.calls
    assert introspections[0].method == "POST" and introspections[0].status == 200
    assert all(c.upstream == f"127.0.0.1:{as1}" for c in first.calls)
    # Within the answer's TTL the same token is not introspected again (per-VM cache).
    again = call(host, token)
    assert again.status == 200 and again.calls == [], again


def test_garbage_opaque_tokens_are_401(wasm, as1, mode):
    host = start_host(wasm, config(as1), mode)
    unknown = call(host, "A" * 43)  # opaque-shaped: the AS says inactive
    assert_denied(unknown)
    assert INTROSPECTION in paths(unknown), unknown.calls
    shapeless = call(host, "not-a-token")  # neither a JWT nor any issuer's opaque format
    assert_denied(shapeless)
    assert not shapeless.calls, shapeless.calls  # sent to no authorization server
    malformed = call(host, "not a token at all")  # not a b64token: RFC 6750 §3.1 invalid_request
    assert_denied(malformed, 400)


# --- requests with a body (issue 12) -----------------------------------------------------------

BODY = b"qty=1000&item=minihost"


def test_post_with_a_body_is_forwarded_only_if_allowed(wasm, as1, mode):
    """A POST whose opaque token must be introspected: APISIX runs the introspection inside
    the access phase (after proxy_on_request_headers, before anything is forwarded), and hands
    the body to the plugin only if it asked for it; either way the request goes upstream, with
    its body, only once the plugin allowed it."""
    host = start_host(wasm, config(as1), mode)
    allowed = call(host, opaque(as1), body=BODY)
    assert allowed.status == 200 and allowed.forwarded is not None, allowed
    assert allowed.forwarded_body == BODY
    assert allowed.header("x-tollgate-issuer") == "as1"
    assert INTROSPECTION in paths(allowed), allowed.calls
    # The body reaches the plugin only if it set wasm_process_req_body; whatever it does with
    # it, the verdict came first.
    if allowed.body_delivered:
        order = [t.split("(")[0] for t in allowed.trace if t.startswith("> proxy_on_")]
        assert order.index("> proxy_on_request_body") > order.index("> proxy_on_http_call_response")

    denied = call(host, "B" * 43, body=BODY)  # opaque-shaped, unknown to the AS: inactive
    assert_denied(denied)
    assert INTROSPECTION in paths(denied), denied.calls
    assert denied.forwarded is None and denied.forwarded_body is None


def test_post_with_a_body_while_the_as_is_down_is_503_and_not_forwarded(wasm, tmp_path, mode):
    port = free_port()
    proc = servers.start_oidc(port, tmp_path / "state", tmp_path)
    try:
        token = opaque(port)
    finally:
        proc.stop()
    host = start_host(wasm, config(port), mode)
    result = call(host, token, body=BODY)
    assert_denied(result, 503)
    assert result.forwarded is None and result.forwarded_body is None
    assert result.calls and all(c.status is None for c in result.calls), result.calls


# --- the authorization server down -------------------------------------------------------------

def test_as_down_fails_closed_with_503(wasm, tmp_path, mode):
    port = free_port()
    proc = servers.start_oidc(port, tmp_path / "state", tmp_path)
    try:
        fresh_jwt, fresh_opaque = jwt(port), opaque(port)
    finally:
        proc.stop()
    host = start_host(wasm, config(port), mode)
    for token in (fresh_jwt, fresh_opaque):
        assert_denied(call(host, token), 503)
    # It did try (and may back off after a failure); nothing answered.
    assert host.calls and all(c.status is None for c in host.calls), host.calls
    assert not host.traps


# --- the harness itself ------------------------------------------------------------------------

def probe_module(wat: str) -> bytes:
    """A probe module from WAT, with what they all have filled in: a bump allocator for the
    host's answers (;; ALLOCATOR) and the callbacks that end a request (;; REQUEST_END)."""
    wat = wat.replace("  ;; ALLOCATOR\n", """  (global $heap (mut i32) (i32.const 4096))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))
""").replace("  ;; REQUEST_END\n", """  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (i32.const 0))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))
  (func (export "proxy_on_delete") (param i32)))
""")
    return bytes(wasmtime.wat2wasm(wat))


PROBE_WAT = r"""
(module
  (import "env" "proxy_get_current_time_nanoseconds" (func $time (param i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $tick (param i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_no_such_host_call" (func $other (param i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "time=00 tick=00 shared=00 other=00")
  (data (i32.const 1100) "k")
  ;; ALLOCATOR
  ;; writes a status as two decimal digits at $at
  (func $put (param $at i32) (param $v i32)
    (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.div_u (local.get $v) (i32.const 10))))
    (i32.store8 (i32.add (local.get $at) (i32.const 1))
                (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10)))))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  ;; asks for the clock, a tick, shared data and an unknown host call, logs the statuses, and
  ;; pauses the request without registering any call
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $put (i32.const 1029) (call $time (i32.const 2048)))
    (call $put (i32.const 1037) (call $tick (i32.const 1000)))
    (call $put (i32.const 1047)
      (call $shared (i32.const 1100) (i32.const 1) (i32.const 2056) (i32.const 2060) (i32.const 2064)))
    (call $put (i32.const 1056) (call $other (i32.const 0)))
    (drop (call $log (i32.const 2) (i32.const 1024) (i32.const 34)))
    (i32.const 1))
  ;; REQUEST_END
"""


def test_harness_answers_unimplemented_and_a_pause_without_a_call_crashes(mode):
    """The harness is what it claims: the probe module really receives 12 (or OK in dummy
    mode) for the clock, the tick and shared data, 12 for an import no host defines, and a
    request it pauses without registering a call is flagged: APISIX would read rc 1 as a
    pending call and dereference a NULL callout (the worker crashes), so it is neither
    answered nor forwarded."""
    host = MiniHost(probe_module(PROBE_WAT), "{}", shared_data=mode)
    assert host.configured and not host.traps
    result = host.request([("host", "api.test"), ("x-tollgate-sub", "admin")], path="/api")
    want = "12" if mode == "unimplemented" else "00"
    assert ("info", f"time={want} tick={want} shared={want} other=12") in result.logs, result.logs
    assert result.paused_without_call and result.crashed
    assert result.forwarded is None and result.local_reply is None
    names = {"proxy_get_current_time_nanoseconds", "proxy_set_tick_period_milliseconds",
             "proxy_get_shared_data"} if mode == "unimplemented" else set()
    assert set(result.unimplemented) == names | {"proxy_no_such_host_call"}


def test_harness_reports_a_trap_and_answers_503():
    """A module that panics (`unreachable`) on a request: the trap is reported, the request gets
    APISIX's 503, and the dead VM takes no more requests."""
    wat = PROBE_WAT.replace("(i32.const 1))\n  ;; REQUEST_END", "(unreachable))\n  ;; REQUEST_END")
    assert wat != PROBE_WAT
    host = MiniHost(probe_module(wat), "{}")
    result = host.request([("host", "api.test")], path="/api")
    assert result.trap is not None and "unreachable" in result.trap.message
    assert result.trap.during == "proxy_on_request_headers"
    assert result.status == 503 and result.forwarded is None
    with pytest.raises(Exception, match="trap in proxy_on_request_headers"):
        host.request([("host", "api.test")], path="/api")


ANSWER_AND_CALL_WAT = """
(module
  (import "env" "proxy_send_local_response"
    (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call"
    (func $call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "UPSTREAM")
  (data (i32.const 1100) "HEADERS")
  ;; ALLOCATOR
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  ;; answers 401 and, in the same callback, registers a call
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $reply (i32.const 401) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                       (i32.const 0) (i32.const 0) (i32.const -1)))
    (drop (call $call (i32.const 1024) (i32.const UPSTREAM_LEN) (i32.const 1100)
                      (i32.const HEADERS_LEN) (i32.const 0) (i32.const 0) (i32.const 0)
                      (i32.const 0) (i32.const 500) (i32.const 2048)))
    (i32.const 1))
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32))
  ;; REQUEST_END
"""


def test_harness_makes_calls_after_the_callback_and_drops_an_answer_like_apisix():
    """A module that answers 401 and registers a call in the same callback: the call is made
    after the callback (to a closed loopback port: it fails, and the module hears so), then the
    request goes upstream, its 401 dropped, as wasm-nginx-module does."""
    upstream = f"127.0.0.1:{free_port()}"  # nothing listens there
    headers = encode_map([(":method", "GET"), (":path", "/probe"), (":authority", upstream)])
    wat = (ANSWER_AND_CALL_WAT.replace("UPSTREAM_LEN", str(len(upstream)))
           .replace("HEADERS_LEN", str(len(headers))).replace("UPSTREAM", upstream)
           .replace("HEADERS", "".join(f"\\{b:02x}" for b in headers)))
    host = MiniHost(probe_module(wat), "{}")
    result = host.request([("host", "api.test")], path="/api")
    assert result.local_reply_lost and result.local_reply is None
    assert result.forwarded == [("host", "api.test")]
    assert [(c.upstream, c.method, c.path, c.status) for c in result.calls] == \
        [(upstream, "GET", "/probe", None)]
    assert "ConnectionRefused" in result.calls[0].error
    order = [t for t in result.trace if t.startswith(("< proxy_on_request_headers",
                                                     "> proxy_on_http_call_response"))]
    assert order == ["< proxy_on_request_headers = 1",
                     "> proxy_on_http_call_response(1, 0, 0, 0, 0)"], result.trace


BODY_WAT = r"""
(module
  (import "env" "proxy_set_property" (func $setp (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buf (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "wasm_process_req_body")
  (data (i32.const 1100) "true")
  ;; ALLOCATOR
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  ;; asks for the body (ASK) and lets the headers go on
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (i32.const ASK)
      (then (drop (call $setp (i32.const 1024) (i32.const 21) (i32.const 1100) (i32.const 4)))))
    (i32.const 0))
  ;; logs the body it is given and answers BODY_RC
  (func (export "proxy_on_request_body") (param i32) (param $size i32) (param i32) (result i32)
    (drop (call $buf (i32.const 0) (i32.const 0) (local.get $size) (i32.const 2048) (i32.const 2052)))
    (drop (call $log (i32.const 2) (i32.load (i32.const 2048)) (i32.load (i32.const 2052))))
    (i32.const BODY_RC))
  ;; REQUEST_END
"""


@pytest.mark.parametrize("ask,body_rc", [(1, 0), (0, 0), (1, 1)], ids=["asked", "not-asked", "asked-pause"])
def test_harness_delivers_the_body_as_apisix_does(ask, body_rc):
    """The body reaches proxy_on_request_body once, whole, with end_of_stream 1, after the
    headers callback, only if the plugin set wasm_process_req_body; a Pause from it with no
    call registered crashes the worker, like a Pause from the headers callback."""
    host = MiniHost(probe_module(BODY_WAT.replace("ASK", str(ask)).replace("BODY_RC", str(body_rc))), "{}")
    body = b"a=1&b=" + b"x" * 5000
    result = host.request([("host", "api.test"), ("content-length", str(len(body)))],
                          method="POST", path="/api", body=body)
    callbacks = [t for t in result.trace if t.startswith("> proxy_on_request")]
    if not ask:
        assert callbacks == ["> proxy_on_request_headers(2, 0, 1)"], result.trace
        assert not result.body_delivered and result.forwarded_body == body
        return
    assert callbacks == ["> proxy_on_request_headers(2, 0, 1)",
                         f"> proxy_on_request_body(2, {len(body)}, 1)"], result.trace
    assert result.body_delivered
    assert ("info", body.decode()) in result.logs
    if body_rc == 0:
        assert result.forwarded is not None and result.forwarded_body == body
    else:
        assert result.crashed and result.forwarded is None and result.local_reply is None


# --- Envoy-only calls ----------------------------------------------------------------------------

def test_clear_route_cache_is_asked_once_then_skipped(wasm, as1):
    """The gateway asks Envoy to pick the route again after rewriting a call
    (`clear_route_cache`, a foreign function). Here it is not there (12): asked once, then never
    again, and the calls are still forwarded, rewritten for the issuer."""
    cfg = config(as1, "uri")
    cfg["issuers"][0]["gateway"] = {"endpoints": {"userinfo": f"http://127.0.0.1:{as1}/me"}}
    cfg["gateway"] = {"base_path": "/oauth2", "public_origins": ["http://api.test"]}
    host = start_host(wasm, cfg, "unimplemented")
    for _ in range(3):
        result = call(host, jwt(as1), path="/oauth2/as1/userinfo")
        assert result.forwarded is not None, result
        assert result.header("x-tollgate-as") == "as1"
        assert result.header(":path") == "/me"
    assert host.unimplemented["proxy_call_foreign_function"] == 1, host.unimplemented
    assert not host.traps


def test_certificate_bound_tokens_read_the_client_certificate_from_nginx(wasm, as1, mode, tmp_path):
    """RFC 8705 on APISIX: wasm-nginx-module answers a property by the nginx variable of that
    name, so the plugin reads `$ssl_client_escaped_cert` (URL-encoded PEM, what nginx gives for
    a TLS client certificate). A token oidc-provider bound to certificate A passes with A and
    is refused with B or without one."""
    certs = pki.make(tmp_path / "pki")
    token = tokens.client_credentials(
        f"http://127.0.0.1:{as1}/token", "mtls-client", "mtls-secret", scope="read",
        resource="https://api.test/jwt",
        extra_headers={"x-forwarded-client-cert": pki.xfcc(certs.a.pem)})["access_token"]
    assert tokens.decode_unverified(token)[1]["cnf"] == {"x5t#S256": certs.a.x5t}
    cfg = config(as1)
    cfg["issuers"][0]["mtls"] = {"mode": "allowed"}
    host = start_host(wasm, cfg, mode)

    def with_cert(identity):
        variables = {"ssl_client_escaped_cert": pki.url_encoded_pem(identity.pem)} if identity else {}
        headers = [("host", "api.test"), ("authorization", f"Bearer {token}")]
        result = host.request(headers, path="/api/items", variables=variables)
        assert result.trap is None and not result.crashed, result
        return result

    allowed = with_cert(certs.a)
    assert allowed.local_reply is None, allowed.local_reply
    assert dict(allowed.forwarded)["x-tollgate-cnf"] == f"mtls;x5t={certs.a.x5t}"
    for identity, why in [(certs.b, "another client certificate"), (None, "none was presented")]:
        refused = with_cert(identity)
        assert_denied(refused)
        assert why in refused.local_reply.header("www-authenticate"), refused.local_reply


# --- policy decisions (issue 16) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def cerbos(tmp_path_factory):
    """A real Cerbos (AuthZEN PDP) with the rig's policies: owners may read their documents."""
    work = tmp_path_factory.mktemp("minihost-cerbos")
    proc = servers.start_cerbos(free_port(), work / "policies", work)
    yield proc
    proc.stop()


def authorize_config(as1: int, pdp_port: int) -> dict:
    cfg = config(as1, jwks="uri")
    cfg["pdps"] = {"cerbos": {"url": f"http://127.0.0.1:{pdp_port}/access/v1/evaluation",
                              "upstream": f"127.0.0.1:{pdp_port}"}}
    cfg["routes"].insert(0, {"name": "docs", "match": {"prefix": "/api/docs/"}, "require": {"authorize": {
        "pdp": "cerbos", "subject": {"id_claim": "client_id"},
        "resource": {"type": "document", "path": "/api/docs/{owner}/{id}", "id": "{id}",
                     "properties": {"owner": "{owner}"}},
        "actions": {"GET": "read", "POST": "write"}}}})
    return cfg


def test_policy_decisions_are_asked_from_the_request(wasm, as1, cerbos, mode):
    """APISIX-like: the request that needs a decision makes the PDP call itself, after its
    introspection when the token is opaque (one call at a time), and is decided in its own
    context; the owner is allowed (then from the per-VM decision cache), anyone else 403, a
    body goes upstream only after a yes."""
    host = start_host(wasm, authorize_config(as1, cerbos.port), mode)
    evaluation = "/access/v1/evaluation"
    # Different documents per kind: both tokens are demo-client's, so the same question would
    # be answered from the cache.
    for kind, token in (("jwt", jwt(as1)), ("opaque", opaque(as1))):
        own = call(host, token, path=f"/api/docs/demo-client/{kind}-1")
        assert own.status == 200, own
        assert paths(own)[-1] == evaluation, own.calls
        assert own.calls[-1].upstream == f"127.0.0.1:{cerbos.port}"
        again = call(host, token, path=f"/api/docs/demo-client/{kind}-1")
        assert again.status == 200 and evaluation not in paths(again), again
        other = call(host, token, path=f"/api/docs/alice/{kind}-1")
        assert_denied(other, 403)
        assert evaluation in paths(other), other.calls
        posted = call(host, token, path=f"/api/docs/demo-client/{kind}-2", body=BODY)
        assert posted.status == 200 and posted.forwarded_body == BODY, posted
        refused = call(host, token, path=f"/api/docs/alice/{kind}-2", body=BODY)
        assert_denied(refused, 403)
        assert refused.forwarded_body is None


def test_policy_decisions_fail_closed_when_the_pdp_is_down(wasm, as1, tmp_path, mode):
    pdp = servers.start_cerbos(free_port(), tmp_path / "policies", tmp_path)
    pdp.stop()
    host = start_host(wasm, authorize_config(as1, pdp.port), mode)
    result = call(host, jwt(as1), path="/api/docs/demo-client/1", body=BODY)
    assert_denied(result, 503)
    assert result.forwarded_body is None


# --- upstream tokens (issue 17) ----------------------------------------------------------------

NEXT_API = "https://next.test/api"


def upstream_token_config(as1: int, resource: str = NEXT_API) -> dict:
    """config() plus as1's token endpoint for RFC 8693 exchanges (the rig's exchanger client),
    /api/next exchanging the caller's token for `resource`, and /api/signed with a backend token
    signed by the gateway's Ed25519 key."""
    from joserfc.jwk import OKPKey
    cfg = config(as1, jwks="uri")
    cfg["issuers"][0]["token_exchange"] = {
        "endpoint": f"http://127.0.0.1:{as1}/token", "upstream": f"127.0.0.1:{as1}",
        "client_id": "tollgate-exchanger", "client_secret": "tollgate-exchanger-secret"}
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "gw-1"})
    cfg["backend_token"] = {"issuer": "https://gateway.test", "keys": [key.as_dict(private=True)]}
    cfg["routes"][:0] = [
        {"match": {"prefix": "/api/next"}, "require": {"upstream_token": {"exchange": {"resource": resource}}}},
        {"match": {"prefix": "/api/signed"}, "require": {"upstream_token": {"sign": {"audience": "orders"}}}},
    ]
    return cfg


def test_tokens_are_exchanged_from_the_request_and_the_upstream_gets_the_new_one(wasm, as1, mode):
    """APISIX-like: the request that needs an exchange makes the call to its issuer's token
    endpoint itself, after its introspection when the token is opaque, one call at a time, and
    goes upstream with the exchanged token (audience https://next.test, act naming the
    exchanging client); then the per-VM cache answers. A body goes upstream only after the
    exchange answered."""
    host = start_host(wasm, upstream_token_config(as1), mode)
    for kind, token in (("jwt", jwt(as1)), ("opaque", opaque(as1))):
        first = call(host, token, path="/api/next/items", body=BODY)
        assert first.status == 200, first
        assert paths(first)[-1] == "/token", first.calls
        if kind == "opaque":
            assert INTROSPECTION in paths(first), first.calls
        assert first.forwarded_body == BODY
        exchanged = first.header("authorization").removeprefix("Bearer ")
        assert exchanged != token
        claims = tokens.decode_unverified(exchanged)[1]
        assert claims["aud"] == "https://next.test" and claims["act"] == {"sub": "tollgate-exchanger"}, claims
        # The identity headers are the caller's.
        assert first.header("x-tollgate-client-id") == "demo-client"
        again = call(host, token, path="/api/next/items")
        assert again.status == 200 and "/token" not in paths(again), again.calls
        assert again.header("authorization") == f"Bearer {exchanged}"


def test_an_exchange_the_as_refuses_is_403_and_its_absence_503(wasm, as1, tmp_path, mode):
    host = start_host(wasm, upstream_token_config(as1, resource="https://unknown.test/api"), mode)
    refused = call(host, jwt(as1), path="/api/next/items", body=BODY)
    assert_denied(refused, 403)
    assert refused.forwarded_body is None
    assert b"access_denied" in refused.local_reply.body
    down = free_port()
    cfg = upstream_token_config(as1)
    cfg["issuers"][0]["token_exchange"] |= {"endpoint": f"http://127.0.0.1:{down}/token",
                                            "upstream": f"127.0.0.1:{down}"}
    host = start_host(wasm, cfg, mode)
    result = call(host, jwt(as1), path="/api/next/items", body=BODY)
    assert_denied(result, 503)
    assert result.forwarded_body is None
    assert result.local_reply.header("retry-after") == "5"


def test_backend_tokens_are_signed_and_inbound_copies_removed(wasm, as1, mode):
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import KeySet
    host = start_host(wasm, upstream_token_config(as1), mode)
    jwks = call(host, None, path="/.well-known/tollgate/jwks.json")
    assert jwks.status == 200 and jwks.forwarded is None
    keys = KeySet.import_key_set(__import__("json").loads(jwks.local_reply.body))
    token = jwt(as1)
    result = call(host, token, path="/api/signed/x", extra=[("X-Tollgate-JWT", "forged")])
    assert result.status == 200, result
    backend = [v for n, v in result.forwarded if n == "x-tollgate-jwt"]
    assert len(backend) == 1 and backend[0] != "forged", result.forwarded
    verified = jose_jwt.decode(backend[0], keys, algorithms=["EdDSA"])
    assert verified.claims["aud"] == "orders" and verified.claims["iss"] == "https://gateway.test"
    assert verified.claims["client_id"] == "demo-client"
    assert verified.claims["orig_iss"] == f"http://127.0.0.1:{as1}"
    assert result.header("authorization") == f"Bearer {token}"
