"""`callouts: per_request` in the real Envoy: the request-driven worker (the one Tollgate uses
on hosts without a tick or shared data, such as APISIX) driven by a real host's callouts.

Envoy delivers a callout's answer to the HTTP context that dispatched it and resumes a paused
request only through `continue_stream` on that context, so these tests show that a request
waiting for keys or an introspection makes its own callouts, is resumed by their answers in its
own context, and that nothing is left hanging when many requests arrive at once at a cold
worker. The gateway is off (it needs background refreshes; the configuration refuses it with
per_request). The authorization servers' own counters (`GET /__rig/stats`) show every call.
"""

from __future__ import annotations

import concurrent.futures
import time

import pytest
import requests

import stack as rig_stack
from stack import upstream_saw

API = "/api/things"
AS1_KEYS = ("/.well-known/openid-configuration", "/jwks")
AS1_INTROSPECTION = "/token/introspection"
AS2_INTROSPECTION = "/o/introspect/"


def served(st: rig_stack.Stack, which: str) -> dict[str, int]:
    base = st.as1_issuer if which == "as1" else f"http://127.0.0.1:{st.as2_port}"
    r = requests.get(f"{base}/__rig/stats", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["requests"]


def start(new_stack, concurrency: int = 1) -> rig_stack.Stack:
    st = new_stack(
        concurrency=concurrency,
        config_overrides={"callouts": "per_request", "gateway": None},
        issuer_overrides={"as1": {"gateway": None}, "as2": {"gateway": None}},
    )
    st.procs["upstream"] = rig_stack.servers.start_upstream(st.upstream_port, st.workdir)
    st.start_as1()
    st.start_as2()
    st.start_envoy(routes=rig_stack.envoy.DEFAULT_ROUTES)
    return st


def test_keys_and_introspection_come_from_the_requests_that_need_them(new_stack):
    st = start(new_stack)
    assert "callouts per request (configured)" in st.envoy.log_text()
    # Nothing is fetched in the background: no tick-driven refresh.
    assert not any(served(st, "as1").get(p) for p in AS1_KEYS), served(st, "as1")

    # A request without a token is answered at once, and makes no callout.
    r = st.call(API)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert not any(served(st, "as1").get(p) for p in AS1_KEYS)

    # The first JWT makes the discovery and JWKS fetches itself, waits for them, goes through.
    token = st.as1_token()
    r = st.call(API, token)
    assert r.status_code == 200, r.text
    assert upstream_saw(r)["x-tollgate-issuer"] == "as1"
    after_first = served(st, "as1")
    assert all(after_first.get(p) == 1 for p in AS1_KEYS), after_first

    # Later JWTs use the keys held: no further fetch while they are fresh.
    for _ in range(3):
        assert st.call(API, st.as1_token()).status_code == 200
    assert all(served(st, "as1").get(p) == 1 for p in AS1_KEYS), served(st, "as1")

    # Opaque tokens: introspected by the request, at the issuer that minted each, then cached.
    for which, path in (("as1", AS1_INTROSPECTION), ("as2", AS2_INTROSPECTION)):
        opaque = st.as1_opaque_token() if which == "as1" else st.as2_opaque_token()
        before = served(st, which).get(path, 0)
        r = st.call(API, opaque)
        assert r.status_code == 200, (which, r.text)
        assert upstream_saw(r)["x-tollgate-issuer"] == which
        assert st.call(API, opaque).status_code == 200
        assert served(st, which).get(path, 0) == before + 1, (which, served(st, which))

    # A garbage opaque-shaped token: one introspection at AS-1, refused with 401.
    r = st.call(API, "A" * 43)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_cold_burst_is_decided_without_hanging(new_stack, concurrency):
    """40 requests at once on cold workers: each waiting request has its own fetch or call in
    flight (no coalescing across requests here), and every one is decided, correctly."""
    st = start(new_stack, concurrency)
    jwts = [st.as1_token() for _ in range(20)]
    opaque = [st.as1_opaque_token() for _ in range(10)]
    bad = ["A" * 43] * 5 + [jwts[0][:-4] + "AAAA"] * 5  # inactive / bad signature
    cases = [(t, 200) for t in jwts + opaque] + [(t, 401) for t in bad]

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(cases)) as pool:
        results = list(pool.map(lambda c: (st.call(API, c[0]).status_code, c[1]), cases))
    assert [got for got, _ in results] == [want for _, want in results], results

    # Every fetch and call went to AS-1 (the token's issuer); the burst made at most one key
    # fetch per waiting request and at least one. Opaque requests count too: one that must
    # find its introspection endpoint walks AS-1's fetch plan (discovery, then the JWKS), so
    # how many fetch depends on how many start before the first fetch lands.
    seen = served(st, "as1")
    assert 1 <= seen.get("/jwks", 0) <= len(cases), seen
    assert not served(st, "as2").get(AS2_INTROSPECTION), served(st, "as2")
    # After the burst, a new JWT needs no fetch.
    jwks_before = served(st, "as1").get("/jwks", 0)
    assert st.call(API, st.as1_token()).status_code == 200
    if concurrency == 1:
        assert served(st, "as1").get("/jwks", 0) == jwks_before


def test_authorization_server_down_fails_closed(new_stack):
    st = start(new_stack)
    jwt, opaque = st.as1_token(), st.as1_opaque_token()
    st.procs["as1"].stop()
    for token in (jwt, opaque):
        r = st.call(API, token)
        assert r.status_code == 503, r.text
        assert r.headers.get("retry-after")
    # Back up (same keys, same state dir): requests pass again without an Envoy restart, once
    # the failed fetch's retry interval is over.
    st.start_as1()
    token = st.as1_token()
    deadline = time.monotonic() + 15
    while (status := st.call(API, token).status_code) == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert status == 200
