"""The rig's RFC 8693 token exchange (tests/rig/as_oidc/server.mjs), tested on its own against
RFC 8693 §2, not through Tollgate: real exchange requests at a real oidc-provider, and every
issued JWT verified by PyPI joserfc against the AS's published JWKS.

§2.1 request: grant_type token-exchange, subject_token + subject_token_type (access tokens only
here), optional actor_token + actor_token_type, audience and/or resource, scope,
requested_token_type. §2.2.1 response: access_token, issued_token_type, token_type, expires_in,
scope. §2.2.2 errors: an invalid subject or actor token is `invalid_request` (the RFC's MUST),
a target the AS will not issue for `invalid_target`, and RFC 6749 §5.2's codes otherwise
(invalid_scope, unauthorized_client, invalid_client). §4.1 `act` names the actor, nesting any
earlier one.

One oidc-provider for the module, started on a free port and stopped by PID.
"""

from __future__ import annotations

import re
import time

import pytest
import requests
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, KeySet

import servers
import tokens
from procs import free_port

EXCHANGER = ("tollgate-exchanger", "tollgate-exchanger-secret")
DEMO = ("demo-client", "demo-secret")
ADMIN = ("admin-client", "admin-secret")
REDIRECT = "http://127.0.0.1/cb"
AT_TYPE = tokens.ACCESS_TOKEN_TYPE
OPAQUE = re.compile(r"^[A-Za-z0-9_-]{43}$")


@pytest.fixture(scope="module")
def as1(tmp_path_factory):
    work = tmp_path_factory.mktemp("rig-token-exchange")
    proc = servers.start_oidc(free_port(), work / "state", work)
    try:
        yield f"http://127.0.0.1:{proc.port}"
    finally:
        proc.stop()


# --------------------------------------------------------------------------------- helpers


def cc(base: str, client=DEMO, scope="read write", resource=None) -> str:
    """A client_credentials access token (opaque, or a JWT for resource=)."""
    return tokens.client_credentials(f"{base}/token", *client, scope=scope, resource=resource)["access_token"]


def exchange(base: str, subject: str | None, client=EXCHANGER, **kw) -> dict:
    return tokens.token_exchange(f"{base}/token", *client, subject, **kw)


def refused(base: str, subject: str | None, client=EXCHANGER, **kw) -> dict:
    body = exchange(base, subject, client, check=False, **kw)
    assert "_status" in body, body
    return body


def verify(base: str, token: str, aud: str, alg: str) -> tuple[dict, dict]:
    """(header, claims) of a JWT access token, verified by joserfc with the AS's JWKS: the
    signature, `typ` at+jwt (RFC 9068), and iss, aud, exp, iat, sub, jti."""
    jwks = requests.get(f"{base}/jwks", timeout=5).json()
    tok = jose_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=[alg])
    assert tok.header["typ"] == "at+jwt"
    jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": base},
        aud={"essential": True, "value": aud},
        exp={"essential": True},
        iat={"essential": True},
        sub={"essential": True},
        jti={"essential": True},
    ).validate(tok.claims)
    return tok.header, tok.claims


def check_response(resp: dict, scope: str | None) -> None:
    """RFC 8693 §2.2.1 members."""
    assert resp["issued_token_type"] == AT_TYPE
    assert resp["token_type"] == "Bearer"
    assert isinstance(resp["expires_in"], int) and resp["expires_in"] > 0
    assert resp.get("scope") == scope


def user_tokens(base: str, **kw) -> dict:
    return tokens.oidc_id_token(base, *DEMO, REDIRECT, **kw)


def stats(base: str) -> dict:
    return requests.get(f"{base}/__rig/stats", timeout=5).json()


# --------------------------------------------------------------------------------- success


