"""Issue 18, "How cost grows": Envoy CPU per request and req/s as the load or the configuration
grows, as tables (in the bench report) and SVG plots (bench/plot.py). Run by bench/run (a full
run, and --quick with tiny sizes) or alone with `bench/run --curves`.

Four curves, each point a Tollgate listener of its own (its own VM, configuration, counters and
shared-data cache), driven like the bench's rows (wrk -t1 -c16 with tokens.lua, a probe first,
interleaved rounds, the median round; Envoy's CPU from /proc around the timed run):

    tokens   a Zipf mix (weight of rank k: 1/k^s, the bench's --zipf and --seed) over a pool of
             N distinct tokens, N = 1, 1k, 10k, 100k, 1M (--curve-tokens), with
             cache.max_entries 8192 (Tollgate's default; --curve-slots) and with 4294967295
             (the most allowed: a cache that holds every token of the sequence). The sequence
             is --curve-length (50,000) independent draws from the pool, and only the tokens it
             drew are minted: "distinct tokens" is the pool the draws come from; the table also
             shows how many distinct tokens the sequence holds (a 1M pool gives ~14k in 50,000
             draws at s = 1.1). Tokens are EdDSA (Ed25519), signed with `cryptography` directly
             (tens of thousands a second; Tollgate verifies them like any other). Before the
             timed rounds, a warm-up sends the whole sequence once (each token first seen
             there), so the rounds measure the steady state of a population cycled again and
             again: with the large cache every request is a hit (from the worker's memo, up to
             1,024 tokens, or the shared cache); with 8192 slots a token whose slot another
             token took since is verified again. Each point reports verifications per request
             in the timed rounds (allowed - cache_hit, over allowed: Tollgate's counters) and
             the sequence's tokens that share a cache slot with another, computed here exactly
             as Tollgate does (SHA-256 of SHA-256(configuration text) and the token, first 8
             bytes little-endian, modulo the slots): where eviction starts to cost.
    issuers  1, 10, 100 issuers configured (inline JWKS each, one Ed25519 key), one route
             that takes any of them; the token is the last issuer's. Warm (one token, cached)
             and cold (the same token, cache.max_entries 0: verified on every request).
    routes   1, 10, 100, 1,000 Tollgate routes (prefixes /api/r0/ ... /api/r<n-1>/, each
             requiring a token of the one issuer); every request matches the last one (warm,
             one cached token). Envoy's own route table is one catch-all route throughout.
    workers  Envoy --concurrency 1 and 2, an Envoy each, the 10k-pool Zipf mix with the large
             cache: whether the cost per request and the AS's load stay flat per worker.

Checks (a FAILED one makes bench/run exit 1), per point over the whole run (probe, warm-up and
rounds), from Tollgate's counters: with the large cache (and on the warm issuers and routes
points, and both worker points) verifications must equal the distinct tokens sent (once per
token per Envoy process, whatever the workers; the sequence's tokens are re-minted until no
two of them share a slot of that cache, so the check is exact); with 8192 slots, verifications
must be at least the distinct tokens sent, and exactly that when no two share a slot; cold
points must show no cache hit. Nothing refused, and no other listener's counters moved. And,
before the rounds, that slot_of places tokens where Tollgate does (slot_check: a token minted
to share another's slot pushes it out, one minted not to does not).
"""
from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import os
import random
import re
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import bench as b  # the bench's main module (bench.py registers itself under this name)
import plot

LARGE_SLOTS = b.MAX_SLOTS
IMG_DIR = b.ROOT / "docs" / "img"


# --- tokens -------------------------------------------------------------------------------------

