"""Starts the demo deployment of envoy-example/envoy.yaml and explains how to use it.

Run it through envoy-example/run (which installs what is needed and builds the wasm).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "rig"))

import envoy  # noqa: E402
import pki  # noqa: E402
import servers  # noqa: E402
import tokens  # noqa: E402
from procs import Proc, port_open  # noqa: E402

API, API_TLS, ADMIN, AS1, AS2, UPSTREAM, PDP = 10000, 10443, 9901, 9100, 9200, 9300, 9400
AS1_ISSUER = f"http://127.0.0.1:{AS1}"
AS2_ISSUER = f"http://127.0.0.1:{AS2}/o"
STATE = ROOT / "target" / "demo"  # logs, servers' state and the demo PKI; emptied at every start
# The TLS listener's certificates and a client certificate (tests/rig/pki.py, new at every
# start; envoy-example/envoy.yaml names them relative to ROOT).
PKI = STATE / "pki"

# `dpop KEYFILE METHOD URL [ACCESS_TOKEN]`: prints an RFC 9449 DPoP proof (ES256; `ath` when given
# the access token) signed with the P-256 key in KEYFILE (PEM), with PyPI jwcrypto from .venv.
# The README shows this same line (tests/e2e/test_deploy.py checks that it does, and runs it).
DPOP_FN = (
    """dpop() { .venv/bin/python -c 'import sys,time,uuid,hashlib,base64;from jwcrypto import jwk,jwt;"""
    """k=jwk.JWK.from_pem(open(sys.argv[1],"rb").read());"""
    """c={"jti":str(uuid.uuid4()),"htm":sys.argv[2],"htu":sys.argv[3],"iat":int(time.time())};"""
    """c.update(("ath",base64.urlsafe_b64encode(hashlib.sha256(a.encode()).digest()).decode().rstrip("=")) """
    """for a in sys.argv[4:]);"""
    """t=jwt.JWT(header={"typ":"dpop+jwt","alg":"ES256","jwk":k.export_public(as_dict=True)},claims=c);"""
    """t.make_signed_token(k);print(t.serialize())' "$@"; }"""
)

