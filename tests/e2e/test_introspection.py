"""Opaque access tokens end to end: RFC 7662 introspection at the one issuer that minted the
token (oidc-provider for AS-1, django-oauth-toolkit for AS-2), what is cached and for how long,
what happens when the issuer is down or slow, and one call per token however many requests
carry it at once.

Every check looks at both sides: what the client got (status, WWW-Authenticate, Retry-After),
what the upstream saw (identity headers), what the authorization servers served
(`GET /__rig/stats`) and Tollgate's counters. Tests that stop, slow down or reconfigure an AS
build their own deployment (`new_stack`). Every wait is a poll with a deadline.
"""

from __future__ import annotations

import secrets
import threading
import time

import pytest
import requests

import stack as rig_stack
import tokens
from stack import upstream_saw

API = "/api/things"
HINTED = "/api/hinted"
REALM = "tollgate"
INTROSPECTION_PATH = {"as1": "/token/introspection", "as2": "/o/introspect/"}
# Paths the background key/metadata refresh may hit at any time (not caused by a request).
BACKGROUND_PATHS = {
    "/jwks",
    "/.well-known/openid-configuration",
    "/o/.well-known/jwks.json",
    "/.well-known/oauth-authorization-server/o",
}

INACTIVE = "the token is not active"
NO_RULE = "no configured issuer recognises this token"
BAD_HINT = "the issuer named by the request is not accepted here"
NOT_ACCEPTED_HERE = "the token's issuer is not accepted for this resource"


# --------------------------------------------------------------------------------- helpers


def as_base(st: rig_stack.Stack, which: str) -> str:
    return st.as1_issuer if which == "as1" else f"http://127.0.0.1:{st.as2_port}"