def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Minter:
    """EdDSA access tokens signed with the bench's Ed25519 key through `cryptography` directly
    (jwcrypto's JWT objects cost ~10x more per token), with the claims of bench.mint."""

    def __init__(self, keys: dict):
        key = keys["ed25519"]
        self.sk = key.get_op_key("sign")
        self.header = b64u(json.dumps({"alg": "EdDSA", "kid": key.key_id, "typ": "at+jwt"},
                                      separators=(",", ":")).encode())
        self.now = int(time.time())

    def token(self, iss: str, tag: str, i: int) -> str:
        claims = {"iss": iss, "aud": b.AUDIENCE, "sub": f"user-{tag}-{i}", "client_id": "bench-client",
                  "scope": "read", "iat": self.now - 10, "exp": self.now + 86400,
                  "jti": f"{tag}-{i}-{os.urandom(6).hex()}"}
        signing_input = f"{self.header}.{b64u(json.dumps(claims, separators=(',', ':')).encode())}"
        return f"{signing_input}.{b64u(self.sk.sign(signing_input.encode()))}"


def zipf_draws(pool: int, length: int, s: float, seed: int) -> list[int]:
    """length independent draws of a rank in 0..pool-1, rank k+1 with weight 1/(k+1)^s (unlike
    bench.zipf_sequence, which puts every token of its pool in: here the pool may be far larger
    than the sequence)."""
    rng = random.Random(seed)
    cum = list(itertools.accumulate(1.0 / (k ** s) for k in range(1, pool + 1)))
    return rng.choices(range(pool), cum_weights=cum, k=length)


def slot_of(config_text: str, token: str, slots: int) -> int:
    """The cache slot Tollgate puts token in (crates/tollgate-core/src/cache.rs: key_for and
    slot_of; the fingerprint is SHA-256 of the configuration text Envoy hands the plugin)."""
    fingerprint = hashlib.sha256(config_text.encode()).digest()
    key = hashlib.sha256(fingerprint + token.encode()).digest()
    return int.from_bytes(key[:8], "little") % max(slots, 1)


def sharing(config_text: str, tokens: set[str], slots: int) -> int:
    """How many of tokens share their cache slot with another of them."""
    count = Counter(slot_of(config_text, t, slots) for t in tokens)
    return sum(n for n in count.values() if n > 1)


# --- points -------------------------------------------------------------------------------------

@dataclass
class Point:
    curve: str  # "tokens", "issuers", "routes", "workers"
    series: str  # the line of the plot this point is on
    x: int
    listener: str
    envoy: str  # which Envoy process (its --concurrency in ENVOYS)
    config_text: str  # Tollgate's configuration, exactly as Envoy hands it over
    issuer: str  # the Tollgate issuer name whose counters the point moves
    tokens: str  # token set name
    check: str  # "once", "evict" (at least once each; exactly when no slot is shared), "every"
    slots: int | None = None  # cache.max_entries (tokens curve)
    path: str = b.PATH
    zipf: bool = False  # warm-up: the whole sequence once
    rounds: list[dict] = field(default_factory=list)
    delta: Counter = field(default_factory=Counter)  # whole run
    timed: Counter = field(default_factory=Counter)  # timed runs only
    issued: int = 0
    error: str | None = None
    result: dict | None = None
    shared: int = 0  # tokens curve: distinct tokens of the sequence sharing a slot

    @property
    def own(self) -> str:
        return f"tollgate.issuer.{self.issuer}."

    def verified(self, d: Counter) -> int:
        return d[self.own + "allowed"] - d[self.own + "cache_hit"]


@dataclass
class Sizes:
    tokens: list[int]
    length: int
    slots: int
    issuers: list[int]
    routes: list[int]
    workers: list[int]
    workers_pool: int


def sizes(args) -> Sizes:
    if args.quick:  # every curve, tiny: a smoke test of this code, not a measurement
        return Sizes(tokens=[1, 10_000], length=2_000, slots=256, issuers=[1, 10], routes=[1, 10],
                     workers=[1, 2], workers_pool=100)
    return Sizes(tokens=[int(n) for n in args.curve_tokens.split(",")], length=args.curve_length,
                 slots=args.curve_slots, issuers=[1, 10, 100], routes=[1, 10, 100, 1000], workers=[1, 2],
                 workers_pool=10_000)


def text(cfg: dict) -> str:
    return json.dumps(cfg)


