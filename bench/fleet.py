"""The fleet on paper, measured: how an authorization server's load grows with Envoy processes.

Tollgate's caches (verified tokens, introspection answers, fetched keys) live in Envoy's shared
data, which the workers of ONE Envoy process share and no other process sees. So an AS behind a
fleet of P Envoys (an Istio mesh's sidecars, a gateway fleet) is asked about each token once per
process that sees it, and its keys are fetched once per process:

    introspections / s  ~  P x D / L      D: distinct active opaque tokens each process sees in
                                          a cache lifetime L = min(introspection.max_ttl_s,
                                          the token's remaining exp); inactive ones: one per
                                          negative_ttl_s
    JWKS GETs / s       ~  P x I / R      I: issuers with remote keys, R: refresh_interval_s
                        +  <= P x I / m   made-up or rotated kids: at most one early refetch per
                                          refetch_min_interval_s (m) per issuer and process
    discovery GETs      =  P x I          once per process start (the jwks_uri is then known)

JWTs are verified in-process: whatever their number, they cost the AS nothing but the key
fetches. Workers do not multiply any of it (single flight across workers, through shared data).

This module checks those terms against a real AS, the rig's django-oauth-toolkit
(tests/rig/as_dot: opaque dot_ tokens introspected, JWT access tokens signed with its OIDC key,
keys found by OIDC discovery), whose own request count per path (/__rig/stats) is the witness,
next to each Envoy's Tollgate counters (admin /stats). For P = 1 and P = 3 Envoy processes
(each its own Tollgate VM, all on 127.0.0.1, all pointing at the one AS):

  1. within the TTL: N distinct opaque tokens and M distinct JWTs, each sent `passes` times to
     every process (the processes in parallel): the AS must see exactly P x N introspections,
     each Envoy exactly N introspection calls and N + M checks (allowed - cache_hit);
  2. after the TTL: once introspection.max_ttl_s has passed since the first pass ended, one
     more pass: exactly P x N introspections more (every answer aged out in every process),
     and no JWT checked again (a verified JWT is cached until its exp);
  3. key refresh: discovery GETs exactly P, JWKS GETs within each process's bounds for its
     uptime W, 1 + floor(W / R) (taking refresh and tick delays into account);
  4. unknown kids: K JWTs with made-up kids sent to every process over S seconds (every one
     refused): JWKS GETs at least one per process and at most P x (1 + floor(S / m)) -- not
     P x K.

A count outside its bound fails the check; bench/run then exits 1. The sizes are small enough for
bench/run --quick (10 opaque tokens, 1-3 s intervals) or, with --fleet, 200 opaque tokens and
intervals of seconds (the defaults are minutes: the intervals here are shortened so that the
terms show within a run; the arithmetic is the same).

Run: bench/run --fleet [--quick] [--concurrency N], or .venv/bin/python bench/fleet.py [--quick].
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as b  # noqa: E402  (bench/bench.py: Envoy config pieces, drive, counters, tokens)
from procs import VENV_PY, Proc  # noqa: E402  (tests/rig, on the path bench.py set)
import tokens as rig_tokens  # noqa: E402

from jwcrypto import jwk, jwt  # noqa: E402

ISSUER = "fleet"  # the issuer's name in Tollgate's configuration (its counters' prefix)
PREFIX = f"tollgate.issuer.{ISSUER}."
JWT_CLIENT = ("dot-client", "dot-secret")  # DOT client whose access tokens are RS256 JWTs
DISCOVERY_PATH = "/o/.well-known/openid-configuration"  # <issuer>/.well-known/openid-configuration
# bench.DOT_INTROSPECT_PATH, written out: bench.py may not be initialised yet when this module is
# (python bench/fleet.py imports bench, which imports fleet).
INTROSPECT_PATH = "/o/introspect/"


@dataclass
class Sizes:
    """One run's sizes and Tollgate's intervals (shortened from the defaults so they show)."""

    opaque: int  # N: distinct opaque tokens
    jwts: int  # M: distinct JWTs
    passes: int  # passes over all tokens within the TTL
    ttl_s: int  # introspection.max_ttl_s (default 300)
    refresh_s: int  # refresh_interval_s (default 300)
    refetch_min_s: int  # refetch_min_interval_s (default 10)
    rogue: int  # K: JWTs with made-up kids, per process
    rogue_s: float  # S: sent over this many seconds
    connections: int  # connections per process while driving


FULL = Sizes(opaque=200, jwts=20, passes=3, ttl_s=20, refresh_s=10, refetch_min_s=2, rogue=200, rogue_s=8.0,
             connections=4)
QUICK = Sizes(opaque=10, jwts=2, passes=2, ttl_s=3, refresh_s=3, refetch_min_s=1, rogue=20, rogue_s=2.0,
              connections=2)
PROCESSES = (1, 3)


def tollgate_fleet_config(dot_port: int, s: Sizes) -> dict:
    """One issuer, the DOT AS: JWTs by its OIDC keys (discovery through the Envoy cluster as-dot),
    opaque dot_ tokens by introspection there; the intervals of `s`, and a cache of 2^32-1
    slots (so that no two tokens of the run share one: see bench.py's docstring)."""
    base = f"http://127.0.0.1:{dot_port}"
    return {
        "issuers": [{
            "name": ISSUER, "issuer": f"{base}/o",
            "jwks": {"discovery": True, "upstream": "as-dot"},
            "refresh_interval_s": s.refresh_s, "refetch_min_interval_s": s.refetch_min_s,
            # 5 s, not 2: a discovery or key fetch the busy AS answers late would be retried
            # and counted twice, which the checks would read as the formula failing
            "fetch_timeout_ms": 5000,
            "introspection": {
                "endpoint": f"{base}{INTROSPECT_PATH}", "upstream": "as-dot",
                "client_id": b.DOT_INTROSPECTOR[0], "client_secret": b.DOT_INTROSPECTOR[1],
                "timeout_ms": 5000, "max_ttl_s": s.ttl_s,
            },
            "opaque_tokens": {"prefixes": ["dot_"]},
        }],
        "routes": [{"name": "api", "match": {"prefix": "/"}, "require": {}}],
        "cache": {"max_entries": b.MAX_SLOTS},
    }


def fleet_bootstrap(upstream_port: int, port: int, admin_port: int, dot_port: int, s: Sizes) -> dict:
    """One fleet member: its upstream (direct_response), the Tollgate listener, the as-dot
    cluster (as bench.py's: at most 8 connections to Django's dev server, 5 s connect timeout)."""
    ok = {"direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    tollgate = b.envoy.wasm_filter(b.TOLLGATE_WASM, tollgate_fleet_config(dot_port, s), vm_id="tollgate-fleet")
    as_dot = b.envoy._cluster("as-dot", dot_port)
    as_dot["connect_timeout"] = "5s"
    as_dot["circuit_breakers"] = {"thresholds": [{"max_connections": 8, "max_pending_requests": 1024}]}
    return {
        "node": {"id": "tollgate-fleet", "cluster": "tollgate-fleet"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [b.listener("upstream", upstream_port, [], ok),
                          b.listener("fleet", port, [tollgate], {"route": {"cluster": "upstream", "timeout": "15s"}})],
            "clusters": [b.envoy._cluster("upstream", upstream_port), as_dot],
        },
    }


@dataclass
class Member:
    """One Envoy process of the fleet."""

    proc: b.envoy.EnvoyProc
    port: int
    admin_port: int
    launched: float  # time.monotonic() when it was started
    ready: float = 0.0  # when its first JWKS fetch was counted


def start_member(i: int, dot_port: int, s: Sizes, concurrency: int) -> Member:
    upstream_port, port, admin_port = b.free_ports(3)
    cfg_path = b.WORK / f"envoy-fleet-{i}.json"
    cfg_path.write_text(json.dumps(fleet_bootstrap(upstream_port, port, admin_port, dot_port, s), indent=2))
    log = b.WORK / f"envoy-fleet-{i}.log"
    log.unlink(missing_ok=True)
    argv = [str(b.envoy.envoy_binary()), "-c", str(cfg_path), "--concurrency", str(concurrency),
            "--base-id", str((os.getpid() + 10 + i) % 100000), "--disable-hot-restart", "-l", "warning"]
    proc = b.envoy.EnvoyProc(name=f"envoy-fleet-{i}", argv=argv, port=upstream_port, log_path=log,
                             admin_port=admin_port, config_path=cfg_path)
    m = Member(proc, port, admin_port, time.monotonic())
    proc.start(timeout=60)
    return m


def start_as(port: int) -> b.Background:
    """The rig's django-oauth-toolkit AS, fresh state of its own (not the main bench's)."""
    state = b.WORK / "fleet-as-dot-state"
    shutil.rmtree(state, ignore_errors=True)
    log = b.WORK / "fleet-as-dot.log"
    log.unlink(missing_ok=True)
    argv = [str(VENV_PY), str(b.RIG / "as_dot" / "server.py"), "--port", str(port), "--state-dir", str(state)]
    return b.Background(Proc("fleet-as-dot", argv, port, log, env={"PYTHONUNBUFFERED": "1"}))


def as_counts(dot_port: int) -> dict[str, int]:
    """The AS's own count of requests per path since its last reset (/__rig/stats)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{dot_port}/__rig/stats", timeout=5) as r:
        return {k: int(v) for k, v in json.load(r)["requests"].items()}


def as_reset(dot_port: int) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{dot_port}/__rig/reset-stats", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=5):
        pass


def jwks_path(dot_port: int) -> str:
    """The path of the jwks_uri DOT's discovery document names."""
    with urllib.request.urlopen(f"http://127.0.0.1:{dot_port}{DISCOVERY_PATH}", timeout=5) as r:
        return urllib.parse.urlsplit(json.load(r)["jwks_uri"]).path


def fleet_counters(m: Member) -> dict[str, int]:
    """This process's counters of the fleet issuer, short names (allowed, introspection.calls, ...)."""
    got = b.counters(m.admin_port, r"^wasmcustom\.tollgate\.issuer\." + ISSUER + r"\.")
    return {k[len(PREFIX):]: v for k, v in got.items()}


def nonzero(c: dict[str, int]) -> dict[str, int]:
    """The counters that moved (Tollgate defines dozens per issuer)."""
    return {k: v for k, v in sorted(c.items()) if v and not k.startswith("introspection.latency")}


def settled(dot_port: int, members: list[Member]) -> tuple[dict[str, int], list[dict[str, int]]]:
    """The AS's counts and every member's counters, once two reads 0.2 s apart agree (an answer
    may land in Tollgate after the request that caused it was answered elsewhere)."""
    last = (as_counts(dot_port), [fleet_counters(m) for m in members])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = (as_counts(dot_port), [fleet_counters(m) for m in members])
        if now == last:
            break
        last = now
    return last


def in_parallel(members: list, work) -> list:
    """work(member) on a thread per member, at once (the fleet takes its traffic together);
    their results in member order. A thread's exception is raised here, once all have ended."""
    out: list = [None] * len(members)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            out[i] = work(members[i])
        except BaseException as e:  # noqa: BLE001  (re-raised below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(members))]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(timeout=0.2)
    if errors:
        raise errors[0]
    return out


def paced(port: int, seq: list[str], seconds: float) -> Counter:
    """seq sent one at a time on one connection, spread evenly over `seconds`; statuses."""
    statuses: Counter = Counter()
    t0 = time.monotonic()
    for k, token in enumerate(seq):
        time.sleep(max(0.0, t0 + k * seconds / len(seq) - time.monotonic()))
        statuses[b.status_of(port, {"Authorization": f"Bearer {token}"})] += 1
    return statuses


def rogue_tokens(issuer: str, n: int) -> list[str]:
    """n JWTs for the fleet issuer signed by a key the AS does not publish, each with a kid of
    its own (made up): every one is an unknown kid, and asks for an early key refetch."""
    key = jwk.JWK.generate(kty="RSA", size=2048)
    now = int(time.time())
    out = []
    for i in range(n):
        kid = f"made-up-{i}-{os.urandom(4).hex()}"
        claims = {"iss": issuer, "aud": "https://api.test", "sub": f"rogue-{i}", "iat": now - 10,
                  "exp": now + 3600, "jti": kid}
        token = jwt.JWT(header={"alg": "RS256", "kid": kid, "typ": "at+jwt"}, claims=claims)
        token.make_signed_token(key)
        out.append(token.serialize())
    return out


@dataclass
class Result:
    """One fleet size's measurements."""

    processes: int
    introspections: int = 0  # AS, passes within the TTL
    introspections_after: int = 0  # AS, the pass after the TTL
    checks: list[list[int]] = field(default_factory=list)  # per member: [allowed - cache_hit, calls]
    after: list[list[int]] = field(default_factory=list)  # the same, for the pass after the TTL
    discovery: int = 0
    jwks: int = 0
    jwks_bounds: tuple[int, int] = (0, 0)
    uptime_s: float = 0.0  # W, the longest member's (from its launch to the count)
    rogue_jwks: int = 0
    rogue_bounds: tuple[int, int] = (0, 0)
    rogue_s: float = 0.0  # the kid-miss window as the AS counted it
    rogue_statuses: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)  # every answer of the passes
    counters: list[dict[str, int]] = field(default_factory=list)  # each member's, at the end
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def measure_fleet(P: int, dot_port: int, opaque: list[str], jwts: list[str], rogue: list[str], jpath: str,
                  s: Sizes, concurrency: int) -> Result:
    """Steps 1-4 of the module docstring with P Envoy processes; everything it starts, it stops."""
    r = Result(P)
    t_start = time.monotonic()
    as_reset(dot_port)
    members: list[Member] = []
    try:
        # Started at once, as a fleet rolls out (each start takes a second or two); a member
        # that started is stopped below even if another did not.
        started: list[Member | None] = [None] * P

        def start(i: int) -> None:
            started[i] = start_member(i, dot_port, s, concurrency)

        try:
            in_parallel(list(range(P)), start)
        finally:
            members += [m for m in started if m is not None]
        # Each process fetches the discovery document and the JWKS at start, in the background.
        deadline = time.monotonic() + 30
        while not all(m.ready for m in members):
            for m in members:
                if not m.ready and fleet_counters(m).get("jwks.fetch_ok", 0) >= 1:
                    m.ready = time.monotonic()
            if time.monotonic() > deadline:
                raise RuntimeError(f"an Envoy of the fleet fetched no keys in 30 s (see {b.WORK}/envoy-fleet-*.log)")
            time.sleep(0.05)

        rng = random.Random(P)
        tokens = opaque + jwts

        def one_pass(m: Member) -> Counter:
            seq = tokens[:]
            rng_m = random.Random(rng.random())
            rng_m.shuffle(seq)
            return b.drive(m.port, seq, s.connections)

        # 1. Within the TTL: every token `passes` times through every process.
        t_passes = time.monotonic()
        for _ in range(s.passes):
            for st in in_parallel(members, one_pass):
                r.statuses += st
        first_done = time.monotonic()
        if first_done - t_passes >= s.ttl_s:
            r.problems.append(f"the {s.passes} passes took {first_done - t_passes:.1f} s, not within max_ttl_s "
                              f"{s.ttl_s}: the count within the TTL says nothing (a slow machine? fewer tokens)")
        as1, c1 = settled(dot_port, members)
        r.introspections = as1.get(INTROSPECT_PATH, 0)
        r.checks = [[c.get("allowed", 0) - c.get("cache_hit", 0), c.get("introspection.calls", 0)] for c in c1]
        expect_allowed = s.passes * len(tokens)
        if r.introspections != P * len(opaque):
            r.problems.append(f"within the TTL the AS served {r.introspections} introspections, not P x N = "
                              f"{P} x {len(opaque)} = {P * len(opaque)}")
        for i, (c, (checked, calls)) in enumerate(zip(c1, r.checks)):
            if calls != len(opaque) or checked != len(tokens) or c.get("allowed", 0) != expect_allowed:
                r.problems.append(f"Envoy {i}: {calls} introspection calls for {len(opaque)} opaque tokens, {checked} "
                                  f"checks for {len(tokens)} tokens, {c.get('allowed', 0)} allowed of "
                                  f"{expect_allowed} (counters {nonzero(c)})")

        # 2. After the TTL: every introspection answer aged out (each was cached at most
        # max_ttl_s from when it landed, before first_done); JWTs stay cached until their exp.
        time.sleep(max(0.0, first_done + s.ttl_s + 0.5 - time.monotonic()))
        for st in in_parallel(members, one_pass):
            r.statuses += st
        as2, c2 = settled(dot_port, members)
        t_read = time.monotonic()  # just after the count as2 was read
        r.introspections_after = as2.get(INTROSPECT_PATH, 0) - r.introspections
        r.after = [[(b2.get("allowed", 0) - b2.get("cache_hit", 0)) - (a.get("allowed", 0) - a.get("cache_hit", 0)),
                    b2.get("introspection.calls", 0) - a.get("introspection.calls", 0)] for a, b2 in zip(c1, c2)]
        if r.introspections_after != P * len(opaque):
            r.problems.append(f"after the TTL the AS served {r.introspections_after} more introspections, not "
                              f"P x N = {P * len(opaque)}")
        for i, (checked, calls) in enumerate(r.after):
            if calls != len(opaque) or checked != len(opaque):
                r.problems.append(f"Envoy {i}, after the TTL: {calls} introspection calls, {checked} checks; "
                                  f"expected {len(opaque)} of each (no JWT checked again)")
        if set(r.statuses) != {200}:
            r.problems.append(f"answers other than 200 to valid tokens: {dict(r.statuses)}")

        # 3. Key refresh over each member's uptime. A member fetched first between its launch and
        # its `ready`; after that, every refresh_interval_s plus up to a tick (200 ms) and a fetch.
        r.discovery = as2.get(DISCOVERY_PATH, 0)
        r.jwks = as2.get(jpath, 0)
        low = sum(1 + int((t_read - 0.5 - m.ready) // (s.refresh_s + 1)) for m in members)
        high = sum(1 + int((time.monotonic() + 0.5 - m.launched) // s.refresh_s) for m in members)
        r.jwks_bounds, r.uptime_s = (low, high), max(t_read - m.launched for m in members)
        if r.discovery != P:
            r.problems.append(f"{r.discovery} discovery GETs at the AS, not P = {P}")
        if not low <= r.jwks <= high:
            r.problems.append(f"{r.jwks} JWKS GETs at the AS, outside [{low}, {high}] for uptimes of "
                              f"{r.uptime_s:.1f} s and refresh_interval_s {s.refresh_s}")

        # 4. Unknown kids: K made-up kids per process over S seconds; each refused, and the JWKS
        # refetched at most once per refetch_min_interval_s per process. Fetch attempts of one
        # process start at least refetch_min_interval_s apart (a periodic refresh waits
        # refresh_interval_s after the last fetch), so in a window of W seconds it makes at most
        # 1 + floor(W / m). The window: from before the count above was read (every GET it did
        # not count started after t_window) to the last read of the count below.
        t_window = t_read - 0.05
        for st in in_parallel(members, lambda m: paced(m.port, rogue, s.rogue_s)):
            r.rogue_statuses += st
        as3, c3 = settled(dot_port, members)
        r.rogue_s = time.monotonic() - t_window
        r.rogue_jwks = as3.get(jpath, 0) - r.jwks
        # At least: a refetch at the first made-up kid, then another each time the limit allows
        # (a request every S / K seconds sets the wish; the tick acts on it within 200 ms).
        low = P * max(1, int(s.rogue_s // (s.refetch_min_s + 1)))
        high = P * (1 + int(r.rogue_s // s.refetch_min_s))
        r.rogue_bounds = (low, high)
        if not low <= r.rogue_jwks <= high:
            r.problems.append(f"{r.rogue_jwks} JWKS GETs at the AS for {P} x {len(rogue)} made-up kids over "
                              f"{r.rogue_s:.1f} s, outside [{low}, {high}] (refetch_min_interval_s {s.refetch_min_s})")
        if set(r.rogue_statuses) != {401}:
            r.problems.append(f"made-up kids answered {dict(r.rogue_statuses)}, not all 401")
        if (more := as3.get(INTROSPECT_PATH, 0) - as2.get(INTROSPECT_PATH, 0)) != 0:
            r.problems.append(f"{more} introspections during the made-up-kid step (JWTs must not be introspected)")
        r.counters = c3
    finally:
        for m in members:
            m.proc.stop()
    r.seconds = time.monotonic() - t_start
    return r


def run(quick: bool, concurrency: int = 1, processes: tuple[int, ...] = PROCESSES) -> tuple[list[str], bool]:
    """Starts the AS, mints the tokens, measures each fleet size; the report's lines (markdown:
    the formula's terms, the tables, the checks) and whether every check held."""
    s = QUICK if quick else FULL
    b.WORK.mkdir(parents=True, exist_ok=True)
    (dot_port,) = b.free_ports(1)
    t0 = time.monotonic()
    dot = start_as(dot_port)
    results: list[Result] = []
    try:
        dot.wait()
        base = f"http://127.0.0.1:{dot_port}"
        opaque = b.dot_tokens(base, s.opaque)
        jwts = [rig_tokens.client_credentials(f"{base}/o/token/", *JWT_CLIENT, scope="read")["access_token"]
                for _ in range(s.jwts)]
        rogue = rogue_tokens(f"{base}/o", s.rogue)
        jpath = jwks_path(dot_port)
        print(f"fleet: AS django-oauth-toolkit pid {dot.proc.pid} on :{dot_port}; {len(opaque)} opaque tokens, "
              f"{len(jwts)} JWTs, {len(rogue)} made-up kids in {time.monotonic() - t0:.1f}s", flush=True)
        for P in processes:
            r = measure_fleet(P, dot_port, opaque, jwts, rogue, jpath, s, concurrency)
            results.append(r)
            print(f"  P={P}: introspections {r.introspections} (+{r.introspections_after} after the TTL), discovery "
                  f"{r.discovery}, JWKS {r.jwks} in {r.uptime_s:.1f}s, {r.rogue_jwks} for {P} x {len(rogue)} "
                  f"made-up kids; {r.seconds:.1f}s" + ("; " + "; ".join(r.problems) if r.problems else ""), flush=True)
    finally:
        dot.stop()
    return report(results, s, concurrency, time.monotonic() - t0), all(not r.problems for r in results)


def report(results: list[Result], s: Sizes, concurrency: int, seconds: float) -> list[str]:
    """Markdown: the setup, the two tables, each check."""
    N, M, K = s.opaque, s.jwts, s.rogue
    lines = [
        f"One django-oauth-toolkit AS (tests/rig/as_dot) on 127.0.0.1, P Envoy processes (--concurrency "
        f"{concurrency} each) with Tollgate, one issuer: opaque `dot_` tokens introspected, JWTs by its keys "
        f"(OIDC discovery); `introspection.max_ttl_s` {s.ttl_s}, `refresh_interval_s` {s.refresh_s}, "
        f"`refetch_min_interval_s` {s.refetch_min_s}, `cache.max_entries` 2^32-1. N = {N} opaque tokens and "
        f"M = {M} JWTs, each sent {s.passes} times to every process within the TTL, then once more after it. "
        "Counts: the AS's own (/__rig/stats), and each Envoy's Tollgate counters.",
        "",
        "| P | AS introspections, within TTL (P x N) | after TTL (P x N) | checks per Envoy (allowed - cache_hit; N + M) "
        "| introspection.calls per Envoy | AS discovery GETs (P) | AS JWKS GETs (bounds) over uptime |",
        "|---:|---:|---:|---|---|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.processes} | {r.introspections:,} ({r.processes * N:,}) | {r.introspections_after:,} "
            f"({r.processes * N:,}) | {', '.join(str(c[0]) for c in r.checks)} ({N + M}); after TTL "
            f"{', '.join(str(c[0]) for c in r.after)} ({N}) | {', '.join(str(c[1]) for c in r.checks)}; after TTL "
            f"{', '.join(str(c[1]) for c in r.after)} | {r.discovery} ({r.processes}) | {r.jwks} "
            f"([{r.jwks_bounds[0]}, {r.jwks_bounds[1]}]) in {r.uptime_s:.1f} s |")
    lines += [
        "",
        f"Unknown kids: K = {K} JWTs with made-up kids sent to every process over {s.rogue_s:g} s (each refused):",
        "",
        "| P | requests | answers | AS JWKS GETs | bounds (at most P x (1 + floor(W / refetch_min_interval_s))) | "
        "without the limit (P x K) |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.processes} | {sum(r.rogue_statuses.values()):,} | {dict(r.rogue_statuses)} | {r.rogue_jwks} "
                     f"| [{r.rogue_bounds[0]}, {r.rogue_bounds[1]}] (W = {r.rogue_s:.1f} s) | {r.processes * K:,} |")
    lines += ["", "Tollgate's counters at the end, per Envoy:", ""]
    for r in results:
        for i, c in enumerate(r.counters):
            lines.append(f"- P={r.processes}, Envoy {i}: " + ", ".join(f"`{k}` {v:,}" for k, v in nonzero(c).items()))
    lines += [""]
    for r in results:
        lines.append(f"- {'FAILED' if r.problems else 'OK'}: fleet P={r.processes}: "
                     + ("; ".join(r.problems) if r.problems else
                        f"introspections P x N twice (within and after the TTL), discovery P, JWKS within bounds, "
                        f"made-up kids bounded by refetch_min_interval_s") + f" ({r.seconds:.1f}s)")
    lines += ["", f"Fleet run time {seconds:.0f}s."]
    return lines


def standalone(quick: bool, concurrency: int = 1, out: str | None = None) -> int:
    """bench/run --fleet: the fleet measurement alone, its report printed and written (default
    bench/last-fleet.md; target/bench/quick-fleet.md with --quick). Exit status 1 if a check failed."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if out is None:
        out = str(b.WORK / "quick-fleet.md") if quick else str(b.BENCH / "last-fleet.md")
    lines, ok = run(quick, concurrency)
    text = "\n".join([f"# Tollgate fleet bench, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", "",
                      f"- command: `bench/run --fleet{' --quick' if quick else ''} --concurrency {concurrency}`",
                      f"- tollgate.wasm: {b.TOLLGATE_WASM.stat().st_size:,} bytes; machine: {os.cpu_count()} CPUs",
                      "", *lines, "", f"Result: {'ok' if ok else 'FAILED'}.", ""])
    print()
    print(text)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    print(f"fleet: written to {out}")
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and 1-3 s intervals (as in bench/run --quick)")
    ap.add_argument("--concurrency", type=int, default=1, help="Envoy workers per process (default 1)")
    ap.add_argument("--out", help="where to write the report")
    args = ap.parse_args()
    return standalone(args.quick, args.concurrency, args.out)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("fleet: interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)