def rig(st: rig_stack.Stack, which: str, method: str, path: str) -> dict:
    r = requests.request(method, f"{as_base(st, which)}/__rig/{path}", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def served(st: rig_stack.Stack, which: str) -> dict[str, int]:
    """Requests the AS served, by path (since start or the last reset)."""
    return rig(st, which, "GET", "stats")["requests"]


def introspected(st: rig_stack.Stack, which: str) -> int:
    """Introspection requests the AS served."""
    return served(st, which).get(INTROSPECTION_PATH[which], 0)


def foreground(stats: dict[str, int]) -> dict[str, int]:
    return {p: n for p, n in stats.items() if p not in BACKGROUND_PATHS}


def counter(st: rig_stack.Stack, name: str, issuer: str | None = None) -> int:
    full = f"tollgate.issuer.{issuer}.{name}" if issuer else f"tollgate.{name}"
    return st.stats().get(full, 0)


def intro(st: rig_stack.Stack, name: str, issuer: str) -> int:
    return counter(st, f"introspection.{name}", issuer)


def failures(st: rig_stack.Stack, issuer: str) -> dict[str, int]:
    prefix = f"tollgate.issuer.{issuer}.introspection.failed."
    return {n[len(prefix):]: v for n, v in st.stats(prefix).items()}


def opaque(st: rig_stack.Stack, which: str) -> str:
    return st.as1_opaque_token() if which == "as1" else st.as2_opaque_token()


def revoke(st: rig_stack.Stack, which: str, token: str, client: tuple[str, str] | None = None) -> None:
    if which == "as1":
        url, client = f"{st.as1_issuer}/token/revocation", client or ("demo-client", "demo-secret")
    else:
        url, client = f"{st.as2_issuer}/revoke_token/", client or ("dot-opaque", "dot-opaque-secret")
    assert tokens.revoke(url, token, *client) == 200


def as_says(st: rig_stack.Stack, which: str, token: str) -> dict:
    """What the AS itself answers about the token (counts as one introspection at that AS)."""
    if which == "as1":
        return tokens.introspect(f"{st.as1_issuer}/token/introspection", token, "rs-client", "rs-secret")
    return tokens.introspect(f"{st.as2_issuer}/introspect/", token, "rs:client@2", "s3cr3t+/=%&")


def garbage() -> str:
    """An opaque-looking token no rule recognises (not 43 chars, no dot_ prefix)."""
    return "nobody-" + secrets.token_hex(8)


def poll(what: str, check, timeout: float, interval: float = 0.1):
    """Calls check() until it returns something other than None; fails after timeout seconds.
    (Not "truthy": a requests.Response with a 4xx/5xx status is falsy.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def assert_allowed(r: requests.Response, path: str = API) -> dict:
    assert r.status_code == 200, (r.status_code, r.headers, r.text)
    assert "www-authenticate" not in {k.lower() for k in r.headers}
    assert r.json()["path"] == path  # it reached the upstream
    return upstream_saw(r)


def assert_invalid_token(r: requests.Response, description: str, dpop: bool = True) -> None:
    """dpop: the route also takes DPoP (its challenge follows); /api/hinted takes only as2,
    whose DPoP is off (tests/rig/stack.py), so it names Bearer only."""
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["WWW-Authenticate"] == (
        f'Bearer realm="{REALM}", error="invalid_token", error_description="{description}"'
        + (', DPoP algs="ES256 EdDSA"' if dpop else "")
    )
    assert r.json() == {"error": "invalid_token", "error_description": description}


def assert_unavailable(r: requests.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["Retry-After"] == "5"
    assert r.json()["error"] == "temporarily_unavailable"
    assert "www-authenticate" not in {k.lower() for k in r.headers}  # not a token problem


def timed_call(st: rig_stack.Stack, path: str, token: str, **kw) -> tuple[requests.Response, float]:
    t0 = time.monotonic()
    r = st.call(path, token, **kw)
    return r, time.monotonic() - t0


def concurrent_calls(st: rig_stack.Stack, path: str, token: str, n: int) -> list[tuple[int, float]]:
    """n requests with the same token at once, each on its own connection; (status, seconds)."""
    barrier = threading.Barrier(n)
    results: list[tuple[int, float] | None] = [None] * n

    def send(i: int) -> None:
        barrier.wait(timeout=10)
        t = time.monotonic()
        try:
            r = requests.get(st.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=15)
            results[i] = (r.status_code if r.text == "direct" or path != DIRECT else -r.status_code,
                          time.monotonic() - t)
        except requests.RequestException as e:  # reported as status 0
            results[i] = (0, time.monotonic() - t)
            print(f"request {i}: {e!r}")

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert all(r is not None for r in results), "a request did not come back"
    return results  # type: ignore[return-value]


def worker_connections(st: rig_stack.Stack) -> dict[str, int]:
    return {n.split(".")[-2]: v for n, v in st.stats("listener.").items()
            if ".worker_" in n and n.endswith(".downstream_cx_total")}


# --------------------------------------------------------------------------------- 1. passes


@pytest.mark.parametrize("which", ["as1", "as2"])
def test_active_opaque_token_passes_with_identity_then_cache_hit(stack, which):
    token = opaque(stack, which)
    n_at_as = introspected(stack, which)
    calls, allowed, hits = intro(stack, "calls", which), counter(stack, "allowed", which), counter(stack, "cache_hit", which)

    seen = assert_allowed(stack.call(API, token))
    assert seen["x-tollgate-issuer"] == which
    assert seen["x-tollgate-scope"] == "read"
    if which == "as1":
        assert seen["x-tollgate-client-id"] == "demo-client"
        assert seen["x-tollgate-iss"] == stack.as1_issuer
    else:  # DOT answers scope, exp, client_id only (no iss)
        assert seen["x-tollgate-client-id"] == "dot-opaque"
        assert "x-tollgate-iss" not in seen
    assert "x-tollgate-sub" not in seen  # client_credentials: neither AS names a subject
    assert introspected(stack, which) == n_at_as + 1
    assert intro(stack, "calls", which) == calls + 1
    assert counter(stack, "allowed", which) == allowed + 1
    assert counter(stack, "cache_hit", which) == hits

    seen2 = assert_allowed(stack.call(API, token))
    assert seen2["x-tollgate-client-id"] == seen["x-tollgate-client-id"]
    assert introspected(stack, which) == n_at_as + 1, "the second call must not reach the AS"
    assert intro(stack, "calls", which) == calls + 1
    assert counter(stack, "cache_hit", which) == hits + 1
    assert counter(stack, "allowed", which) == allowed + 2


def test_user_opaque_tokens_forward_the_subject(stack):
    # AS-1: authorization code flow without resource= gives an opaque token with sub.
    t1 = tokens.oidc_id_token(stack.as1_issuer, "demo-client", "demo-secret", "http://127.0.0.1/cb",
                              scope="openid read", login="alice")["access_token"]
    assert len(t1) == 43
    seen = assert_allowed(stack.call(API, t1))
    assert seen["x-tollgate-sub"] == "alice"
    assert seen["x-tollgate-client-id"] == "demo-client"
    assert seen["x-tollgate-iss"] == stack.as1_issuer
    assert seen["x-tollgate-issuer"] == "as1"
    assert "read" in seen["x-tollgate-scope"].split()
    # AS-2: DOT gives username (no sub); Tollgate forwards it as the subject.
    t2 = tokens.dot_code_token(stack.as2_issuer, "dot-opaque-code", "dot-opaque-code-secret",
                               "http://127.0.0.1/cb", user="bob")["access_token"]
    assert t2.startswith("dot_")
    seen = assert_allowed(stack.call(API, t2))
    assert seen["x-tollgate-sub"] == "bob"
    assert seen["x-tollgate-client-id"] == "dot-opaque-code"
    assert seen["x-tollgate-issuer"] == "as2"
    assert seen["x-tollgate-scope"] == "read"


# --------------------------------------------------------------------------------- 2. routing


@pytest.mark.parametrize("which,other", [("as1", "as2"), ("as2", "as1")])
def test_each_opaque_token_goes_to_its_own_issuer_only(stack, which, other):
    token = opaque(stack, which)
    mine, theirs = served(stack, which), foreground(served(stack, other))
    calls_other = intro(stack, "calls", other)

    assert_allowed(stack.call(API, token))
    assert introspected(stack, which) == mine.get(INTROSPECTION_PATH[which], 0) + 1
    assert foreground(served(stack, other)) == theirs, f"{other} must not see the {which} token"
    assert intro(stack, "calls", other) == calls_other


def test_unrecognised_token_is_refused_without_asking_anyone(stack):
    before = {w: foreground(served(stack, w)) for w in ("as1", "as2")}
    calls = {w: intro(stack, "calls", w) for w in ("as1", "as2")}
    invalid = counter(stack, "denied.invalid_token")

    assert_invalid_token(stack.call(API, garbage()), NO_RULE)
    # on the hinted route without the hint too
    assert_invalid_token(stack.call(HINTED, garbage()), NO_RULE, dpop=False)

    assert counter(stack, "denied.invalid_token") == invalid + 2
    for w in ("as1", "as2"):
        assert foreground(served(stack, w)) == before[w]
        assert intro(stack, "calls", w) == calls[w]


def test_issuer_header_hint_on_the_hinted_route(stack):
    before = {w: foreground(served(stack, w)) for w in ("as1", "as2")}
    n2 = introspected(stack, "as2")
    calls = {w: intro(stack, "calls", w) for w in ("as1", "as2")}
    inactive2 = intro(stack, "inactive", "as2")
    denied_inactive2 = counter(stack, "denied.inactive_token", "as2")

    # No rule matches, the client names as2: introspected at AS-2 (which does not know it).
    r = stack.call(HINTED, garbage(), headers={"x-token-issuer": "as2"})
    assert_invalid_token(r, INACTIVE, dpop=False)
    assert introspected(stack, "as2") == n2 + 1
    assert intro(stack, "calls", "as2") == calls["as2"] + 1
    assert intro(stack, "inactive", "as2") == inactive2 + 1
    assert counter(stack, "denied.inactive_token", "as2") == denied_inactive2 + 1
    assert foreground(served(stack, "as1")) == before["as1"]

    # as1 is not accepted on this route: refused, and nobody is asked.
    after_as2 = foreground(served(stack, "as2"))
    invalid = counter(stack, "denied.invalid_token")
    r = stack.call(HINTED, garbage(), headers={"x-token-issuer": "as1"})
    assert_invalid_token(r, BAD_HINT, dpop=False)
    assert counter(stack, "denied.invalid_token") == invalid + 1
    # an AS-1 opaque token (its rule names as1) is refused here without a call as well
    t1 = stack.as1_opaque_token()
    before_as1 = foreground(served(stack, "as1"))
    assert_invalid_token(stack.call(HINTED, t1, headers={"x-token-issuer": "as2"}), NOT_ACCEPTED_HERE, dpop=False)
    assert foreground(served(stack, "as1")) == before_as1
    assert foreground(served(stack, "as2")) == after_as2
    assert intro(stack, "calls", "as1") == calls["as1"]
    assert intro(stack, "calls", "as2") == calls["as2"] + 1

    # and an AS-2 opaque token passes there (the dot_ rule decides, the hint is not needed)
    seen = assert_allowed(stack.call(HINTED, stack.as2_opaque_token()), path=HINTED)
    assert seen["x-tollgate-issuer"] == "as2"


# --------------------------------------------------------------------------------- 3. revocation


def test_revoked_token_is_refused_once_the_cached_answer_ages_out(new_stack):
    ttl = {"introspection": {"max_ttl_s": 2, "negative_ttl_s": 60}}
    st = new_stack(issuer_overrides={"as1": ttl, "as2": ttl})
    st.start()
    for which in ("as1", "as2"):
        token = opaque(st, which)
        n0 = introspected(st, which)
        t_sent = time.monotonic()
        assert_allowed(st.call(API, token))
        assert introspected(st, which) == n0 + 1

        revoke(st, which, token)
        assert as_says(st, which, token) == {"active": False}  # the AS really revoked it
        n1 = introspected(st, which)
        hits = counter(st, "cache_hit", which)
        assert time.monotonic() - t_sent < 1.5, "too slow to check the cached answer in time"
        assert_allowed(st.call(API, token))  # still the cached positive answer
        assert counter(st, "cache_hit", which) == hits + 1
        assert introspected(st, which) == n1

        inactive = intro(st, "inactive", which)
        statuses: list[int] = []

        def refused():
            r = st.call(API, token)
            statuses.append(r.status_code)
            return r if r.status_code != 200 else None

        r = poll(f"the revoked {which} token to be refused", refused, timeout=2 + 3, interval=0.2)
        t_refused = time.monotonic() - t_sent
        assert_invalid_token(r, INACTIVE)
        print(f"\n{which}: revoked token refused {t_refused:.2f} s after its first use "
              f"(max_ttl 2 s; statuses {statuses})")
        assert t_refused >= 1.9
        assert set(statuses[:-1]) == {200}
        assert introspected(st, which) == n1 + 1  # exactly one new call, when the entry lapsed
        assert intro(st, "inactive", which) == inactive + 1

        # negative_ttl 60 s: the next refusal comes from the cache, the AS is not asked
        negative = intro(st, "cache_hit_negative", which)
        denied = counter(st, "denied.inactive_token", which)
        assert_invalid_token(st.call(API, token), INACTIVE)
        assert intro(st, "cache_hit_negative", which) == negative + 1
        assert counter(st, "denied.inactive_token", which) == denied + 1
        assert introspected(st, which) == n1 + 1
        assert intro(st, "inactive", which) == inactive + 1


# --------------------------------------------------------------------------------- 4. refresh token


def test_as1_refresh_token_is_not_a_bearer_token(stack):
    resp = tokens.oidc_id_token(stack.as1_issuer, "demo-client", "demo-secret", "http://127.0.0.1/cb",
                                scope="openid offline_access read")
    refresh = resp["refresh_token"]
    assert len(refresh) == 43  # matches the as1 opaque rule like an access token
    said = as_says(stack, "as1", refresh)
    assert said["active"] is True and "token_type" not in said  # the trap require_token_type closes

    n = introspected(stack, "as1")
    calls, inactive = intro(stack, "calls", "as1"), intro(stack, "inactive", "as1")
    denied = counter(stack, "denied.inactive_token", "as1")
    assert_invalid_token(stack.call(API, refresh), INACTIVE)
    assert introspected(stack, "as1") == n + 1
    assert intro(stack, "calls", "as1") == calls + 1
    assert intro(stack, "inactive", "as1") == inactive + 1
    assert counter(stack, "denied.inactive_token", "as1") == denied + 1
    # the access token of the same grant passes
    seen = assert_allowed(stack.call(API, resp["access_token"]))
    assert seen["x-tollgate-sub"] == "alice"


# --------------------------------------------------------------------------------- 5. AS stopped


def test_as_stopped_fails_closed_then_recovers_without_envoy_restart(new_stack):
    st = new_stack()
    st.start()
    assert_allowed(st.call(API, st.as2_opaque_token()))  # the endpoint is known and works
    token = st.as2_opaque_token()  # minted before the stop, never presented
    envoy_pid = st.envoy.popen.pid
    before = failures(st, "as2")
    unavailable = counter(st, "denied.introspection_unavailable", "as2")

    st.procs["as2"].stop()
    r, latency = timed_call(st, API, token)
    assert_unavailable(r)
    after = failures(st, "as2")
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    print(f"\nAS-2 stopped: 503 in {latency * 1000:.0f} ms (timeout_ms 2000); failures {delta}")
    assert latency < 2.0
    # Envoy answers a refused connection with its own 503: kind "status"
    assert delta == {"status": 1}, delta
    assert counter(st, "denied.introspection_unavailable", "as2") == unavailable + 1

    st.start_as2()  # same port, same state dir (sqlite keeps the token)
    t_up = time.monotonic()
    statuses: list[int] = []

    def passes():
        r = st.call(API, token)
        statuses.append(r.status_code)
        if r.status_code == 503:
            assert_unavailable(r)
            return None
        return r

    r = poll("the AS-2 token to pass after AS-2 came back", passes, timeout=5, interval=0.2)
    assert_allowed(r)
    print(f"AS-2 back: token passes {time.monotonic() - t_up:.2f} s after restart (statuses {statuses})")
    assert st.envoy.popen.pid == envoy_pid and st.envoy.popen.poll() is None
    assert introspected(st, "as2") == 1  # the new AS process: one call, the failure was not cached


# --------------------------------------------------------------------------------- 6. slow AS


def test_slow_as_times_out_at_the_introspection_timeout(new_stack):
    st = new_stack(issuer_overrides={"as2": {"introspection": {"timeout_ms": 1000}}})
    st.start()
    assert_allowed(st.call(API, st.as2_opaque_token()))
    token = st.as2_opaque_token()  # before the delay: the token endpoint is slowed too
    try:
        assert rig(st, "as2", "POST", "delay?ms=3000") == {"delay_ms": 3000}
        timeouts = intro(st, "failed.timeout", "as2")
        r, latency = timed_call(st, API, token)
        assert_unavailable(r)
        print(f"\nAS-2 delayed 3 s, timeout_ms 1000: 503 in {latency * 1000:.0f} ms")
        assert 0.9 <= latency < 2.5
        assert intro(st, "failed.timeout", "as2") == timeouts + 1
        assert sum(failures(st, "as2").values()) == timeouts + 1
    finally:
        rig(st, "as2", "POST", "delay?ms=0")
    r, latency = timed_call(st, API, token)
    assert_allowed(r)
    print(f"delay removed: token passes in {latency * 1000:.0f} ms")


# --------------------------------------------------------------------------------- 7. concurrency


N_CONCURRENT = 50
AS_DELAY_MS = 1500  # keeps the one call in flight until all requests have arrived
# Envoy answers this path itself (after Tollgate let the request through): 50 requests released
# at once would otherwise open 50 upstream connections to the rig's echo server, whose listen
# backlog (ThreadingHTTPServer default 5) overflows now and then -> Envoy 503 UF, not Tollgate's.
DIRECT = "/api/direct"
DIRECT_ROUTES = [{"name": "direct", "prefix": DIRECT, "direct_response": {"status": 200, "body": "direct"}}]


def start_direct_stack(new_stack, concurrency: int) -> rig_stack.Stack:
    st = new_stack()
    st.workdir.mkdir(parents=True, exist_ok=True)
    st.procs["upstream"] = rig_stack.servers.start_upstream(st.upstream_port, st.workdir)
    st.start_as1()
    st.start_as2()
    st.start_envoy(concurrency=concurrency, routes=DIRECT_ROUTES + rig_stack.envoy.DEFAULT_ROUTES)
    assert_allowed(st.call(API, st.as2_opaque_token()))  # the introspection endpoint is known
    return st


def one_call_for_many(st: rig_stack.Stack, label: str) -> dict:
    """N_CONCURRENT requests with one fresh AS-2 opaque token while AS-2 answers slowly; returns
    the measured counts."""
    token = st.as2_opaque_token()
    n0 = introspected(st, "as2")
    calls0, coalesced0 = intro(st, "calls", "as2"), intro(st, "coalesced", "as2")
    allowed0, hits0 = counter(st, "allowed", "as2"), counter(st, "cache_hit", "as2")
    cx0 = worker_connections(st)
    try:
        rig(st, "as2", "POST", f"delay?ms={AS_DELAY_MS}")
        results = concurrent_calls(st, DIRECT, token, N_CONCURRENT)
    finally:
        rig(st, "as2", "POST", "delay?ms=0")
    cx = {w: v - cx0.get(w, 0) for w, v in worker_connections(st).items()}
    m = {
        "statuses": sorted({s for s, _ in results}),
        "at_as": introspected(st, "as2") - n0,
        "calls": intro(st, "calls", "as2") - calls0,
        "coalesced": intro(st, "coalesced", "as2") - coalesced0,
        "allowed": counter(st, "allowed", "as2") - allowed0,
        "cache_hit": counter(st, "cache_hit", "as2") - hits0,
        "connections_per_worker": cx,
        "latency_s": (round(min(t for _, t in results), 2), round(max(t for _, t in results), 2)),
    }
    print(f"\n{label}: {m}")
    return m


def test_fifty_concurrent_requests_one_introspection_one_worker(new_stack):
    st = start_direct_stack(new_stack, concurrency=1)
    m = one_call_for_many(st, "concurrency 1")
    assert m["connections_per_worker"] == {"worker_0": N_CONCURRENT}
    assert m["statuses"] == [200]
    assert m["at_as"] == 1
    assert m["calls"] == 1
    assert m["coalesced"] == N_CONCURRENT - 1
    assert m["allowed"] == N_CONCURRENT
    assert m["latency_s"][0] >= 1.0  # every request waited for the one (slow) answer


def test_fifty_concurrent_requests_one_introspection_two_workers(new_stack):
    st = start_direct_stack(new_stack, concurrency=2)
    rounds = [one_call_for_many(st, f"concurrency 2, round {i + 1}") for i in range(3)]
    for m in rounds:
        assert len(m["connections_per_worker"]) == 2 and all(m["connections_per_worker"].values()), m
        assert m["statuses"] == [200], m
        assert m["allowed"] == N_CONCURRENT, m
        assert m["latency_s"][0] >= 1.0, m
    for m in rounds:
        # One call per Envoy process: the worker without the call waits on the lease holder's
        # answer in the shared cache (its requests are counted as coalesced, then cache_hit).
        assert m["at_as"] == 1, m
        assert m["calls"] == 1, m
        assert m["coalesced"] == N_CONCURRENT - 1, m


# --------------------------------------------------------------------------------- 8. JWTs too


def test_jwts_are_introspected_too_and_revocation_bites_after_the_ttl(new_stack):
    st = new_stack(issuer_overrides={"as2": {"introspection": {"introspect_jwts": True, "max_ttl_s": 2}}})
    st.start()
    jwt = st.as2_token()
    assert tokens.decode_unverified(jwt)[0]["typ"] == "at+jwt"
    n0 = introspected(st, "as2")
    calls0 = intro(st, "calls", "as2")
    t_sent = time.monotonic()
    seen = assert_allowed(st.call(API, jwt))
    assert seen["x-tollgate-issuer"] == "as2"
    assert seen["x-tollgate-iss"] == st.as2_issuer  # claims from the verified JWT
    assert seen["x-tollgate-client-id"] == "dot-client"
    assert introspected(st, "as2") == n0 + 1
    assert intro(st, "calls", "as2") == calls0 + 1

    # as1 JWTs are not introspected (introspect_jwts is off there)
    n_as1 = introspected(st, "as1")
    assert_allowed(st.call(API, st.as1_token()))
    assert introspected(st, "as1") == n_as1

    revoke(st, "as2", jwt, client=("dot-client", "dot-secret"))
    assert as_says(st, "as2", jwt) == {"active": False}
    n1 = introspected(st, "as2")
    hits = counter(st, "cache_hit", "as2")
    assert time.monotonic() - t_sent < 1.5
    assert_allowed(st.call(API, jwt))  # cached until min(exp, 2 s)
    assert counter(st, "cache_hit", "as2") == hits + 1
    assert introspected(st, "as2") == n1

    def refused():
        r = st.call(API, jwt)
        return r if r.status_code != 200 else None

    r = poll("the revoked JWT to be refused", refused, timeout=2 + 3, interval=0.2)
    t_refused = time.monotonic() - t_sent
    assert_invalid_token(r, INACTIVE)
    print(f"\nrevoked DOT JWT refused {t_refused:.2f} s after its first use (max_ttl 2 s)")
    assert t_refused >= 1.9
    assert introspected(st, "as2") == n1 + 1
    assert intro(st, "inactive", "as2") == 1
    assert intro(st, "calls", "as2") == calls0 + 2


# --------------------------------------------------------------------------------- 9. our credentials refused


def test_rejected_client_credentials_fail_closed_and_the_log_names_the_issuer_not_the_secret(new_stack):
    wrong_secret = "not-the-secret-" + secrets.token_hex(8)
    st = new_stack(issuer_overrides={"as2": {"introspection": {"client_secret": wrong_secret}}})
    st.start()
    before = failures(st, "as2")
    r = st.call(API, st.as2_opaque_token())
    assert_unavailable(r)
    after = failures(st, "as2")
    assert after.get("client_rejected", 0) == before.get("client_rejected", 0) + 1
    time.sleep(0.3)  # log flush interval is 100 ms
    log = st.envoy.log_text()
    assert "issuer as2: introspection failed: HTTP 403" in log
    assert "client credentials" in log
    assert wrong_secret not in log