def issuers_config(jwks: dict, tag: str, n: int, slots: int | None) -> dict:
    """n issuers (names <tag>-0 ..), each its own iss and an inline JWKS of the one Ed25519
    key, and one route that takes a token of any of them."""
    cfg: dict = {
        "issuers": [{"name": f"{tag}-{i}", "issuer": f"https://as{i}.bench.test", "jwks": {"inline": jwks},
                     "audiences": [b.AUDIENCE], "algorithms": ["EdDSA"]} for i in range(n)],
        "routes": [{"name": "api", "match": {"prefix": "/"}, "require": {}}],
    }
    if slots is not None:
        cfg["cache"] = {"max_entries": slots}
    return cfg


def routes_config(jwks: dict, name: str, n: int) -> dict:
    """One issuer, n routes /api/r<i>/ in order, each requiring its token (Tollgate takes the
    first route that matches, so a request to the last route passes the n - 1 before it)."""
    cfg = b.tollgate_config(jwks, name, None)
    cfg["routes"] = [{"name": f"r{i}", "match": {"prefix": f"/api/r{i}/"}, "require": {"issuers": [name]}}
                     for i in range(n)]
    return cfg


def build(sz: Sizes, jwks: dict, ed_jwks: dict) -> list[Point]:
    points = []
    for pool in sz.tokens:
        for slots, series in ((sz.slots, f"cache {sz.slots:,} slots"), (LARGE_SLOTS, "cache holds all")):
            name = f"tok-{pool}-{'all' if slots == LARGE_SLOTS else slots}"
            points.append(Point("tokens", series, pool, f"c-{name}", "main",
                                text(b.tollgate_config(jwks, name, slots)), name, f"zipf-{pool}",
                                "once" if slots == LARGE_SLOTS else "evict", slots=slots, zipf=True))
    for n in sz.issuers:
        for kind, slots in (("warm", None), ("cold", 0)):
            tag = f"iss{n}{kind}"
            points.append(Point("issuers", "warm (cached token)" if kind == "warm" else "cold (cache off)", n,
                                f"c-{tag}", "main", text(issuers_config(ed_jwks, tag, n, slots)), f"{tag}-{n - 1}",
                                f"issuer-{n}", "once" if kind == "warm" else "every"))
    for n in sz.routes:
        name = f"rt{n}"
        points.append(Point("routes", "warm, the last route", n, f"c-{name}", "main",
                            text(routes_config(jwks, name, n)), name, "warm", "once", path=f"/api/r{n - 1}/bench"))
    points.append(Point("slots", "", 0, "c-slotchk", "main", text(b.tollgate_config(jwks, "slotchk", SLOT_CHECK_SLOTS)),
                        "slotchk", "warm", "once"))  # slot_check's listener, not in the rounds
    for w in sz.workers:
        name = f"wk{w}"
        points.append(Point("workers", f"Zipf {sz.workers_pool:,}-token pool, cache holds all", w, f"c-{name}",
                            f"workers-{w}", text(b.tollgate_config(jwks, name, LARGE_SLOTS)), name,
                            f"zipf-{sz.workers_pool}", "once", slots=LARGE_SLOTS, zipf=True))
    return points


def mint_sets(points: list[Point], sz: Sizes, minter: Minter, zipf_s: float, seed: int) -> dict[str, list[str]]:
    """The token sets the points use: one Zipf sequence per pool (shared by that pool's points,
    each its own listener and cache), the issuers' (one token of the last issuer) and one warm
    token. A token of a sequence that shares a slot of a large-cache point's cache with another
    is replaced by a new one (so each such point's cache holds every token, and its once-per-
    token check is exact)."""
    sets: dict[str, list[str]] = {"warm": [minter.token(b.ISSUER, "curve-warm", 0)]}
    for n in sz.issuers:
        sets[f"issuer-{n}"] = [minter.token(f"https://as{n - 1}.bench.test", f"curve-iss{n}", 0)]
    for name in dict.fromkeys(p.tokens for p in points if p.zipf):
        pool = int(name.split("-")[1])
        draws = zipf_draws(pool, sz.length if pool > 1 else 1, zipf_s, seed)
        tok = {i: minter.token(b.ISSUER, f"zipf{pool}", i) for i in sorted(set(draws))}
        large = [p for p in points if p.tokens == name and p.slots == LARGE_SLOTS]
        for _ in range(100):
            again = set()
            for p in large:
                seen: dict[int, int] = {}
                for i, t in tok.items():
                    s = slot_of(p.config_text, t, LARGE_SLOTS)
                    if s in seen:
                        again.add(i)
                    seen[s] = i
            if not again:
                break
            for i in again:
                tok[i] = minter.token(b.ISSUER, f"zipf{pool}-again", i)
        sets[name] = [tok[i] for i in draws]
    return sets


