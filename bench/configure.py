"""Plugin start cost: how long Tollgate's on_configure takes with 10 and with 100 issuers, in the
real Envoy.

Starts one Envoy (--concurrency 2, so the plugin is configured on the main thread and on each
worker) with Tollgate configured for N issuers (a route each), reads the "configured N issuer(s)
... in X ms" lines Tollgate logs, and prints them. Two configurations: every issuer with an inline
JWKS (two RSA-2048 keys and one P-256 key each: all 3N keys are parsed and prepared while
configuring; the key material repeats across issuers, under kids of their own), and every issuer
with OIDC discovery (keys fetched later, not during configure).

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
COUNTS = (10, 100)  # issue 18: plugin start with 100 issuers too
LINE = re.compile(r"configured (\d+) issuer\(s\), (\d+) route\(s\) in (\d+\.\d+) ms")


_KEYS: list[dict] = []


def public_keys() -> list[dict]:
    """Two RSA-2048 public JWKs and one P-256, generated once per process."""
    if not _KEYS:
        keys = [jwk.JWK.generate(kty="RSA", size=2048) for _ in range(2)]
        keys.append(jwk.JWK.generate(kty="EC", crv="P-256"))
        _KEYS.extend(json.loads(k.export_public()) for k in keys)
    return _KEYS


def config(inline: bool, count: int = ISSUERS) -> dict:
    issuers, routes = [], []
    for i in range(count):
        name = f"as{i}"
        issuer: dict = {"name": name, "issuer": f"https://{name}.example", "audiences": ["https://api.example"]}
        if inline:
            kids = [f"{name}-rsa-0", f"{name}-rsa-1", f"{name}-ec"]
            issuer["jwks"] = {"inline": {"keys": [k | {"kid": kid} for k, kid in zip(public_keys(), kids)]}}
        else:
            issuer["jwks"] = {"discovery": True, "upstream": "idp"}
        issuers.append(issuer)
        routes.append({"name": f"r{i}", "match": {"prefix": f"/api/{name}"},
                       "require": {"issuers": [name], "scopes": ["read"]}})
    return {"issuers": issuers, "routes": routes}


def measure(label: str, cfg: dict, concurrency: int = 2) -> list[float]:
    count = len(cfg["issuers"])
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
    ms = [float(t) for n, _, t in found if int(n) == count]
    if len(ms) < want:
        raise SystemExit(f"configure bench ({label}): expected {want} configure lines, found {len(ms)}")
    return ms


def main() -> int:
    for count in COUNTS:
        for label, inline in (("inline-jwks", True), ("discovery", False)):
            ms = measure(f"{label}-{count}", config(inline, count))
            print(f"configure, {count} issuers ({label}): median {statistics.median(ms):.2f} ms, "
                  f"max {max(ms):.2f} ms over {len(ms)} on_configure calls", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
