"""One JWT signature verification per distinct token per Envoy process, also when the same
never-seen token reaches both workers of an Envoy with `--concurrency 2` at the same moment
(the cross-worker claim in the shared token cache: docs/host-notes.md, "Single flight").

Fresh AS-1 JWTs, each sent at once on many kept-alive connections spread over both workers.
Verifications are counted as Tollgate counts them: `allowed - cache_hit` (a request that waited
for another worker's verification is answered from the cache, so it is a cache hit). Before the
claim, the same run gave 166-219 verifications for 160 tokens (two workers missing the cache at
once both verified); `verify_coalesced` (printed) shows how many requests waited instead.
"""

from __future__ import annotations

import http.client
import time

import stack as rig_stack

N_TOKENS = 160
PER_WORKER = 4  # kept-alive connections per worker that send each token
MAX_CONNECTIONS = 40
# Envoy answers this path itself once Tollgate let the request through, so no upstream (and no
# upstream connection pool) is involved: what is measured is Tollgate on the two workers.
DIRECT = "/api/direct"
# AS-1's resource indicators, one per signing algorithm (RS256, ES256, PS256, EdDSA): the slower
# the verification, the longer the window in which the other worker can miss the cache too.
RESOURCES = ["https://api.test/es256", "https://api.test/jwt", "https://api.test/ps256", "https://api.test/eddsa"]
DIRECT_ROUTES = [{"name": "direct", "prefix": DIRECT, "direct_response": {"status": 200, "body": "direct"}}]


def per_worker_connections(st: rig_stack.Stack) -> dict[str, int]:
    """Connections each worker accepted so far."""
    return {n.split(".")[-2]: v for n, v in st.stats("listener.").items()
            if ".worker_" in n and n.endswith(".downstream_cx_total")}


def get(conn: http.client.HTTPConnection, token: str) -> int:
    conn.request("GET", DIRECT, headers={"Authorization": f"Bearer {token}"})
    r = conn.getresponse()
    r.read()
    return r.status


def test_each_fresh_jwt_is_verified_once_with_two_workers(new_stack):
    st = new_stack()
    st.start_as1()  # no upstream: every request here is answered by Envoy's direct_response
    st.start_envoy(concurrency=2, routes=DIRECT_ROUTES + rig_stack.envoy.DEFAULT_ROUTES)
    warm = st.as1_token()
    fresh = [st.as1_token(resource=RESOURCES[i % len(RESOURCES)]) for i in range(N_TOKENS)]
    assert len(set(fresh + [warm])) == N_TOKENS + 1

    # Kept-alive connections, opened one at a time until both workers hold a few (the kernel
    # spreads them); each is put in its worker's list, then the lists are interleaved so that
    # every round reaches the two workers alternately, first request first.
    by_worker: dict[str, list[http.client.HTTPConnection]] = {}
    opened = 0
    while opened < MAX_CONNECTIONS:
        seen = per_worker_connections(st)
        conn = http.client.HTTPConnection("127.0.0.1", st.envoy.listener_port, timeout=15)
        assert get(conn, warm) == 200  # accepted (and the issuer's keys are on that worker)
        opened += 1
        now = per_worker_connections(st)
        worker = next(w for w, n in now.items() if n > seen.get(w, 0))
        by_worker.setdefault(worker, []).append(conn)
        if len(by_worker) == 2 and min(len(c) for c in by_worker.values()) >= PER_WORKER:
            break
    sizes = {w: len(c) for w, c in sorted(by_worker.items())}
    assert len(sizes) == 2 and min(sizes.values()) >= PER_WORKER, sizes
    lists = [c[:PER_WORKER] for c in by_worker.values()]
    conns = [conn for pair in zip(*lists) for conn in pair]
    for extra in (c for cs in by_worker.values() for c in cs[PER_WORKER:]):
        extra.close()

    p = "tollgate.issuer.as1."
    before = st.stats(p)
    statuses: dict[int, int] = {}
    slowest = 0.0
    t0 = time.monotonic()
    for token in fresh:
        # The same never-seen token on every connection at once: written to all sockets first,
        # then every answer read.
        t = time.monotonic()
        for conn in conns:
            conn.request("GET", DIRECT, headers={"Authorization": f"Bearer {token}"})
        for conn in conns:
            r = conn.getresponse()
            r.read()
            statuses[r.status] = statuses.get(r.status, 0) + 1
        slowest = max(slowest, time.monotonic() - t)
    elapsed = time.monotonic() - t0
    after = st.stats(p)
    for conn in conns:
        conn.close()

    d = {k[len(p):]: after.get(k, 0) - before.get(k, 0) for k in after}
    verifications = d.get("allowed", 0) - d.get("cache_hit", 0)
    print(f"\n{N_TOKENS} fresh tokens x {len(conns)} connections ({PER_WORKER} per worker): statuses {statuses}, "
          f"allowed {d.get('allowed', 0)}, cache_hit {d.get('cache_hit', 0)}, "
          f"verifications {verifications}, verify_coalesced {d.get('verify_coalesced', 0)}; "
          f"{elapsed:.2f} s, slowest round {slowest * 1000:.1f} ms")
    assert statuses == {200: N_TOKENS * len(conns)}
    assert d.get("allowed", 0) == N_TOKENS * len(conns)
    assert verifications == N_TOKENS