# --- running ------------------------------------------------------------------------------------

def bootstrap(points: list[Point], ports: dict[str, int], upstream: int, admin: int) -> dict:
    to_upstream = {"route": {"cluster": "upstream", "timeout": "15s"}}
    ok = {"direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    listeners = [b.listener("upstream", upstream, [], ok)]
    listeners += [b.listener(p.listener, ports[p.listener],
                             [b.envoy.wasm_filter(b.TOLLGATE_WASM, p.config_text, vm_id=f"tollgate-{p.listener}")],
                             to_upstream) for p in points]
    return {
        "node": {"id": "tollgate-curves", "cluster": "tollgate-curves"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": listeners, "clusters": [b.envoy._cluster("upstream", upstream)]},
    }


@dataclass
class Proxy:
    name: str
    concurrency: int
    proc: b.envoy.EnvoyProc
    admin: int


def start_envoy(name: str, concurrency: int, points: list[Point], ports: dict[str, int], n: int) -> Proxy:
    upstream, admin = b.free_ports(2)
    cfg_path = b.WORK / f"envoy-curves-{name}.json"
    cfg_path.write_text(json.dumps(bootstrap(points, ports, upstream, admin), indent=2))
    argv = [str(b.envoy.envoy_binary()), "-c", str(cfg_path), "--concurrency", str(concurrency),
            "--base-id", str((os.getpid() + 10 + n) % 100000), "--disable-hot-restart", "-l", "warning"]
    log = b.WORK / f"envoy-curves-{name}.log"
    log.unlink(missing_ok=True)
    proc = b.envoy.EnvoyProc(name=f"envoy-curves-{name}", argv=argv, port=upstream, log_path=log,
                             admin_port=admin, config_path=cfg_path)
    proc.start(timeout=120)
    deadline = time.monotonic() + 60
    for p in points:
        while not b.envoy.port_open(ports[p.listener]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{p.listener} did not open its port (see {log})")
            time.sleep(0.05)
    return Proxy(name, concurrency, proc, admin)


def add(total: Counter, before: dict[str, int], after: dict[str, int]) -> None:
    b.add_delta(total, before, after)


def run_point(p: Point, px: Proxy, port: int, seq: list[str], rnd: int, duration: int, warmup: int,
              connections: int) -> None:
    """One round of one point: probe, (round 1) warm-up, the timed wrk run; counters around each."""
    token_file = b.WORK / f"tokens-{p.tokens}.txt"
    s0 = b.snapshot(px.admin, None)
    status = b.probe(port, seq[0], path=p.path)
    if status != 200:
        p.error = f"probe answered {status}"
        return
    runs = []
    if rnd == 1:
        if p.zipf:  # the whole sequence once: a first run shows the rate, a second covers the rest
            runs.append(b.run_wrk(port, token_file, max(warmup, 1), connections, p.path))
            if runs[-1]["issued"] < len(seq):
                rate = runs[-1]["requests"] / (runs[-1]["duration_us"] / 1e6)
                runs.append(b.run_wrk(port, token_file, min(120, math.ceil(1.3 * len(seq) / max(rate, 1)) + 1),
                                      connections, p.path))
            if runs[-1]["issued"] < len(seq):
                p.error = f"the warm-up sent {runs[-1]['issued']:,} of the sequence's {len(seq):,} requests"
                return
        elif warmup:
            runs.append(b.run_wrk(port, token_file, warmup, connections, p.path))
    s1 = b.settled_snapshot(px.admin, None)
    cpu0 = b.cpu_seconds(px.proc.pid)
    runs.append(x := b.run_wrk(port, token_file, duration, connections, p.path))
    x["cpu_us"] = (b.cpu_seconds(px.proc.pid) - cpu0) * 1e6 / max(x["requests"], 1)
    s2 = b.settled_snapshot(px.admin, None)
    add(p.delta, s0, s2)
    add(p.timed, s1, s2)
    p.issued = max([p.issued] + [w["issued"] for w in runs])
    bad = sum(w["status_errors"] + w["connect"] + w["read"] + w["write"] + w["timeout"] for w in runs)
    if bad or x["requests"] == 0:
        non2xx = sum(w["status_errors"] for w in runs)
        p.error = f"{non2xx} non-2xx, {bad - non2xx} socket errors"
        return
    x["rps"] = x["requests"] / (x["duration_us"] / 1e6)
    p.rounds.append(x)


def check(p: Point, seq: list[str]) -> b.Check:
    label = f"curve {p.curve}: {p.listener}"
    d = p.delta
    if missing := [k for k in (p.own + "allowed", p.own + "cache_hit") if k not in d]:
        return b.Check(label, False, "counters missing from Envoy's /stats: " + ", ".join(missing))
    if moved := b.strays(d, p.own):
        return b.Check(label, False, f"other counters moved during this point: {moved}")
    allowed, hits, verified = d[p.own + "allowed"], d[p.own + "cache_hit"], p.verified(d)
    denied = sum(v for k, v in d.items() if k.startswith(p.own + "denied."))
    extra = f"; {denied:,} denied" if denied else ""
    if p.check == "every":
        ok = hits == 0 and allowed > 0 and not denied
        return b.Check(label, ok, f"{verified:,} verifications, {hits:,} cache hits (cache off: every request "
                                  f"is verified){extra}")
    want = b.distinct_sent(seq, p.issued, seq[0])
    per = f"{verified / want:.2f} per distinct token" if want else "-"
    if p.check == "once":
        ok = verified == want and allowed > 0 and not denied
        return b.Check(label, ok, f"{verified:,} verifications for {want:,} distinct tokens sent ({per}; "
                                  f"{allowed:,} allowed, {hits:,} cache hits; {px_workers(p)} worker(s)){extra}")
    ok = verified >= want and (p.shared > 0 or verified == want) and allowed > 0 and not denied
    return b.Check(label, ok, f"{verified:,} verifications for {want:,} distinct tokens sent ({per}; {p.shared:,} "
                              f"of them share a slot of {p.slots:,}: each verified at least once, and again only "
                              f"if a token sharing its slot came between; {allowed:,} allowed){extra}")


SLOT_CHECK_SLOTS = 4096
MEMO = 1024  # tokens a worker remembers (crates/tollgate-core/src/flow/shared.rs MEMO_ENTRIES)


def slot_check(port: int, admin: int, config_text: str, minter: Minter) -> b.Check:
    """That slot_of places tokens where Tollgate does (the "sharing a slot" column and the exact
    once-per-token checks rest on it), on a listener of its own (SLOT_CHECK_SLOTS slots, 1
    worker): token B is minted to share token A's slot, token D not to share token C's, and
    MEMO + 8 filler tokens to share neither slot. Sent one at a time: A, B (B's entry replaces
    A's in their slot), C, D, the fillers (so the worker's memo, cleared whenever it is full,
    no longer holds A or C), then A (verified again: its slot now holds B) and C (a hit from
    its slot: not verified). A slot_of that placed tokens elsewhere than Tollgate gets A's
    count or C's wrong."""
    label = "curve tokens: slot placement (bench/curves.py slot_of against Tollgate)"
    slot = lambda t: slot_of(config_text, t, SLOT_CHECK_SLOTS)  # noqa: E731
    a, c = minter.token(b.ISSUER, "slot-a", 0), minter.token(b.ISSUER, "slot-c", 0)
    while slot(c) == slot(a):
        c = minter.token(b.ISSUER, "slot-c", 0)
    bb, d, fillers = None, None, []
    for i in itertools.count():
        t = minter.token(b.ISSUER, "slot-x", i)
        if slot(t) == slot(a) and bb is None:
            bb = t
        elif slot(t) not in (slot(a), slot(c)):
            if d is None:
                d = t
            elif len(fillers) < MEMO + 8:
                fillers.append(t)
        if bb is not None and d is not None and len(fillers) >= MEMO + 8:
            break
    assert bb is not None and d is not None
    own = "tollgate.issuer.slotchk."

    def verified_by(seq: list[str]) -> int:
        before = b.snapshot(admin, None)
        statuses = b.drive(port, seq, 1)
        if set(statuses) != {200}:
            raise RuntimeError(f"answers {dict(statuses)}")
        d_: Counter = Counter()
        b.add_delta(d_, before, b.settled_snapshot(admin, None))
        return d_[own + "allowed"] - d_[own + "cache_hit"]

    try:
        first = verified_by([a, bb, c, d] + fillers)
        again_a, again_c = verified_by([a]), verified_by([c])
    except RuntimeError as e:
        return b.Check(label, False, str(e))
    ok = first == 4 + len(fillers) and again_a == 1 and again_c == 0
    return b.Check(label, ok, f"{first:,} verifications for the {4 + len(fillers):,} first sights; then A (its slot "
                              f"taken by B) verified {again_a} time(s), want 1; C (its slot its own) {again_c}, want 0")


def px_workers(p: Point) -> int:
    return int(p.envoy.split("-")[1]) if p.envoy.startswith("workers-") else _main_concurrency[0]


_main_concurrency = [1]


def summarize(p: Point) -> None:
    if p.rounds and not p.error:
        r = {k: statistics.median(x[k] for x in p.rounds) for k in ("rps", "p50_us", "p99_us", "cpu_us")}
        r["spread"] = (max(x["rps"] for x in p.rounds) - min(x["rps"] for x in p.rounds)) / r["rps"]
        allowed = p.timed[p.own + "allowed"]
        r["vpr"] = p.verified(p.timed) / allowed if allowed else 0.0
        p.result = r


# --- report -------------------------------------------------------------------------------------

def cells(p: Point) -> str:
    if not p.result:
        return f"FAILED: {p.error or 'did not run'} | | | | |"
    r = p.result
    return (f"{r['rps']:,.0f} | {r['spread']:.0%} | {r['p99_us'] / 1000:.2f} | {r['cpu_us']:.0f} | "
            f"{r['vpr']:.4f} |")


def tables(points: list[Point], sets: dict[str, list[str]], sz: Sizes) -> list[str]:
    out = []
    tok = [p for p in points if p.curve == "tokens"]
    if tok:
        out += ["### Distinct tokens (Zipf mix)", "",
                "| distinct tokens (the pool) | in the sequence | cache slots | sharing a slot | req/s | spread | "
                "p99 ms | Envoy CPU µs/req | verifications / request (timed) | verifications / distinct token "
                "(whole run) |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for p in tok:
            seq = sets[p.tokens]
            distinct = len(set(seq))
            whole = p.verified(p.delta) / distinct if p.delta and distinct else 0.0
            out.append(f"| {p.x:,} | {distinct:,} | {p.slots:,} | {p.shared:,} | {cells(p)} {whole:.2f} |")
        out.append("")
    for curve, head, what in (("issuers", "issuers", "token"), ("routes", "routes", "request"),
                              ("workers", "Envoy workers", "load")):
        pts = [p for p in points if p.curve == curve]
        if not pts:
            continue
        out += [f"### {head[0].upper() + head[1:]}", "",
                f"| {head} | {what} | req/s | spread | p99 ms | Envoy CPU µs/req | verifications / request (timed) |"
                + (" verifications / distinct token (whole run) |" if curve == "workers" else ""),
                "|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if curve == "workers" else "")]
        for p in pts:
            line = f"| {p.x:,} | {p.series} | {cells(p)}"
            if curve == "workers":
                distinct = b.distinct_sent(sets[p.tokens], p.issued, sets[p.tokens][0]) if p.issued else 0
                line += f" {p.verified(p.delta) / distinct:.2f} |" if distinct else " - |"
            out.append(line)
        out.append("")
    return out


def plots(points: list[Point], sz: Sizes, img_dir: Path) -> list[Path]:
    """One SVG per curve: Envoy CPU per request and req/s (and, for tokens, verifications per
    request), one line per series."""
    img_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def series(pts: list[Point], key: str) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = {}
        for p in pts:
            out.setdefault(p.series, [])
            if p.result:
                out[p.series].append((p.x, p.result[key]))
        return out

    specs = [
        ("tokens", "Cost per request against distinct tokens (Zipf mix, EdDSA)", "distinct tokens (Zipf pool)", True,
         [("Envoy CPU µs/request", "cpu_us"), ("req/s", "rps"), ("verifications/request", "vpr")]),
        ("issuers", "Cost per request against configured issuers", "issuers", True,
         [("Envoy CPU µs/request", "cpu_us"), ("req/s", "rps")]),
        ("routes", "Cost per request against Tollgate routes (request matches the last)", "routes", True,
         [("Envoy CPU µs/request", "cpu_us"), ("req/s", "rps")]),
        ("workers", "Cost per request against Envoy workers", "Envoy workers (--concurrency)", False,
         [("Envoy CPU µs/request", "cpu_us"), ("req/s", "rps"), ("verifications/distinct token", "per_token")]),
    ]
    for curve, title, x_label, log_x, panels in specs:
        pts = [p for p in points if p.curve == curve]
        if not any(p.result for p in pts):
            continue
        svg = plot.chart(title, x_label, [plot.Panel(y, series(pts, key)) for y, key in panels], log_x=log_x,
                         note="bench/run (bench/curves.py): median of interleaved rounds, wrk -t1 -c16")
        path = img_dir / f"curves-{curve}.svg"
        path.write_text(svg)
        written.append(path)
    return written


# --- entry points -------------------------------------------------------------------------------

def run(args, img_dir: Path | None = None) -> tuple[list[str], bool]:
    """Runs every curve; returns the report's lines (tables, checks, plots) and whether all
    passed. img_dir: where the SVGs go (docs/img, or target/bench/img with --quick)."""
    t_start = time.monotonic()
    sz = sizes(args)
    _main_concurrency[0] = args.concurrency
    duration = 1 if args.quick else args.curve_duration
    rounds = 1 if args.quick else args.rounds
    warmup = 0 if args.quick else 2  # Zipf points: at least 1 s, until the whole sequence was sent
    img_dir = img_dir or (b.WORK / "img" if args.quick else IMG_DIR)
    b.WORK.mkdir(parents=True, exist_ok=True)
    keys = b.make_keys()
    jwks = b.public_jwks(keys)
    ed_jwks = {"keys": [k for k in jwks["keys"] if k.get("crv") == "Ed25519"]}
    points = build(sz, jwks, ed_jwks)
    t0 = time.monotonic()
    minter = Minter(keys)
    sets = mint_sets(points, sz, minter, args.zipf, args.seed)
    for name, toks in sets.items():
        (b.WORK / f"tokens-{name}.txt").write_text("\n".join(toks) + "\n")
    for p in points:
        if p.slots:
            p.shared = sharing(p.config_text, set(sets[p.tokens]), p.slots)
    minted = len({t for s in sets.values() for t in s})
    print(f"curves: {len(points) - 1} points; {minted:,} EdDSA tokens minted in {time.monotonic() - t0:.1f}s", flush=True)

    envoys = {"main": args.concurrency} | {f"workers-{w}": w for w in sz.workers}
    ports = dict(zip([p.listener for p in points], b.free_ports(len(points))))
    proxies: dict[str, Proxy] = {}
    failed = False
    slot_result = b.Check("curve tokens: slot placement", False, "did not run")
    try:
        for n, (name, conc) in enumerate(envoys.items()):
            t0 = time.monotonic()
            mine = [p for p in points if p.envoy == name]
            proxies[name] = start_envoy(name, conc, mine, ports, n)
            print(f"curves: envoy {name} pid {proxies[name].proc.pid} up (concurrency {conc}, {len(mine)} "
                  f"Tollgate listeners) in {time.monotonic() - t0:.1f}s", flush=True)
        sp = next(p for p in points if p.curve == "slots")
        slot_result = slot_check(ports[sp.listener], proxies["main"].admin, sp.config_text, minter)
        print(f"  {slot_result.line()}", flush=True)
        for rnd in range(1, rounds + 1):
            print(f"curves: round {rnd}/{rounds}", flush=True)
            for p in points:
                if p.error or p.curve == "slots":
                    continue
                run_point(p, proxies[p.envoy], ports[p.listener], sets[p.tokens], rnd, duration, warmup,
                          args.connections)
                if p.error:
                    failed = True
                    print(f"  {p.listener:<24} FAILED: {p.error}", flush=True)
                    continue
                x = p.rounds[-1]
                tv = p.verified(p.timed)  # so far
                print(f"  {p.listener:<24} {x['rps']:>9,.0f} req/s  p99 {x['p99_us'] / 1000:.2f} ms  "
                      f"CPU {x['cpu_us']:.0f} µs/req  verifications so far (timed) {tv:,}", flush=True)
    finally:
        if b._wrk is not None and b._wrk.poll() is None:
            b._wrk.kill()
            b._wrk.wait()
        for px in proxies.values():
            px.proc.stop()
    for p in points:
        summarize(p)
        if p.result and p.curve == "workers":  # the AS's load: verifications per distinct token
            p.result["per_token"] = p.verified(p.delta) / b.distinct_sent(sets[p.tokens], p.issued, sets[p.tokens][0])
    checks = [slot_result] + [check(p, sets[p.tokens]) for p in points if p.rounds and not p.error]
    failed = failed or any(c.ok is False for c in checks) or any(p.error for p in points)
    written = plots(points, sz, img_dir)
    took = time.monotonic() - t_start
    ed = next(k for k in jwks["keys"] if k.get("crv") == "Ed25519")
    lines = [
        f"{rounds} interleaved round(s) of {duration}s per point (median shown), wrk -t1 -c{args.connections}; "
        f"EdDSA (Ed25519, kid {ed['kid']}) tokens minted with `cryptography`; Zipf s {args.zipf}, seed {args.seed}, "
        f"{sz.length:,} draws per sequence (the whole sequence sent once as the warm-up, then cycled by each "
        f"timed run from its start); the main curves' Envoy --concurrency {args.concurrency}. See bench/curves.py.",
        "",
        *tables(points, sets, sz),
        "Checks:",
        "",
        *[f"- {c.line()}" for c in checks],
        *[f"- FAILED: curve {p.curve}: {p.listener}: {p.error}" for p in points if p.error],
        "",
        "Plots: " + ", ".join(f"`{w.relative_to(b.ROOT) if w.is_relative_to(b.ROOT) else w}`" for w in written),
        "",
        f"Curves took {took:.0f}s.",
    ]
    return lines, not failed


def main(args) -> int:
    """`bench/run --curves`: the curves alone, their report written to args.out."""
    t0 = time.monotonic()
    lines, ok = run(args)
    version = b.subprocess.run([str(b.envoy.envoy_binary()), "--version"], capture_output=True, text=True).stdout
    version = (re.search(r"version: (\S+)", version) or re.search(r"(.*)", version)).group(1)
    report = "\n".join([
        f"# Tollgate bench, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: how cost grows",
        "",
        "- command: `" + " ".join(["bench/run"] + [b.shlex.quote(a) for a in b.sys.argv[1:]]) + "`",
        f"- Envoy {version}; machine: {os.cpu_count()} CPUs",
        f"- tollgate.wasm: {b.TOLLGATE_WASM.stat().st_size:,} bytes",
        "",
        "## How cost grows",
        "",
        *lines,
        "",
        f"Run time {time.monotonic() - t0:.0f}s (bench.py); result: {'ok' if ok else 'FAILED'}.",
        "",
    ])
    print()
    print(report)
    Path(args.out).write_text(report)
    print(f"bench: written to {args.out}")
    return 0 if ok else 1
