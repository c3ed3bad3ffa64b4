"""Routes' `require.authorize` (issue 16): Tollgate as an OpenID AuthZEN 1.0 policy enforcement
point, in the real Envoy, with both real authorization servers and a real PDP, Cerbos
(tests/rig/pdp/policies: an owner may read, write and delete their document; "admin" in the
subject's `roles` may do anything).

Envoy's `pdp` cluster is the rig's forwarder (tests/rig/pdp_delay.py) in front of Cerbos: it
passes every request through unchanged, counts the evaluations, can hold them (a slow PDP)
and checks the PEP's credentials. Cerbos' own audit log counts the decisions it made.

Routes (before the standard stack's):
- `/api/docs/{owner}/{id}`: subject id from `sub`, `roles` as a subject property; decisions
  kept 2 s (`true`) and 1 s (`false`).
- `/api/cdocs/{owner}/{id}`: the same with the subject id from `client_id` (both servers put
  it in JWTs and in introspection answers; opaque tokens of a client-credentials grant have no
  `sub` at DOT).
- `/api/ldocs/{owner}/{id}`: as `/api/docs`, decisions kept 60 s.
- `/api/hdocs`: the resource id from the `x-doc-id` header (no owner: only the admin role).

The upstream's own log is the witness: a request refused here never reaches it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import servers
import stack as rig_stack
import wire
from procs import free_port

TIMEOUT = 15
PDP_SECRET = "pdp-s3cret"
PDP_TIMEOUT_MS = 1000
TTL_S = 2
NEGATIVE_TTL_S = 1


def authorize_rule(id_claim: str, path: str, ttl_s: int = TTL_S) -> dict:
    return {
        "pdp": "cerbos",
        "subject": {"type": "user", "id_claim": id_claim, "properties": {"roles": "roles"}},
        "resource": {"type": "document", "path": path, "id": "{id}", "properties": {"owner": "{owner}"}},
        "actions": {"GET": "read", "HEAD": "read", "POST": "write", "PUT": "write", "DELETE": "delete"},
        "context": ["issuer", "scopes", "client_id"],
        "ttl_s": ttl_s,
        "negative_ttl_s": NEGATIVE_TTL_S,
    }


class AuthzStack(rig_stack.Stack):
    """The standard stack, two Envoy workers, plus Cerbos behind the forwarder."""

    def start(self) -> "AuthzStack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pdp_port = free_port()
        self.procs["cerbos"] = servers.start_cerbos(free_port(), self.workdir / "policies", self.workdir)
        self.procs["pdp"] = servers.start_pdp_delay(self.pdp_port, self.cerbos.port, self.workdir)
        self.pdp_control("POST", "/__rig/require-auth", f"Bearer {PDP_SECRET}".encode())
        try:
            super().start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        super().stop()
        for name in ("pdp", "cerbos"):
            if name in self.procs:
                self.procs[name].stop()

    @property
    def cerbos(self) -> servers.CerbosProc:
        return self.procs["cerbos"]  # type: ignore[return-value]

    def pdp_control(self, method: str, path: str, body: bytes = b""):
        return servers.pdp_control(self.pdp_port, method, path, body)

    def evaluations(self) -> int:
        return self.pdp_control("GET", "/__rig/stats")["evaluations"]

    def clusters(self) -> dict[str, int]:
        return {**super().clusters(), "pdp": self.pdp_port}

    def plugin_config(self) -> dict:
        cfg = super().plugin_config()
        cfg["pdps"] = {"cerbos": {
            "url": f"http://127.0.0.1:{self.cerbos.port}/access/v1/evaluation",
            "upstream": "pdp",
            "timeout_ms": PDP_TIMEOUT_MS,
            "auth": {"bearer": PDP_SECRET},
        }}
        cfg["routes"][0:0] = [
            {"name": "docs", "match": {"prefix": "/api/docs/"},
             "require": {"authorize": authorize_rule("sub", "/api/docs/{owner}/{id}")}},
            {"name": "cdocs", "match": {"prefix": "/api/cdocs/"},
             "require": {"authorize": authorize_rule("client_id", "/api/cdocs/{owner}/{id}")}},
            # The resource id from a request header (present exactly once).
            {"name": "hdocs", "match": {"prefix": "/api/hdocs"}, "require": {"authorize": {
                "pdp": "cerbos", "subject": {"properties": {"roles": "roles"}},
                "resource": {"type": "document", "id_header": "x-doc-id"}}}},
            # Decisions kept a minute: a burst on a loaded machine may take longer than TTL_S.
            {"name": "ldocs", "match": {"prefix": "/api/ldocs/"},
             "require": {"authorize": authorize_rule("sub", "/api/ldocs/{owner}/{id}", ttl_s=60)}},
        ]
        return cfg


@pytest.fixture(scope="module")
def az(wasm, tmp_path_factory):
    s = AuthzStack(tmp_path_factory.mktemp("authorize"), concurrency=2)
    s.start()
    yield s
    s.stop()


def arrivals(st: rig_stack.Stack) -> list[str]:
    return [ln for ln in st.procs["upstream"].log_text().splitlines() if ln.startswith("> ")]


class Witness:
    """The upstream's log from now on."""

    def __init__(self, st: rig_stack.Stack):
        self.st, self.mark = st, len(arrivals(st))

    def saw(self, settle: float = 0.3) -> list[str]:
        time.sleep(settle)
        return arrivals(self.st)[self.mark:]