HOWTO = f"""
Tollgate demo is up (logs in {{logs}}).

  API (Envoy + Tollgate)  http://127.0.0.1:{API}      Envoy stats  http://127.0.0.1:{ADMIN}/stats?filter=tollgate
  the same API over TLS   https://127.0.0.1:{API_TLS}     asks for a client certificate (mTLS); CA, client
                                                  certificate and key in {{pki}}
  AS-1 oidc-provider      {AS1_ISSUER}   client demo-client / demo-secret
                                                  DPoP: dpop-client / dpop-secret, mTLS: mtls-client / mtls-secret
  AS-2 django-oauth-tk    {AS2_ISSUER}  client dot-client / dot-secret
  PDP  Cerbos (AuthZEN)   http://127.0.0.1:{PDP}/access/v1/evaluation   policies in {{state}}/policies

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

DPoP (RFC 9449; run these from the repository root): /api/dpop/... takes only DPoP-bound tokens,
each call with a new proof of the key.
A key, and a one-line proof generator (dpop KEYFILE METHOD URL [ACCESS_TOKEN]):
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {{state}}/dpop-key.pem
  {DPOP_FN}
A token from AS-1 bound to that key (the token request carries a proof too), then the call:
  DTOKEN=$(curl -s -u dpop-client:dpop-secret -H "DPoP: $(dpop {{state}}/dpop-key.pem POST {AS1_ISSUER}/token)" \\
      {AS1_ISSUER}/token -d grant_type=client_credentials -d scope=read -d resource=https://api.test/jwt | jq -r .access_token)
  curl -s -H "Authorization: DPoP $DTOKEN" \\
      -H "DPoP: $(dpop {{state}}/dpop-key.pem GET http://127.0.0.1:{API}/api/dpop/hello "$DTOKEN")" \\
      http://127.0.0.1:{API}/api/dpop/hello | jq -r '.headers["x-tollgate-cnf"]'    # dpop;jkt=<the key's thumbprint>
  curl -si -H "Authorization: DPoP $DTOKEN" http://127.0.0.1:{API}/api/dpop/hello     # 401, no proof
  curl -si -H "Authorization: Bearer $DTOKEN" http://127.0.0.1:{API}/api/dpop/hello   # 401, DPoP-bound token as Bearer

mTLS (RFC 8705; from the repository root too): /api/mtls/... takes only tokens bound to the client
certificate of the connection.
Get one from the gateway on the TLS listener (Envoy hands AS-1 the certificate), then call:
  PKI={{pki}}
  MTOKEN=$(curl -s --cacert $PKI/ca.pem --cert $PKI/client-a.pem --key $PKI/client-a-key.pem -u mtls-client:mtls-secret \\
      https://127.0.0.1:{API_TLS}/oauth2/token -d grant_type=client_credentials -d scope=read -d resource=https://api.test/jwt | jq -r .access_token)
  curl -s --cacert $PKI/ca.pem --cert $PKI/client-a.pem --key $PKI/client-a-key.pem -H "Authorization: Bearer $MTOKEN" \\
      https://127.0.0.1:{API_TLS}/api/mtls/hello | jq -r '.headers["x-tollgate-cnf"]'   # mtls;x5t=<the certificate's x5t#S256>
  curl -si --cacert $PKI/ca.pem -H "Authorization: Bearer $MTOKEN" https://127.0.0.1:{API_TLS}/api/mtls/hello   # 401, no certificate
  curl -si -H "Authorization: Bearer $MTOKEN" http://127.0.0.1:{API}/api/mtls/hello                     # 401, plain listener

Authorization beyond scopes (issue 16):
/api/docs/{{owner}}/{{id}} asks Cerbos (AuthZEN): the owner (the token's client_id) or an admin
(roles ["admin"] in the token) may read, write and delete; anyone else gets 403.
  curl -s -H "Authorization: Bearer $TOKEN1" http://127.0.0.1:{API}/api/docs/demo-client/1    # 200, the owner
  curl -si -H "Authorization: Bearer $TOKEN1" http://127.0.0.1:{API}/api/docs/alice/1         # 403 insufficient_permissions
  ADMIN=$(curl -s -u admin-client:admin-secret {AS1_ISSUER}/token \\
      -d grant_type=client_credentials -d scope=read -d resource=https://api.test/jwt | jq -r .access_token)
  curl -s -H "Authorization: Bearer $ADMIN" http://127.0.0.1:{API}/api/docs/alice/1           # 200, admin
/api/stepup needs a login at urn:tollgate:loa:2 within 300 s (RFC 9470); a client_credentials
token has no acr: 401 with the step-up challenge (log in through {AS1_ISSUER}/auth with
acr_values=urn:tollgate:loa:2, picking loa:2 on the login page, to pass):
  curl -si -H "Authorization: Bearer $TOKEN1" http://127.0.0.1:{API}/api/stepup/x | grep -i www-authenticate
The API's protected-resource metadata (RFC 9728; every 401 names it in resource_metadata):
  curl -s http://127.0.0.1:{API}/.well-known/oauth-protected-resource/api | jq
/api/partners is for subscribed clients only (demo-client, dot-opaque), which must also name
themselves in X-IBM-Client-Id:
  curl -s -H "Authorization: Bearer $TOKEN1" -H "X-IBM-Client-Id: demo-client" http://127.0.0.1:{API}/api/partners/x  # 200
  curl -si -H "Authorization: Bearer $TOKEN1" http://127.0.0.1:{API}/api/partners/x            # 400, no client id header
  curl -si -H "Authorization: Bearer $TOKEN2" -H "X-IBM-Client-Id: dot-client" http://127.0.0.1:{API}/api/partners/x  # 403, not subscribed

What the upstream receives (issue 17; the echo upstream shows it):
/api/exchanged/... takes AS-1 tokens and exchanges each at AS-1 (RFC 8693) for a token for
https://next.test: the upstream's Authorization is that token (aud https://next.test, act
tollgate-exchanger), its identity headers are still the caller's.
  curl -s -H "Authorization: Bearer $TOKEN1" http://127.0.0.1:{API}/api/exchanged/x | jq -r .headers.authorization
/api/signed/... takes any issuer's token and passes the upstream a token the gateway signs
(x-tollgate-jwt), verifiable with the gateway's JWKS:
  curl -s -H "Authorization: Bearer $OPAQUE2" http://127.0.0.1:{API}/api/signed/x | jq -r '.headers["x-tollgate-jwt"]'
  curl -si http://127.0.0.1:{API}/.well-known/tollgate/jwks.json

Ctrl-C stops everything.
"""


