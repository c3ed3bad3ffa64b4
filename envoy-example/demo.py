"""Starts the demo deployment of envoy-example/envoy.yaml and explains how to use it.

Run it through envoy-example/run (which installs what is needed and builds the wasm).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "rig"))

import envoy  # noqa: E402
import servers  # noqa: E402
import tokens  # noqa: E402
from procs import Proc  # noqa: E402

API, ADMIN, AS1, AS2, UPSTREAM = 10000, 9901, 9100, 9200, 9300
AS1_ISSUER = f"http://127.0.0.1:{AS1}"
AS2_ISSUER = f"http://127.0.0.1:{AS2}/o"

HOWTO = f"""
Tollgate demo is up (logs in {{logs}}).

  API (Envoy + Tollgate)  http://127.0.0.1:{API}      Envoy stats  http://127.0.0.1:{ADMIN}/stats?filter=tollgate
  AS-1 oidc-provider      {AS1_ISSUER}   client demo-client / demo-secret
  AS-2 django-oauth-tk    {AS2_ISSUER}  client dot-client / dot-secret

Get a JWT access token from AS-1 (RFC 9068, audience https://api.test):
  TOKEN1=$(curl -s -u demo-client:demo-secret {AS1_ISSUER}/token \\
      -d grant_type=client_credentials -d scope=read -d resource=https://api.test/jwt | jq -r .access_token)
Get one from AS-2:
  TOKEN2=$(curl -s -u dot-client:dot-secret {AS2_ISSUER}/token/ \\
      -d grant_type=client_credentials -d scope=read | jq -r .access_token)

Opaque tokens (no resource=) are checked by introspection at the AS that minted them:
  OPAQUE1=$(curl -s -u demo-client:demo-secret {AS1_ISSUER}/token \\
      -d grant_type=client_credentials -d scope=read | jq -r .access_token)
  OPAQUE2=$(curl -s -u dot-opaque:dot-opaque-secret {AS2_ISSUER}/token/ \\
      -d grant_type=client_credentials -d scope=read | jq -r .access_token)   # starts with dot_

Or ask the gateway's one set of OAuth endpoints; it routes each call to the right server
(by client id here; /oauth2/as1/... or /oauth2/as2/... name it explicitly):
  curl -s -u demo-client:demo-secret http://127.0.0.1:{API}/oauth2/token -d grant_type=client_credentials
  curl -s -u dot-opaque:dot-opaque-secret http://127.0.0.1:{API}/oauth2/token -d grant_type=client_credentials
  curl -s http://127.0.0.1:{API}/oauth2/as1/.well-known/openid-configuration
  curl -s http://127.0.0.1:{API}/oauth2/as2/.well-known/oauth-authorization-server
(each made from the server's own document of that kind; both servers publish both kinds)

Call the protected API (the upstream echoes the headers it received, identity included):
  curl -s -H "Authorization: Bearer $TOKEN1" http://127.0.0.1:{API}/api/orders
  curl -s -H "Authorization: Bearer $TOKEN2" http://127.0.0.1:{API}/api/orders
  curl -s -H "Authorization: Bearer $OPAQUE1" http://127.0.0.1:{API}/api/orders
  curl -s -H "Authorization: Bearer $OPAQUE2" http://127.0.0.1:{API}/api/orders
  curl -si http://127.0.0.1:{API}/api/orders                                   # 401, no token
  curl -si -H "Authorization: Bearer $TOKEN1" http://127.0.0.1:{API}/api/admin/x  # 403, needs scope admin
  curl -s http://127.0.0.1:{API}/public/hello                                  # anonymous route

Ctrl-C stops everything.
"""


def start_all(logs: Path) -> list[Proc]:
    procs: list[Proc] = []
    try:
        procs.append(servers.start_upstream(UPSTREAM, logs))
        procs.append(servers.start_oidc(AS1, logs / "as1-state", logs))
        procs.append(servers.start_dot(AS2, logs / "as2-state", logs, impersonate_issuer=AS1_ISSUER))
        argv = [str(envoy.envoy_binary()), "-c", str(ROOT / "envoy-example" / "envoy.yaml"),
                "--disable-hot-restart", "--concurrency", "2", "-l", "info"]
        procs.append(Proc("envoy", argv, API, logs / "envoy.log", cwd=ROOT).start())
        wait_for_metadata()
    except BaseException:
        stop_all(procs)
        raise
    return procs


def wait_for_metadata(timeout: float = 10.0) -> None:
    """Until Tollgate has fetched both servers' metadata (its gateway answers 503 before)."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    for name in ("as1", "as2"):
        url = f"http://127.0.0.1:{API}/oauth2/{name}/.well-known/oauth-authorization-server"
        while requests.get(url, timeout=5).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.05)


def stop_all(procs: list[Proc]) -> None:
    for proc in reversed(procs):
        proc.stop()


def check() -> bool:
    """The HOWTO's calls, asserted."""
    import requests

    api = f"http://127.0.0.1:{API}"
    t1 = tokens.client_credentials(f"{AS1_ISSUER}/token", "demo-client", "demo-secret",
                                   scope="read", resource="https://api.test/jwt")["access_token"]
    t2 = tokens.client_credentials(f"{AS2_ISSUER}/token/", "dot-client", "dot-secret",
                                   scope="read")["access_token"]
    o1 = tokens.client_credentials(f"{AS1_ISSUER}/token", "demo-client", "demo-secret",
                                   scope="read")["access_token"]
    o2 = tokens.client_credentials(f"{AS2_ISSUER}/token/", "dot-opaque", "dot-opaque-secret",
                                   scope="read")["access_token"]
    g1 = tokens.client_credentials(f"{api}/oauth2/token", "demo-client", "demo-secret",
                                   scope="read")["access_token"]
    g2 = tokens.client_credentials(f"{api}/oauth2/token", "dot-opaque", "dot-opaque-secret",
                                   scope="read")["access_token"]
    cases = [
        ("AS-1 token from the gateway", "/api/orders", g1, 200),
        ("AS-2 token from the gateway", "/api/orders", g2, 200),
        ("AS-1 token", "/api/orders", t1, 200),
        ("AS-2 token", "/api/orders", t2, 200),
        ("AS-1 opaque token", "/api/orders", o1, 200),
        ("AS-2 opaque token", "/api/orders", o2, 200),
        ("no token", "/api/orders", None, 401),
        ("scope admin missing", "/api/admin/x", t1, 403),
        ("anonymous route", "/public/hello", None, 200),
    ]
    ok = True
    for name, path, token, want in cases:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        got = requests.get(api + path, headers=headers, timeout=10).status_code
        print(f"  {'ok ' if got == want else 'BAD'} {name}: {path} -> {got} (want {want})")
        ok &= got == want
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="run the example calls, then stop")
    args = parser.parse_args()
    logs = ROOT / "target" / "demo"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    procs = start_all(logs)
    try:
        if args.check:
            return 0 if check() else 1
        print(HOWTO.format(logs=logs))
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            done.wait()
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        stop_all(procs)


if __name__ == "__main__":
    sys.exit(main())
