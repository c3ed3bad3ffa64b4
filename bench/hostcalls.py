"""Host calls per request, by call name: the real tollgate.wasm in tests/minihost, with no
Envoy in the way, so that every proxy-wasm call the plugin makes on a request is seen.

Two hosts:
    envoy    minihost's "envoy" mode: shared data with Envoy's compare-and-swap rules, a tick,
             the host clock and metrics, so the plugin takes the path it takes in Envoy
             (callouts from the background; the shared token cache)
    apisix   minihost's default, APISIX as wasm-nginx-module is: no shared data, no tick, no
             metrics (per-request callouts, a per-VM cache)

Scenarios (inline JWKS: no callout; the first request verifies, the ones counted are warm):
    warm         a cached RS256 token, the default identity headers (five)
    warm-bare    the same without identity headers
    sign         warm, on a route whose upstream receives a gateway-signed token (reused)
    anonymous    an anonymous route: the plugin's cost with no token at all

    .venv/bin/python bench/hostcalls.py [--wasm target/tollgate.wasm] [--requests 5]

Prints a markdown table: one row per host call, one column per (host, scenario), the calls of
one warm request (the same for every warm request: the script checks), and the wasm instructions
the plugin ran for it (wasmtime's fuel: a count, the same on any machine, to measure changes to
the plugin's own code by; the host's work is not in it). bench/run appends it to its report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from jwcrypto import jwk, jwt  # noqa: E402
from minihost.host import MiniHost  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning, module="jwcrypto")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=__name__)

ISSUER = "https://issuer.bench.test"
AUDIENCE = "https://api.bench.test"
SCENARIOS = ["warm", "warm-bare", "sign", "anonymous"]
# The table's last row: wasm instructions per warm request (wasmtime's fuel), host calls excluded.
WASM_INSTRUCTIONS = "wasm instructions (wasmtime fuel)"
HOSTS = ["envoy", "apisix"]


def config(jwks: dict, backend_key: dict, scenario: str) -> dict:
    cfg: dict = {
        "issuers": [{"name": "bench", "issuer": ISSUER, "audiences": [AUDIENCE],
                     "jwks": {"inline": jwks}}],
        "routes": [{"name": "anon", "match": {"prefix": "/public"}, "anonymous": True},
                   {"name": "api", "match": {"prefix": "/api"}, "require": {}}],
    }
    if scenario == "warm-bare":
        cfg["identity"] = {"headers": {}, "issuer_name_header": None, "binding_header": None}
    if scenario == "sign":
        cfg["backend_token"] = {"issuer": "https://gateway.bench.test", "keys": [backend_key]}
        cfg["routes"][1]["require"] = {"upstream_token": {"sign": {"audience": "bench"}}}
    return cfg


def token(key: jwk.JWK) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "client_id": "bench-client",
              "scope": "read write", "iat": now, "exp": now + 3600, "jti": "bench-1"}
    t = jwt.JWT(header={"alg": "RS256", "kid": key.key_id, "typ": "at+jwt"}, claims=claims)
    t.make_signed_token(key)
    return t.serialize()


def host_calls(trace: list[str]) -> Counter:
    """The host calls in one request's trace (lines "  <name> -> <status>")."""
    return Counter(line.split()[0] for line in trace if line.startswith("  "))


def measure(wasm: Path, requests: int) -> dict[tuple[str, str], Counter]:
    key = jwk.JWK.generate(kty="RSA", size=2048, kid="bench-rsa")
    jwks = {"keys": [json.loads(key.export_public())]}
    backend = jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="bench-ed")
    backend_key = json.loads(backend.export_private())
    bearer = token(key)
    out: dict[tuple[str, str], Counter] = {}
    for host_mode in HOSTS:
        for scenario in SCENARIOS:
            host = MiniHost(wasm, config(jwks, backend_key, scenario),
                            shared_data="envoy" if host_mode == "envoy" else "unimplemented", fuel=True)
            if not host.configured:
                raise SystemExit(f"hostcalls: {host_mode}/{scenario}: on_configure failed: {host.logs[-3:]}")
            path = "/public/x" if scenario == "anonymous" else "/api/x"
            headers = [("host", "api.bench.test"), ("user-agent", "bench"),
                       ("accept", "*/*"), ("x-request-id", "bench")]
            if scenario != "anonymous":
                headers.append(("authorization", f"Bearer {bearer}"))
            counts, fuel = [], []
            for i in range(requests + 1):
                before = host.fuel_used()
                r = host.request(headers, path=path)
                fuel.append(host.fuel_used() - before)
                if r.status != 200 or r.trap is not None or r.paused_without_call:
                    raise SystemExit(f"hostcalls: {host_mode}/{scenario}: request {i} not allowed: {r!r}")
                counts.append(host_calls(r.trace))
            warm = counts[1:]  # the first request verifies the token
            if any(c != warm[0] for c in warm):
                raise SystemExit(f"hostcalls: {host_mode}/{scenario}: warm requests differ: {warm}")
            out[(host_mode, scenario)] = warm[0]
            # The plugin's own work per warm request, as wasmtime counts it: the median of the
            # warm requests (the hash maps' random seeds move it by a few instructions).
            out[(host_mode, scenario)][WASM_INSTRUCTIONS] = int(statistics.median(fuel[1:]))
    return out


def table(results: dict[tuple[str, str], Counter]) -> str:
    columns = [(h, s) for h in HOSTS for s in SCENARIOS]
    names = sorted({n for c in results.values() for n in c} - {WASM_INSTRUCTIONS})
    head = "| host call | " + " | ".join(f"{h} {s}" for h, s in columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    lines = [head, rule]
    for name in names:
        lines.append(f"| `{name}` | " + " | ".join(str(results[c][name] or "") for c in columns) + " |")
    calls = {c: sum(v for k, v in results[c].items() if k != WASM_INSTRUCTIONS) for c in columns}
    lines.append("| **total** | " + " | ".join(f"**{calls[c]}**" for c in columns) + " |")
    lines.append(f"| {WASM_INSTRUCTIONS} | " + " | ".join(f"{results[c][WASM_INSTRUCTIONS]:,}" for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wasm", type=Path, default=ROOT / "target" / "tollgate.wasm")
    ap.add_argument("--requests", type=int, default=5, help="warm requests per scenario (all must agree)")
    args = ap.parse_args()
    print(table(measure(args.wasm, args.requests)))


if __name__ == "__main__":
    main()