def start_all(logs: Path) -> list[Proc]:
    procs: list[Proc] = []
    try:
        pki.make(PKI)
        procs.append(servers.start_upstream(UPSTREAM, logs))
        procs.append(servers.start_oidc(AS1, logs / "as1-state", logs))
        procs.append(servers.start_dot(AS2, logs / "as2-state", logs, impersonate_issuer=AS1_ISSUER))
        procs.append(servers.start_cerbos(PDP, logs / "policies", logs))
        argv = [str(envoy.envoy_binary()), "-c", str(ROOT / "envoy-example" / "envoy.yaml"),
                "--disable-hot-restart", "--concurrency", "2", "-l", "info"]
        procs.append(Proc("envoy", argv, API, logs / "envoy.log", cwd=ROOT).start())
        wait_for_metadata()
    except BaseException:
        stop_all(procs)
        raise
    return procs


def wait_for_metadata(timeout: float = 10.0) -> None:
    """Until the TLS listener is up and Tollgate has fetched both servers' metadata (its
    gateway answers 503 before)."""
    import requests

    deadline = time.monotonic() + timeout
    while not port_open(API_TLS) and time.monotonic() < deadline:
        time.sleep(0.05)
    for name in ("as1", "as2"):
        url = f"http://127.0.0.1:{API}/oauth2/{name}/.well-known/oauth-authorization-server"
        while requests.get(url, timeout=5).status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.05)


def stop_all(procs: list[Proc]) -> None:
    for proc in reversed(procs):
        proc.stop()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def dpop_proof(key, method: str, url: str, token: str | None = None) -> str:
    """An RFC 9449 proof for one request, signed with the jwcrypto key `key` (ES256): what the
    README's one-line `dpop` function prints."""
    from jwcrypto import jwt

    claims = {"jti": str(uuid.uuid4()), "htm": method, "htu": url, "iat": int(time.time())}
    if token is not None:
        claims["ath"] = b64url(hashlib.sha256(token.encode()).digest())
    proof = jwt.JWT(header={"typ": "dpop+jwt", "alg": "ES256", "jwk": key.export_public(as_dict=True)},
                    claims=claims)
    proof.make_signed_token(key)
    return proof.serialize()


