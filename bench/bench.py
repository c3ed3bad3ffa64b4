"""Tollgate benchmark: ONE Envoy, one listener per filter setup, wrk against each, one table.

Run it through bench/run (which installs and builds what is missing). Listeners, all on 127.0.0.1:

    upstream     direct_response 200 (the "real upstream" every other listener routes to)
    passthrough  router only
    noop         a wasm filter that reads one header (bench/noop: the host's floor)
    tg-warm      Tollgate, inline JWKS, verified-token cache on (one token repeated)
    tg-cold      Tollgate, inline JWKS, cache.max_entries 0 (every request is verified)
    jwt-nocache  Envoy's native jwt_authn, same JWKS inline, no JWT cache
    jwt-cache    native jwt_authn with jwt_cache_config

Each row drives one listener with `wrk -t1 -c16` and a Lua script that cycles through a token file
(one token for warm rows, a pre-minted set of distinct valid tokens for cold rows). A row whose
probe request is not 200, or where wrk saw any 4xx/5xx or socket error, is marked FAILED and the
command exits 1: a benchmark of refusals measures nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "rig"))

import envoy  # noqa: E402  (tests/rig)
from procs import free_port  # noqa: E402

from jwcrypto import jwk, jwt  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning, module="jwcrypto")

BENCH = ROOT / "bench"
WORK = ROOT / "target" / "bench"
TOLLGATE_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "tollgate.wasm"
NOOP_DIR = BENCH / "noop"
NOOP_TARGET = ROOT / "target" / "bench-noop"
NOOP_WASM = NOOP_TARGET / "wasm32-wasip1" / "release" / "bench_noop.wasm"
LUA = BENCH / "tokens.lua"

ISSUER = "https://issuer.bench.test"
AUDIENCE = "https://api.bench.test"
PATH = "/api/bench"
JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
KIDS = {"RS256": "rsa-2048", "PS256": "rsa-2048", "ES256": "p256", "EdDSA": "ed25519"}


# --- keys and tokens ----------------------------------------------------------------------------

def make_keys() -> dict[str, jwk.JWK]:
    return {
        "rsa-2048": jwk.JWK.generate(kty="RSA", size=2048, kid="rsa-2048"),
        "p256": jwk.JWK.generate(kty="EC", crv="P-256", kid="p256"),
        "ed25519": jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="ed25519"),
    }


def public_jwks(keys: dict[str, jwk.JWK]) -> dict:
    # No "alg" on the RSA key: the same key signs RS256 and PS256 tokens.
    return {"keys": [json.loads(k.export_public()) | {"use": "sig"} for k in keys.values()]}


def mint(keys: dict[str, jwk.JWK], alg: str, n: int) -> list[str]:
    """n distinct valid access tokens (distinct jti and sub), valid for a day."""
    key = keys[KIDS[alg]]
    now = int(time.time())
    out = []
    for i in range(n):
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": f"user-{i}", "client_id": "bench-client",
            "scope": "read", "iat": now - 10, "exp": now + 86400, "jti": f"{alg}-{i}-{os.urandom(6).hex()}",
        }
        token = jwt.JWT(header={"alg": alg, "kid": key.key_id, "typ": "at+jwt"}, claims=claims)
        token.make_signed_token(key)
        out.append(token.serialize())
    return out


# --- Envoy configuration ------------------------------------------------------------------------

def router() -> dict:
    return {"name": "envoy.filters.http.router", "typed_config": {"@type": envoy.ROUTER_TYPE}}


def listener(name: str, port: int, http_filters: list[dict], route: dict) -> dict:
    hcm = {
        "@type": envoy.HCM_TYPE,
        "stat_prefix": name,
        "codec_type": "AUTO",
        "route_config": {
            "name": name,
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{"name": name, "match": {"prefix": "/"}, **route}]}],
        },
        "http_filters": http_filters + [router()],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}],
    }


def tollgate_config(jwks: dict, cache_entries: int | None) -> dict:
    cfg: dict = {
        "issuers": [{
            "name": "bench", "issuer": ISSUER, "jwks": {"inline": jwks}, "audiences": [AUDIENCE],
            "algorithms": sorted(set(KIDS)),
        }],
        "routes": [{"name": "api", "match": {"prefix": "/"}, "require": {}}],
    }
    if cache_entries is not None:
        cfg["cache"] = {"max_entries": cache_entries}
    return cfg


def jwt_authn(jwks: dict, cache: bool) -> dict:
    provider: dict = {
        "issuer": ISSUER, "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": json.dumps(jwks)}, "forward": True,
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": JWT_AUTHN_TYPE,
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def bootstrap(ports: dict[str, int], admin_port: int, jwks: dict) -> dict:
    to_upstream = {"route": {"cluster": "upstream", "timeout": "15s"}}

    def wasm(path: Path, cfg: dict, vm_id: str) -> dict:
        return envoy.wasm_filter(path, cfg, vm_id=vm_id)  # own vm_id: own VM and shared data

    filters = {
        "passthrough": [],
        "noop": [wasm(NOOP_WASM, {}, "noop")],
        "tg-warm": [wasm(TOLLGATE_WASM, tollgate_config(jwks, None), "tollgate-warm")],
        "tg-cold": [wasm(TOLLGATE_WASM, tollgate_config(jwks, 0), "tollgate-cold")],
        "jwt-nocache": [jwt_authn(jwks, cache=False)],
        "jwt-cache": [jwt_authn(jwks, cache=True)],
    }
    listeners = [listener("upstream", ports["upstream"], [], {"direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}})]
    listeners += [listener(name, ports[name], f, to_upstream) for name, f in filters.items()]
    return {
        "node": {"id": "tollgate-bench", "cluster": "tollgate-bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": [envoy._cluster("upstream", ports["upstream"])]},
    }


# --- scenarios ----------------------------------------------------------------------------------

@dataclass
class Row:
    label: str
    listener: str
    tokens: str  # token set name (file target/bench/tokens-<name>.txt)
    native: str | None = None  # label of the native row this one is compared with
    rounds: list[dict] = field(default_factory=list)
    result: dict | None = None
    error: str | None = None


def scenarios(algs: list[str]) -> list[Row]:
    rows = [
        Row("passthrough (router only)", "passthrough", "warm-RS256"),
        Row("no-op wasm (reads 1 header)", "noop", "warm-RS256"),
    ]
    rows += [Row(f"native jwt_authn + cache, warm {a}", "jwt-cache", f"warm-{a}") for a in ("RS256", "ES256")]
    rows += [Row(f"native jwt_authn no cache, {a}", "jwt-nocache", f"cold-{a}") for a in algs]
    rows += [Row(f"tollgate warm {a}", "tg-warm", f"warm-{a}", native=f"native jwt_authn + cache, warm {a}")
             for a in ("RS256", "ES256")]
    rows += [Row(f"tollgate cold {a}", "tg-cold", f"cold-{a}", native=f"native jwt_authn no cache, {a}") for a in algs]
    return rows


# --- running ------------------------------------------------------------------------------------

_wrk: subprocess.Popen | None = None


def probe(port: int, token: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def run_wrk(port: int, token_file: Path, seconds: int, connections: int) -> dict:
    """wrk -t1 -cN -dS with tokens.lua; returns the JSON line the script's done() prints."""
    global _wrk
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(LUA),
            f"http://127.0.0.1:{port}{PATH}", "--", str(token_file)]
    _wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = _wrk.communicate()
    rc, _wrk = _wrk.returncode, None
    m = re.search(r"^BENCH (\{.*\})$", out, re.M)
    if rc != 0 or not m:
        raise RuntimeError(f"wrk failed (rc {rc}):\n{out}")
    return json.loads(m.group(1))


def fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table(rows: list[Row]) -> str:
    by_label = {r.label: r for r in rows}

    def rps(label: str | None) -> float | None:
        r = by_label.get(label) if label else None
        return r.result["rps"] if r and r.result else None

    base, floor = rps("passthrough (router only)"), rps("no-op wasm (reads 1 header)")
    lines = [
        "| scenario | req/s | spread | p50 ms | p99 ms | vs passthrough | vs no-op floor | vs native |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if not r.result:
            lines.append(f"| {r.label} | FAILED: {r.error} | | | | | | |")
            continue
        x = r.result
        lines.append(
            f"| {r.label} | {x['rps']:,.0f} | {x['spread']:.0%} | {x['p50_us'] / 1000:.2f} | {x['p99_us'] / 1000:.2f} | "
            f"{fmt_ratio(x['rps'], base)} | {fmt_ratio(x['rps'], floor)} | {fmt_ratio(x['rps'], rps(r.native))} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads (default 1)")
    ap.add_argument("--duration", type=int, default=10, help="whole seconds per row and round (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows the median (default 3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 s per row, fewer tokens")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--tokens", type=int, default=2000, help="distinct tokens per cold set (default 2000)")
    ap.add_argument("--algs", default="RS256,ES256,PS256,EdDSA", help="algorithms of the cold rows")
    ap.add_argument("--only", help="run only rows whose label contains this text (plus passthrough and no-op)")
    ap.add_argument("--out", default=str(BENCH / "last-run.md"), help="where to write the table")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.rounds, args.tokens = 2, 1, min(args.tokens, 200)
    warmup = min(2, max(1, args.duration // 5))
    slice_s = args.duration
    algs = [a for a in args.algs.split(",") if a]
    if unknown := set(algs) - set(KIDS):
        ap.error(f"unknown algorithms: {sorted(unknown)}")

    # SIGTERM ends the run like Ctrl-C does: through the finally blocks that stop what we started.
    # (SIGINT explicitly too: a shell starting us in the background leaves SIGINT ignored.)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    keys = make_keys()
    jwks = public_jwks(keys)
    token_sets = {f"warm-{a}": mint(keys, a, 1) for a in ("RS256", "ES256")}
    token_sets |= {f"cold-{a}": mint(keys, a, args.tokens) for a in algs}
    for name, toks in token_sets.items():
        (WORK / f"tokens-{name}.txt").write_text("\n".join(toks) + "\n")
    print(f"bench: keys and {sum(map(len, token_sets.values()))} tokens minted in {time.monotonic() - t0:.1f}s", flush=True)

    rows = scenarios(algs)
    if args.only:
        rows = [r for r in rows if r.listener in ("passthrough", "noop") or args.only in r.label]
    names = ["upstream", "passthrough", "noop", "tg-warm", "tg-cold", "jwt-nocache", "jwt-cache"]
    ports = {n: free_port() for n in names}
    admin_port = free_port()
    cfg = bootstrap(ports, admin_port, jwks)
    cfg_path = WORK / "envoy.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    argv = [str(envoy.envoy_binary()), "-c", str(cfg_path), "--concurrency", str(args.concurrency),
            "--base-id", str(os.getpid() % 100000), "--disable-hot-restart", "-l", "warning"]
    proc = envoy.EnvoyProc(name="envoy-bench", argv=argv, port=ports["upstream"], log_path=WORK / "envoy.log",
                           admin_port=admin_port, config_path=cfg_path)
    (WORK / "envoy.log").unlink(missing_ok=True)
    failed = False
    try:
        proc.start(timeout=60)
        print(f"bench: envoy pid {proc.pid} up (concurrency {args.concurrency}); "
              f"{args.rounds} round(s) of {args.duration}s per row, {warmup}s warm-up, wrk -t1 -c{args.connections}", flush=True)
        # Rounds: every row runs once per round, rows interleaved, and the table shows each row's
        # median round. On a shared or throttled machine the throughput drifts over minutes; this
        # spreads the drift over all rows instead of charging it to whichever row ran then.
        for rnd in range(1, args.rounds + 1):
            print(f"round {rnd}/{args.rounds}", flush=True)
            for r in rows:
                if r.error:
                    continue
                token_file = WORK / f"tokens-{r.tokens}.txt"
                status = probe(ports[r.listener], token_sets[r.tokens][0])
                if status != 200:
                    r.error, failed = f"probe answered {status}", True
                    print(f"  {r.label:<40} {r.error}", flush=True)
                    continue
                if rnd == 1:  # V8 tiers up the module and caches fill: once per listener is enough
                    run_wrk(ports[r.listener], token_file, warmup, args.connections)
                x = run_wrk(ports[r.listener], token_file, slice_s, args.connections)
                bad = x["status_errors"] + x["connect"] + x["read"] + x["write"] + x["timeout"]
                if bad or x["requests"] == 0:
                    r.error, failed = f"{x['status_errors']} non-2xx, {bad - x['status_errors']} socket errors", True
                    print(f"  {r.label:<40} {r.error}", flush=True)
                    continue
                x["rps"] = x["requests"] / (x["duration_us"] / 1e6)
                r.rounds.append(x)
                print(f"  {r.label:<40} {x['rps']:>9,.0f} req/s  p50 {x['p50_us'] / 1000:.2f} ms  "
                      f"p99 {x['p99_us'] / 1000:.2f} ms", flush=True)
        for r in rows:
            if r.rounds and not r.error:
                r.result = {k: statistics.median(x[k] for x in r.rounds) for k in ("rps", "p50_us", "p99_us")}
                r.result["spread"] = (max(x["rps"] for x in r.rounds) - min(x["rps"] for x in r.rounds)) / r.result["rps"]
        counters = envoy.stats(admin_port, "")
    finally:
        if _wrk is not None and _wrk.poll() is None:
            _wrk.kill()
            _wrk.wait()
        proc.stop()

    version = subprocess.run([str(envoy.envoy_binary()), "--version"], capture_output=True, text=True).stdout
    version = (re.search(r"version: (\S+)", version) or re.search(r"(.*)", version)).group(1)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    interesting = {k: v for k, v in counters.items()
                   if re.search(r"(tollgate\.(issuer\.bench\.(allowed|cache_hit)|.*denied)|jwt_authn\.(allowed|denied))", k) and v}
    report = "\n".join([
        f"# Tollgate bench, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        "- command: `" + " ".join(["bench/run"] + [shlex.quote(a) for a in sys.argv[1:]]) + "`",
        f"- Envoy {version}, --concurrency {args.concurrency}; wrk -t1 -c{args.connections}, "
        f"{args.rounds} interleaved round(s) of {args.duration}s per row (median shown) after a {warmup}s warm-up; "
        f"cold sets: {args.tokens} distinct tokens per alg",
        f"- machine: {os.cpu_count()} CPUs, {cpu}",
        f"- tollgate.wasm: {TOLLGATE_WASM.stat().st_size:,} bytes",
        "",
        table(rows),
        "",
        "req/s, p50, p99: median over the rounds; spread: (max - min) / median req/s over the rounds. "
        "vs native: warm rows against native jwt_authn with jwt_cache_config, cold rows against native "
        "jwt_authn without cache, same algorithm.",
        "",
        "Counters after the run: " + ", ".join(f"`{k}` {v:,}" for k, v in sorted(interesting.items())),
        "",
    ])
    print()
    print(report)
    Path(args.out).write_text(report)
    print(f"bench: written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)