def doc() -> str:
    """A document id no earlier request used (so no decision is cached for it)."""
    return uuid.uuid4().hex[:12]


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def assert_forbidden(r: requests.Response) -> None:
    assert r.status_code == 403, (r.status_code, r.text)
    assert r.json() == {"error": "insufficient_permissions",
                        "error_description": "the policy decision point denied this request"}
    assert "www-authenticate" not in {k.lower() for k in r.headers}


def assert_unavailable(r: requests.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.json() == {"error": "temporarily_unavailable",
                        "error_description": "the request cannot be authorized right now"}
    assert r.headers.get("retry-after") == "5"


def tokens_of(az: AuthzStack) -> dict[str, tuple[str, str, str]]:
    """kind -> (token, route, the token's subject id on that route)."""
    return {
        "as1-jwt": (az.as1_token(), "docs", "demo-client"),
        "as1-opaque": (az.as1_opaque_token(), "cdocs", "demo-client"),
        "as2-jwt": (az.as2_token(), "docs", "dot-client"),
        "as2-opaque": (az.as2_opaque_token(), "cdocs", "dot-opaque"),
    }


KINDS = ["as1-jwt", "as1-opaque", "as2-jwt", "as2-opaque"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_owner_is_allowed_and_nobody_else_on_the_same_route(az, kind):
    token, route, me = tokens_of(az)[kind]
    d = doc()
    seen = Witness(az)
    r = requests.get(f"{az.url}/api/{route}/{me}/{d}", headers=bearer(token), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == f"/api/{route}/{me}/{d}"
    for other in ("alice", "demo-client" if me != "demo-client" else "dot-client"):
        r = requests.get(f"{az.url}/api/{route}/{other}/{d}", headers=bearer(token), timeout=TIMEOUT)
        assert_forbidden(r)
        r = requests.delete(f"{az.url}/api/{route}/{other}/{d}", headers=bearer(token), timeout=TIMEOUT)
        assert_forbidden(r)
    assert seen.saw() == [f"> GET /api/{route}/{me}/{d}"]


@pytest.mark.parametrize("kind", ["jwt", "opaque"])
def test_an_admin_role_from_as1s_claims_may_do_anything(az, kind):
    """admin-client's tokens carry `roles: ["admin"]` (AS-1's extraTokenClaims; for an opaque
    token, in the introspection answer). The route passes the claim as the subject property
    `roles`, and Cerbos' `claimed_admin` derived role allows every action on anyone's document;
    demo-client, without the claim, is refused the same calls."""
    resource = "https://api.test/jwt" if kind == "jwt" else None
    admin = az.as1_token(scope="read write", resource=resource, client=("admin-client", "admin-secret")) \
        if resource else az.as1_opaque_token(scope="read write", client=("admin-client", "admin-secret"))
    plain = az.as1_token(scope="read write") if resource else az.as1_opaque_token(scope="read write")
    route = "docs" if kind == "jwt" else "cdocs"
    d = doc()
    for method in ("GET", "PUT", "DELETE"):
        url = f"{az.url}/api/{route}/alice/{d}"
        r = requests.request(method, url, headers=bearer(admin), timeout=TIMEOUT)
        assert r.status_code == 200, (method, r.text)
        assert_forbidden(requests.request(method, url, headers=bearer(plain), timeout=TIMEOUT))


def test_what_the_pdp_is_asked(az):
    """The evaluation request as Cerbos received it (through the forwarder): subject, resource
    from the path template, action from the method map, context; with the PEP's credentials
    (the forwarder refuses calls without them, so every 200 above also proves them)."""
    token = az.as1_token(scope="read write")
    d = doc()
    az.pdp_control("POST", "/__rig/reset-stats")
    r = requests.put(f"{az.url}/api/docs/demo-client/{d}", headers=bearer(token), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    (call,) = az.pdp_control("GET", "/__rig/requests")
    assert call["method"] == "POST" and call["path"] == "/access/v1/evaluation"
    body = json.loads(call["body"])
    assert body == {
        "subject": {"type": "user", "id": "demo-client"},
        "resource": {"type": "document", "id": d, "properties": {"owner": "demo-client"}},
        "action": {"name": "write"},
        "context": {"issuer": "as1", "scopes": ["read", "write"], "client_id": "demo-client"},
    }, body
    assert az.pdp_control("GET", "/__rig/stats")["refused_auth"] == 0


def test_decisions_are_cached_for_their_ttl_and_a_policy_change_shows_after_it(az):
    """An allowed question is not asked again for TTL_S; a policy change at the PDP (owners may
    no longer read) shows once the cached decision expires, without touching Envoy."""
    token = az.as1_token()
    d = doc()
    url = f"{az.url}/api/docs/demo-client/{d}"
    policy = (az.cerbos.policy_dir / "document.yaml").read_text()
    assert requests.get(url, headers=bearer(token), timeout=TIMEOUT).status_code == 200
    before = az.evaluations()
    assert requests.get(url, headers=bearer(token), timeout=TIMEOUT).status_code == 200
    assert az.evaluations() == before, "a cached decision was asked again"
    probe = servers.authzen_request("demo-client", d, "read", resource_properties={"owner": "demo-client"})
    try:
        servers.set_policy(az.cerbos, "document.yaml", policy.replace('actions: ["read", "write", "delete"]',
                                                                      'actions: ["write", "delete"]'),
                           probe, expect=False, reload=True)
        # Still cached (at most TTL_S after the first decision), then asked again and refused.
        deadline = time.monotonic() + TTL_S + 2
        while time.monotonic() < deadline:
            r = requests.get(url, headers=bearer(token), timeout=TIMEOUT)
            if r.status_code == 403:
                break
            assert r.status_code == 200, r.text
            time.sleep(0.2)
        assert_forbidden(r)
    finally:
        servers.set_policy(az.cerbos, "document.yaml", policy, probe, expect=True, reload=True)


def test_pdp_down_is_503_and_back_is_allowed_without_restarting_envoy(az):
    token = az.as1_token()
    envoy_pid = az.envoy.pid
    az.cerbos.stop()
    try:
        seen = Witness(az)
        assert_unavailable(requests.get(f"{az.url}/api/docs/demo-client/{doc()}", headers=bearer(token),
                                        timeout=TIMEOUT))
        # A body is not forwarded either.
        assert_unavailable(requests.post(f"{az.url}/api/docs/demo-client/{doc()}", data=b"x" * 5000,
                                         headers=bearer(az.as1_token(scope="read write")), timeout=TIMEOUT))
        assert seen.saw() == []
    finally:
        az.cerbos.start()
    r = requests.get(f"{az.url}/api/docs/demo-client/{doc()}", headers=bearer(token), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert az.envoy.pid == envoy_pid


def test_a_slow_pdp_times_out_with_503(az):
    token = az.as1_token()
    az.pdp_control("POST", f"/__rig/delay?ms={PDP_TIMEOUT_MS + 1500}")
    try:
        seen = Witness(az)
        t = time.monotonic()
        assert_unavailable(requests.get(f"{az.url}/api/docs/demo-client/{doc()}", headers=bearer(token),
                                        timeout=TIMEOUT))
        elapsed = time.monotonic() - t
        assert PDP_TIMEOUT_MS / 1000 - 0.1 <= elapsed < PDP_TIMEOUT_MS / 1000 + 1.5, elapsed
        assert seen.saw() == []
    finally:
        az.pdp_control("POST", "/__rig/delay?ms=0")
        # The held call still reaches Cerbos when its delay ends: let it, so later tests'
        # counts start clean.
        deadline = time.monotonic() + 5
        while az.pdp_control("GET", "/__rig/stats")["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.1)


def test_50_concurrent_identical_requests_make_one_pdp_call(az):
    """50 requests asking the same question at once, over both Envoy workers (keep-alive
    connections opened first, so both workers hold requests): one evaluation reaches Cerbos
    (counted by the forwarder and by Cerbos' audit log), and every request is allowed."""
    token = az.as1_token()
    url = f"{az.url}/api/ldocs/demo-client/{doc()}"
    az.pdp_control("POST", "/__rig/delay?ms=400")  # every request arrives while the call is out
    before, decisions_before = az.evaluations(), len(az.cerbos.decisions())
    barrier = threading.Barrier(50)
    sessions = [requests.Session() for _ in range(50)]
    for s in sessions:
        assert s.get(f"{az.url}/public/warm", timeout=TIMEOUT).status_code == 200

    def one(s: requests.Session) -> int:
        barrier.wait()
        return s.get(url, headers=bearer(token), timeout=TIMEOUT).status_code

    try:
        with ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(one, sessions))
    finally:
        az.pdp_control("POST", "/__rig/delay?ms=0")
        for s in sessions:
            s.close()
    assert statuses == [200] * 50
    assert az.evaluations() - before == 1
    time.sleep(0.5)  # Cerbos writes its audit log asynchronously
    assert len(az.cerbos.decisions()) - decisions_before == 1
    stats = az.stats("tollgate.route.ldocs.authz.")
    assert stats["tollgate.route.ldocs.authz.call"] == 1, stats
    assert stats["tollgate.route.ldocs.authz.allow"] == 50, stats
    # Both workers held requests: the other one's joined the call through the shared lease.
    assert stats["tollgate.route.ldocs.authz.coalesced"] + stats.get("tollgate.route.ldocs.authz.cache_hit", 0) == 49, stats


BODY = json.dumps({"title": "x" * 3000}).encode()


@pytest.mark.parametrize("shape", ["first-packet", "later", "chunked", "chunked-trailers", "h2", "h2-trailers"])
def test_a_body_waits_for_the_decision(az, shape):
    """A write with a body while the PDP takes 300 ms: allowed for the owner (the whole body
    reaches the upstream once, after the decision), refused for anyone else (nothing does)."""
    token = az.as1_token(scope="read write")
    az.pdp_control("POST", "/__rig/delay?ms=300")
    try:
        for owner, allowed in (("demo-client", True), ("alice", False)):
            path = f"/api/docs/{owner}/{doc()}"
            headers = [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json")]
            seen = Witness(az)
            t = time.monotonic()
            reply = wire.send(az.listener_port, wire.request(shape, "POST", path, headers, BODY,
                                                             host=f"127.0.0.1:{az.listener_port}"))
            if allowed:
                assert reply.status == 200, reply
                assert reply.json()["body_len"] == len(BODY)
                assert seen.saw() == [f"> POST {path}"]
                assert time.monotonic() - t >= 0.3
            else:
                assert reply.status == 403, reply
                assert seen.saw() == []
    finally:
        az.pdp_control("POST", "/__rig/delay?ms=0")


def test_counters_per_route_and_decision(az):
    token = az.as1_token()
    before = az.stats("tollgate.route.docs.authz.")
    d = doc()
    assert requests.get(f"{az.url}/api/docs/demo-client/{d}", headers=bearer(token), timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{az.url}/api/docs/demo-client/{d}", headers=bearer(token), timeout=TIMEOUT).status_code == 200
    assert_forbidden(requests.get(f"{az.url}/api/docs/alice/{d}", headers=bearer(token), timeout=TIMEOUT))
    after = az.stats("tollgate.route.docs.authz.")
    delta = {k.rsplit(".", 1)[1]: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta["allow"] == 2 and delta["deny"] == 1 and delta["call"] == 2 and delta["cache_hit"] == 1, delta
    hist = requests.get(f"http://127.0.0.1:{az.envoy.admin_port}/stats?filter=tollgate.pdp.cerbos.latency_ms",
                        timeout=5).text
    assert "tollgate.pdp.cerbos.latency_ms" in hist, hist


def test_a_resource_id_from_a_header_must_be_sent_exactly_once(az):
    """`resource.id_header`: one `x-doc-id` is the document the PDP is asked about (admin-client
    may, demo-client may not: no owner is known); none, or two (over HTTP/1.1 as two lines), is
    refused with 403 before any PDP call."""
    admin = az.as1_token(client=("admin-client", "admin-secret"))
    plain = az.as1_token()
    d = doc()
    az.pdp_control("POST", "/__rig/reset-stats")
    r = requests.get(f"{az.url}/api/hdocs", headers={**bearer(admin), "x-doc-id": d}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert_forbidden(requests.get(f"{az.url}/api/hdocs", headers={**bearer(plain), "x-doc-id": d}, timeout=TIMEOUT))
    (first, second) = az.pdp_control("GET", "/__rig/requests")
    assert json.loads(first["body"])["resource"] == {"type": "document", "id": d}
    seen = Witness(az)
    for headers in ([], [("x-doc-id", d), ("x-doc-id", d + "x")]):
        reply = wire.send(az.listener_port, wire.request(
            "get", "GET", "/api/hdocs", [("Authorization", f"Bearer {admin}"), *headers],
            host=f"127.0.0.1:{az.listener_port}"))
        assert reply.status == 403, reply
        assert reply.json()["error_description"] == "the request names no resource the policy covers"
    assert seen.saw() == []
    assert az.evaluations() == 2, "refused before any PDP call"
