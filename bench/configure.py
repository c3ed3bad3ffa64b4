"""Plugin start cost: how long Tollgate's on_configure takes with 10 issuers, in the real Envoy.

Starts one Envoy (--concurrency 2, so the plugin is configured on the main thread and on each
worker) with Tollgate configured for 10 issuers, reads the "configured N issuer(s) ... in X ms"
lines Tollgate logs, and prints them. Two configurations: every issuer with an inline JWKS (two
RSA-2048 keys and one P-256 key each: all 30 keys are parsed and prepared while configuring), and
every issuer with OIDC discovery (keys fetched later, not during configure).

Run: .venv/bin/python bench/configure.py  (bench/run runs it too).
"""
from __future__ import annotations

import json
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "rig"))

import envoy  # noqa: E402  (tests/rig)

from jwcrypto import jwk  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning, module="jwcrypto")

WORK = ROOT / "target" / "bench"
ISSUERS = 10
LINE = re.compile(r"configured (\d+) issuer\(s\), (\d+) route\(s\) in (\d+\.\d+) ms")


def config(inline: bool) -> dict:
    issuers, routes = [], []
    for i in range(ISSUERS):
        name = f"as{i}"
        issuer: dict = {"name": name, "issuer": f"https://{name}.example", "audiences": ["https://api.example"]}
        if inline:
            keys = [jwk.JWK.generate(kty="RSA", size=2048, kid=f"{name}-rsa-{j}") for j in range(2)]
            keys.append(jwk.JWK.generate(kty="EC", crv="P-256", kid=f"{name}-ec"))
            issuer["jwks"] = {"inline": {"keys": [json.loads(k.export_public()) for k in keys]}}
        else:
            issuer["jwks"] = {"discovery": True, "upstream": "idp"}
        issuers.append(issuer)
        routes.append({"name": f"r{i}", "match": {"prefix": f"/api/{name}"},
                       "require": {"issuers": [name], "scopes": ["read"]}})
    return {"issuers": issuers, "routes": routes}


def measure(label: str, cfg: dict, concurrency: int = 2) -> list[float]:
    proc = envoy.start_envoy(plugin_config=cfg, clusters={"idp": None, "upstream": None}, concurrency=concurrency,
                             log_dir=WORK, name=f"configure-{label}")
    try:
        deadline = time.monotonic() + 10
        want = concurrency + 1  # main thread + each worker at least
        while True:
            found = LINE.findall(proc.log_text())
            if len(found) >= want or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        proc.stop()
    ms = [float(t) for n, _, t in found if int(n) == ISSUERS]
    if len(ms) < want:
        raise SystemExit(f"configure bench ({label}): expected {want} configure lines, found {len(ms)}")
    return ms


def main() -> int:
    rows = []
    for label, inline in (("inline-jwks", True), ("discovery", False)):
        ms = measure(label, config(inline))
        rows.append((label, ms))
        print(f"configure, {ISSUERS} issuers ({label}): median {statistics.median(ms):.2f} ms, "
              f"max {max(ms):.2f} ms over {len(ms)} on_configure calls", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