def test_jwt_subject_token_exchanged_for_the_audience(as1):
    subject = cc(as1, resource="https://api.test/jwt")
    subject_exp = tokens.decode_unverified(subject)[1]["exp"]
    r = requests.post(f"{as1}/token", auth=None, headers={"Authorization": tokens.basic_auth(*EXCHANGER)},
                      data={"grant_type": tokens.TOKEN_EXCHANGE, "subject_token": subject,
                            "subject_token_type": AT_TYPE, "audience": "https://next.test"}, timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"  # RFC 6749 §5.1
    resp = r.json()
    check_response(resp, "read write")
    header, claims = verify(as1, resp["access_token"], "https://next.test", "ES256")
    assert claims["sub"] == "demo-client"  # the subject token's subject
    assert claims["client_id"] == "tollgate-exchanger"  # RFC 8693 §4.3: the requesting client
    assert claims["act"] == {"sub": "tollgate-exchanger"}  # §4.1: no actor token: the client acts
    assert claims["scope"] == "read write"
    assert claims["exp"] <= subject_exp
    assert abs(claims["exp"] - claims["iat"] - resp["expires_in"]) <= 1
    kids = {k["kid"] for k in requests.get(f"{as1}/jwks", timeout=5).json()["keys"]}
    assert header["kid"] in kids


def test_user_jwt_subject_keeps_the_user_and_login(as1):
    user = user_tokens(as1, scope="openid read write", resource="https://api.test/jwt", login="alice",
                       acr="urn:tollgate:loa:2")
    _, subject = tokens.decode_unverified(user["access_token"])
    resp = exchange(as1, user["access_token"], resource="https://other.test/jwt", scope="read")
    check_response(resp, "read")
    _, claims = verify(as1, resp["access_token"], "https://other.test", "RS256")
    assert claims["sub"] == "alice"
    assert claims["act"] == {"sub": "tollgate-exchanger"}
    assert claims["acr"] == "urn:tollgate:loa:2" and claims["auth_time"] == subject["auth_time"]


def test_opaque_subject_tokens(as1):
    # a client's opaque token -> an opaque token for next.test, which introspects with act
    resp = exchange(as1, cc(as1), resource="https://next.test/opaque")
    check_response(resp, "read write")
    assert OPAQUE.match(resp["access_token"])
    info = tokens.introspect(f"{as1}/token/introspection", resp["access_token"], "rs-client", "rs-secret")
    assert info["active"] is True
    assert info["sub"] == "demo-client" and info["client_id"] == "tollgate-exchanger"
    assert info["aud"] == "https://next.test" and info["scope"] == "read write"
    assert info["act"] == {"sub": "tollgate-exchanger"} and info["token_type"] == "Bearer"
    assert info["exp"] - int(time.time()) <= resp["expires_in"] + 1

    # a user's opaque access token (no resource= at /auth) -> a JWT for next.test/api
    user = user_tokens(as1, scope="openid read", login="bob")
    assert OPAQUE.match(user["access_token"])
    resp = exchange(as1, user["access_token"], resource="https://next.test/api")
    check_response(resp, "read")  # `openid` is not a scope of the target
    _, claims = verify(as1, resp["access_token"], "https://next.test", "ES256")
    assert claims["sub"] == "bob" and claims["act"] == {"sub": "tollgate-exchanger"}
    assert claims["acr"] == "urn:tollgate:loa:1"


def test_actor_token_names_the_actor(as1):
    subject = cc(as1, resource="https://api.test/jwt")
    own = cc(as1, client=EXCHANGER, scope="read")  # the exchanger's own (opaque) token
    resp = exchange(as1, subject, audience="https://api.test", actor_token=own)
    _, claims = verify(as1, resp["access_token"], "https://api.test", "RS256")
    assert claims["act"] == {"sub": "tollgate-exchanger"}

    other = cc(as1, client=ADMIN, scope="read", resource="https://api.test/jwt")  # a JWT actor
    resp = exchange(as1, subject, audience="https://api.test", actor_token=other)
    _, claims = verify(as1, resp["access_token"], "https://api.test", "RS256")
    assert claims["sub"] == "demo-client" and claims["act"] == {"sub": "admin-client"}


def test_chained_exchange_nests_act(as1):
    first = exchange(as1, cc(as1), resource="https://next.test/opaque")["access_token"]
    actor = cc(as1, client=ADMIN, scope="read")
    resp = exchange(as1, first, audience="https://other.test", actor_token=actor, scope="read")
    _, claims = verify(as1, resp["access_token"], "https://other.test", "RS256")
    assert claims["sub"] == "demo-client"
    assert claims["act"] == {"sub": "admin-client", "act": {"sub": "tollgate-exchanger"}}


def test_down_scoping_only(as1):
    subject = cc(as1, scope="read write", resource="https://api.test/jwt")
    assert exchange(as1, subject, audience="https://next.test", scope="read")["scope"] == "read"
    assert exchange(as1, subject, audience="https://next.test")["scope"] == "read write"
    for scope in ("read admin", "admin", "openid", "read bogus"):
        body = refused(as1, subject, audience="https://next.test", scope=scope)
        assert (body["_status"], body["error"]) == (400, "invalid_scope"), scope


def test_lifetime_is_the_targets_but_not_past_the_subject(as1):
    resp = exchange(as1, cc(as1, resource="https://api.test/jwt"), resource="https://next.test/short")
    assert resp["expires_in"] == 2
    _, claims = verify(as1, resp["access_token"], "https://next.test", "ES256")
    assert claims["exp"] - claims["iat"] == 2
    short = cc(as1, client=("short-opaque-client", "short-opaque-secret"))  # lives 2 s
    assert exchange(as1, short, resource="https://next.test/api")["expires_in"] <= 2


def test_client_secret_post_and_discovery(as1):
    resp = exchange(as1, cc(as1), audience="https://next.test", auth="post")
    assert resp["issued_token_type"] == AT_TYPE
    meta = requests.get(f"{as1}/.well-known/openid-configuration", timeout=5).json()
    assert tokens.TOKEN_EXCHANGE in meta["grant_types_supported"]


def test_rig_counts_exchanges(as1):
    assert requests.post(f"{as1}/__rig/reset-stats", timeout=5).json()["exchanges"] == {"requests": 0, "issued": 0}
    subject = cc(as1)
    exchange(as1, subject, audience="https://next.test")
    refused(as1, subject, audience="https://unknown.test")
    refused(as1, subject, client=DEMO, audience="https://next.test")
    st = stats(as1)
    assert st["exchanges"] == {"requests": 3, "issued": 1}
    assert st["requests"]["/token"] == 4  # the client_credentials request too


# --------------------------------------------------------------------------------- errors


def test_invalid_request(as1):
    subject = cc(as1)
    cases = {
        "no subject_token": dict(subject=None),
        "no subject_token_type": dict(subject_token_type=None),
        "subject_token_type jwt": dict(subject_token_type="urn:ietf:params:oauth:token-type:jwt"),
        "subject_token_type id_token": dict(subject_token_type="urn:ietf:params:oauth:token-type:id_token"),
        "actor_token without type": dict(actor_token=subject, actor_token_type=None),
        "actor_token_type without token": dict(actor_token_type=AT_TYPE),
        "actor_token_type refresh": dict(actor_token=subject,
                                         actor_token_type="urn:ietf:params:oauth:token-type:refresh_token"),
        "requested refresh token": dict(requested_token_type="urn:ietf:params:oauth:token-type:refresh_token"),
        "no target": dict(audience=None),
    }
    for name, kw in cases.items():
        kw = {"subject": subject, "audience": "https://next.test", **kw}
        body = refused(as1, kw.pop("subject"), **kw)
        assert (body["_status"], body["error"]) == (400, "invalid_request"), name
    # the supported requested_token_type is fine
    assert exchange(as1, subject, audience="https://next.test", requested_token_type=AT_TYPE)["access_token"]


def test_subject_or_actor_token_not_honoured_is_invalid_request(as1):
    """RFC 8693 §2.2.2: an invalid subject_token or actor_token MUST get invalid_request."""
    target = {"audience": "https://next.test"}
    jwt = cc(as1, resource="https://api.test/jwt")
    head, payload, sig = jwt.split(".")
    tampered = ".".join([head, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"), sig])
    # a token in the AS's own shape, but signed by another key under the AS's kid
    header, claims = tokens.decode_unverified(jwt)
    forged = jose_jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": header["kid"]}, claims,
                             ECKey.generate_key("P-256"))
    user = user_tokens(as1, scope="openid offline_access read", login="carol")
    revoked = cc(as1)
    assert tokens.revoke(f"{as1}/token/revocation", revoked, *DEMO) == 200
    short_opaque = cc(as1, client=("short-opaque-client", "short-opaque-secret"))
    short_jwt = cc(as1, resource="https://api.test/short")
    time.sleep(3.2)  # both live 2 s

    bad = {
        "junk": "not-a-token",
        "unknown opaque": "A" * 43,
        "tampered JWT": tampered,
        "JWT signed by another key": forged,
        "ID token": user["id_token"],
        "refresh token": user["refresh_token"],
        "revoked": revoked,
        "expired opaque": short_opaque,
        "expired JWT": short_jwt,
    }
    for name, value in bad.items():
        body = refused(as1, value, **target)
        assert (body["_status"], body["error"]) == (400, "invalid_request"), name
        assert "subject_token" in body["error_description"], name
        body = refused(as1, jwt, actor_token=value, **target)
        assert (body["_status"], body["error"]) == (400, "invalid_request"), name
        assert "actor_token" in body["error_description"], name
    # the user's access token and the client's JWT are still good
    assert exchange(as1, user["access_token"], **target)["access_token"]


def test_invalid_target(as1):
    subject = cc(as1)
    cases = {
        "unknown resource": dict(resource="https://unknown.test/api"),
        "unknown audience": dict(audience="https://unknown.test"),
        "audience and resource disagree": dict(resource="https://next.test/api", audience="https://api.test"),
        "two resources": dict(resource=["https://next.test/api", "https://api.test/jwt"]),
        "two audiences": dict(audience=["https://next.test", "https://other.test"]),
    }
    for name, kw in cases.items():
        body = refused(as1, subject, **kw)
        assert (body["_status"], body["error"]) == (400, "invalid_target"), name
    # a resource and its own audience together name one target
    resp = exchange(as1, subject, resource="https://next.test/short", audience="https://next.test")
    assert resp["expires_in"] <= 2


def test_clients(as1):
    subject = cc(as1)
    # authenticated, but not allowed the grant: RFC 6749 §5.2 unauthorized_client
    for client in (DEMO, ADMIN, ("rs-client", "rs-secret")):
        body = refused(as1, subject, client=client, audience="https://next.test")
        assert (body["_status"], body["error"]) == (400, "unauthorized_client"), client
    # failed client authentication: 401 invalid_client
    for client in (("tollgate-exchanger", "wrong"), ("nobody", "secret")):
        body = refused(as1, subject, client=client, audience="https://next.test")
        assert (body["_status"], body["error"]) == (401, "invalid_client"), client