def check() -> bool:
    """The HOWTO's calls, asserted."""
    import warnings

    import requests
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import KeySet
    from jwcrypto import jwk

    api = f"http://127.0.0.1:{API}"
    api_tls = f"https://127.0.0.1:{API_TLS}"
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

    # DPoP (RFC 9449): dpop-client's token from AS-1, bound to a key of ours (cnf.jkt).
    key = jwk.JWK.generate(kty="EC", crv="P-256")

    def dpop_token_for(resource):  # a JWT for the resource, opaque (introspected) without one
        data = {"grant_type": "client_credentials", "scope": "read", **({"resource": resource} if resource else {})}
        r = requests.post(f"{AS1_ISSUER}/token", auth=("dpop-client", "dpop-secret"), data=data, timeout=10,
                          headers={"DPoP": dpop_proof(key, "POST", f"{AS1_ISSUER}/token")})
        r.raise_for_status()
        return r.json()["access_token"]

    dpop_token, dpop_opaque = dpop_token_for("https://api.test/jwt"), dpop_token_for(None)
    dpop_url = f"{api}/api/dpop/hello"

    # mTLS (RFC 8705): mtls-client's token from the gateway on the TLS listener, bound to the
    # demo client certificate (cnf.x5t#S256) that Envoy passes to AS-1 in XFCC.
    cert = (str(PKI / "client-a.pem"), str(PKI / "client-a-key.pem"))
    ca = str(PKI / "ca.pem")

    def mtls_token_for(resource):
        data = {"grant_type": "client_credentials", "scope": "read", **({"resource": resource} if resource else {})}
        r = requests.post(f"{api_tls}/oauth2/token", auth=("mtls-client", "mtls-secret"), cert=cert, verify=ca,
                          data=data, timeout=10)
        r.raise_for_status()
        return r.json()["access_token"]

    mtls_token, mtls_opaque = mtls_token_for("https://api.test/jwt"), mtls_token_for(None)
    x5t = pki.x5t_s256((PKI / "client-a.pem").read_text())

    def get(url, token, scheme="Bearer", **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"{scheme} {token}"
        return requests.get(url, headers=headers, timeout=10, **kwargs)

    def bearer(path, token):
        return lambda: get(api + path, token)

    cases = [
        ("AS-1 token from the gateway", "/api/orders", bearer("/api/orders", g1), 200, None),
        ("AS-2 token from the gateway", "/api/orders", bearer("/api/orders", g2), 200, None),
        ("AS-1 token", "/api/orders", bearer("/api/orders", t1), 200, None),
        ("AS-2 token", "/api/orders", bearer("/api/orders", t2), 200, None),
        ("AS-1 opaque token", "/api/orders", bearer("/api/orders", o1), 200, None),
        ("AS-2 opaque token", "/api/orders", bearer("/api/orders", o2), 200, None),
        ("no token", "/api/orders", bearer("/api/orders", None), 401, None),
        ("scope admin missing", "/api/admin/x", bearer("/api/admin/x", t1), 403, None),
        ("anonymous route", "/public/hello", bearer("/public/hello", None), 200, None),
        ("DPoP token with its proof", "/api/dpop/hello",
         lambda: get(dpop_url, dpop_token, "DPoP",
                     headers={"DPoP": dpop_proof(key, "GET", dpop_url, dpop_token)}),
         200, f"dpop;jkt={key.thumbprint()}"),
        ("opaque DPoP token with its proof", "/api/dpop/hello",
         lambda: get(dpop_url, dpop_opaque, "DPoP",
                     headers={"DPoP": dpop_proof(key, "GET", dpop_url, dpop_opaque)}),
         200, f"dpop;jkt={key.thumbprint()}"),
        ("DPoP token without a proof", "/api/dpop/hello", lambda: get(dpop_url, dpop_token, "DPoP"), 401, None),
        ("DPoP token as a bearer token", "/api/dpop/hello", lambda: get(dpop_url, dpop_token), 401, None),
        ("DPoP token, proof by another key", "/api/dpop/hello",
         lambda: get(dpop_url, dpop_token, "DPoP", headers={"DPoP": dpop_proof(
             jwk.JWK.generate(kty="EC", crv="P-256"), "GET", dpop_url, dpop_token)}), 401, None),
        ("unbound token on the DPoP route", "/api/dpop/hello", bearer("/api/dpop/hello", t1), 401, None),
        ("mTLS token with its certificate", "TLS /api/mtls/hello",
         lambda: get(f"{api_tls}/api/mtls/hello", mtls_token, cert=cert, verify=ca),
         200, f"mtls;x5t={x5t}"),
        ("opaque mTLS token with its certificate", "TLS /api/mtls/hello",
         lambda: get(f"{api_tls}/api/mtls/hello", mtls_opaque, cert=cert, verify=ca), 200, f"mtls;x5t={x5t}"),
        ("mTLS token without a certificate", "TLS /api/mtls/hello",
         lambda: get(f"{api_tls}/api/mtls/hello", mtls_token, verify=ca), 401, None),
        ("mTLS token on the plain listener", "/api/mtls/hello", bearer("/api/mtls/hello", mtls_token), 401, None),
        ("unbound token on the mTLS route", "TLS /api/mtls/hello",
         lambda: get(f"{api_tls}/api/mtls/hello", t1, cert=cert, verify=ca), 401, None),
    ]
    # Authorization beyond scopes: the AuthZEN route, step-up, subscriptions and the client-id
    # header.
    admin = tokens.client_credentials(f"{AS1_ISSUER}/token", "admin-client", "admin-secret",
                                      scope="read", resource="https://api.test/jwt")["access_token"]
    loa2 = tokens.oidc_id_token(AS1_ISSUER, "demo-client", "demo-secret", "http://127.0.0.1/cb",
                                scope="openid read", resource="https://api.test/jwt",
                                acr="urn:tollgate:loa:2")["access_token"]
    loa1 = tokens.oidc_id_token(AS1_ISSUER, "demo-client", "demo-secret", "http://127.0.0.1/cb",
                                scope="openid read", resource="https://api.test/jwt")["access_token"]
    ibm = {"headers": {"X-IBM-Client-Id": "demo-client"}}
    cases += [
        ("owner's document (Cerbos)", "/api/docs/demo-client/1", bearer("/api/docs/demo-client/1", t1), 200, None),
        ("someone else's document", "/api/docs/alice/1", bearer("/api/docs/alice/1", t1), 403, None),
        ("admin role from AS-1", "/api/docs/alice/1", bearer("/api/docs/alice/1", admin), 200, None),
        ("opaque AS-2 token, its own document", "/api/docs/dot-opaque/1",
         bearer("/api/docs/dot-opaque/1", o2), 200, None),
        ("step-up: login at loa:2", "/api/stepup/x", bearer("/api/stepup/x", loa2), 200, None),
        ("step-up: login at loa:1", "/api/stepup/x", bearer("/api/stepup/x", loa1), 401, None),
        ("step-up: no login at all", "/api/stepup/x", bearer("/api/stepup/x", t1), 401, None),
        ("subscribed client with its header", "/api/partners/x",
         lambda: get(f"{api}/api/partners/x", t1, **ibm), 200, None),
        ("subscribed client without its header", "/api/partners/x", bearer("/api/partners/x", t1), 400, None),
        ("subscribed client naming another", "/api/partners/x",
         lambda: get(f"{api}/api/partners/x", t1, headers={"X-IBM-Client-Id": "dot-opaque"}), 403, None),
        ("client not subscribed", "/api/partners/x",
         lambda: get(f"{api}/api/partners/x", t2, headers={"X-IBM-Client-Id": "dot-client"}), 403, None),
        ("protected-resource metadata (RFC 9728)", "/.well-known/oauth-protected-resource/api",
         lambda: prm_ok(get(f"{api}/.well-known/oauth-protected-resource/api", None)), 200, None),
        ("401 names the metadata", "/api/orders",
         lambda: names_metadata(get(f"{api}/api/orders", None)), 401, None),
    ]
    # What the upstream receives (issue 17): an exchanged token, a gateway-signed one.
    cases += [
        ("exchanged token (RFC 8693) upstream", "/api/exchanged/x",
         lambda: exchanged_ok(bearer("/api/exchanged/x", t1)()), 200, None),
        ("AS-2 token on the AS-1 exchange route", "/api/exchanged/x", bearer("/api/exchanged/x", t2), 401, None),
        ("gateway-signed token upstream, AS-1 token", "/api/signed/x",
         lambda: signed_ok(bearer("/api/signed/x", t1)(), AS1_ISSUER), 200, None),
        ("gateway-signed token upstream, AS-2 opaque token", "/api/signed/x",
         lambda: signed_ok(bearer("/api/signed/x", o2)(), AS2_ISSUER), 200, None),
        ("the gateway's JWKS", "/.well-known/tollgate/jwks.json",
         lambda: get(f"{api}/.well-known/tollgate/jwks.json", None), 200, None),
    ]

    def exchanged_ok(r):  # the upstream got AS-1's token for next.test, verified with AS-1's keys
        if r.status_code == 200:
            h = r.json()["headers"]
            keys = KeySet.import_key_set(requests.get(f"{AS1_ISSUER}/jwks", timeout=10).json())
            claims = jose_jwt.decode(h["authorization"].removeprefix("Bearer "), keys, algorithms=["ES256"]).claims
            assert claims["aud"] == "https://next.test" and claims["act"] == {"sub": "tollgate-exchanger"}, claims
            assert h["x-tollgate-client-id"] == "demo-client", h
        return r

    def signed_ok(r, orig_iss):  # the upstream got a token the gateway's JWKS verifies
        if r.status_code == 200:
            keys = KeySet.import_key_set(requests.get(f"{api}/.well-known/tollgate/jwks.json", timeout=10).json())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # joserfc: "EdDSA is deprecated via RFC 9864"
                tok = jose_jwt.decode(r.json()["headers"]["x-tollgate-jwt"], keys, algorithms=["EdDSA", "ES256"])
            jose_jwt.JWTClaimsRegistry(iss={"essential": True, "value": api},
                                       aud={"essential": True, "value": "demo-upstream"},
                                       exp={"essential": True}).validate(tok.claims)
            assert tok.claims["orig_iss"] == orig_iss, tok.claims
        return r

    def prm_ok(r):  # the document names the resource and both servers
        doc = r.json()
        assert doc["resource"] == f"{api}/api", doc
        assert doc["authorization_servers"] == [AS1_ISSUER, AS2_ISSUER], doc
        return r

    def names_metadata(r):
        challenge = r.headers.get("www-authenticate", "")
        assert f'resource_metadata="{api}/.well-known/oauth-protected-resource/api"' in challenge, challenge
        return r

    ok = True
    for name, path, call, want, want_cnf in cases:
        r = call()
        good = r.status_code == want
        note = ""
        if want_cnf is not None:
            cnf = r.json()["headers"].get("x-tollgate-cnf") if good else None
            good &= cnf == want_cnf
            note = f", x-tollgate-cnf {cnf}"
        print(f"  {'ok ' if good else 'BAD'} {name}: {path} -> {r.status_code} (want {want}){note}")
        ok &= good
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="run the example calls, then stop")
    args = parser.parse_args()
    logs = STATE
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    procs = start_all(logs)
    try:
        if args.check:
            return 0 if check() else 1
        print(HOWTO.replace("{logs}", str(logs)).replace("{state}", str(STATE.relative_to(ROOT)))
              .replace("{pki}", str(PKI.relative_to(ROOT))))
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
