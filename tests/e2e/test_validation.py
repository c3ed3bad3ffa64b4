"""JWT access tokens from two real authorization servers, checked by tollgate.wasm in a real
Envoy: what passes (with which identity headers) and how every kind of bad token is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
import requests
from jwcrypto import jwk, jwt as jjwt

import tokens
from stack import upstream_saw

AS1_RESOURCES = {
    "RS256": "https://api.test/jwt",
    "PS256": "https://api.test/ps256",
    "ES256": "https://api.test/es256",
    "EdDSA": "https://api.test/eddsa",
}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def assert_invalid_token(r: requests.Response) -> None:
    assert r.status_code == 401, r.text
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="tollgate"')
    assert 'error="invalid_token"' in challenge
    assert r.json()["error"] == "invalid_token"


# --- what passes ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", sorted(AS1_RESOURCES))
def test_as1_jwt_passes_with_identity_headers(stack, alg):
    token = stack.as1_token(resource=AS1_RESOURCES[alg])
    assert tokens.decode_unverified(token)[0]["alg"] == alg
    r = stack.call("/api/orders", token)
    assert r.status_code == 200, r.text
    seen = upstream_saw(r)
    assert seen["x-tollgate-iss"] == stack.as1_issuer
    assert seen["x-tollgate-issuer"] == "as1"
    assert seen["x-tollgate-client-id"] == "demo-client"
    assert seen["x-tollgate-sub"] == "demo-client"  # client_credentials: sub is the client
    assert "read" in seen["x-tollgate-scope"].split()
    claims = json.loads(base64.urlsafe_b64decode(seen["x-tollgate-claims"] + "=="))
    assert claims["aud"] == "https://api.test"
    assert claims["iss"] == stack.as1_issuer


def test_as2_jwt_passes_with_identity_headers(stack):
    token = stack.as2_token()
    r = stack.call("/api/orders", token)
    assert r.status_code == 200, r.text
    seen = upstream_saw(r)
    assert seen["x-tollgate-iss"] == stack.as2_issuer
    assert seen["x-tollgate-issuer"] == "as2"
    assert seen["x-tollgate-client-id"] == "dot-client"
    assert seen["x-tollgate-scope"] == "read"


def test_repeated_token_is_served_from_the_cache(stack):
    token = stack.as2_token()
    before = stack.stats()["tollgate.issuer.as2.cache_hit"]
    for _ in range(3):
        assert stack.call("/api/orders", token).status_code == 200
    assert stack.stats()["tollgate.issuer.as2.cache_hit"] - before == 2


def test_anonymous_route_needs_no_token_and_forwards_no_identity(stack):
    r = stack.call("/public/status", headers={"x-tollgate-sub": "admin"})
    assert r.status_code == 200
    assert "x-tollgate-sub" not in upstream_saw(r)


# --- identity headers cannot be spoofed ----------------------------------------------------


def test_spoofed_identity_headers_never_reach_the_upstream(stack):
    spoof = {
        "x-tollgate-sub": "admin",
        "x-tollgate-issuer": "as1",
        "x-tollgate-scope": "admin",
        "x-tollgate-claims": b64json({"sub": "admin"}),
        "x-tollgate-client-id": "root",
    }
    r = stack.call("/api/orders", stack.as2_token(), headers=spoof)
    seen = upstream_saw(r)
    assert seen["x-tollgate-sub"] != "admin"
    assert seen["x-tollgate-issuer"] == "as2"
    assert seen["x-tollgate-scope"] == "read"
    assert seen["x-tollgate-client-id"] == "dot-client"
    assert json.loads(base64.urlsafe_b64decode(seen["x-tollgate-claims"] + "=="))["sub"] != "admin"


def raw_get(stack, path: str, header_lines: list[str]) -> tuple[int, dict]:
    """A raw HTTP/1.1 GET (header names exactly as given; requests would keep them too, but
    this leaves no doubt); returns (status, the echoing upstream's JSON or {})."""
    import socket

    host, port = "127.0.0.1", stack.envoy.listener_port
    raw = "".join(f"{line}\r\n" for line in [f"GET {path} HTTP/1.1", f"Host: {host}:{port}",
                                               *header_lines, "Connection: close"]) + "\r\n"
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(raw.encode())
        response = b""
        while chunk := s.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(body) if status == 200 and body.startswith(b"{") else {}


ROUTE_NAMED = [
    # Policies keyed to Envoy's own route names (README: `route_name`).
    {"match": {"route_name": "admin"}, "require": {"scopes": ["admin"]}},
]


@pytest.fixture(scope="module")
def named_routes(wasm, tmp_path_factory):
    """A stack whose Tollgate policies follow Envoy's route names: `admin` (prefix /api/admin)
    needs scope admin, everything else read. The gateway's routes (matching x-tollgate-as) come
    first in Envoy's table, as in the example."""
    import envoy as rig_envoy
    import stack as rig_stack

    st = rig_stack.Stack(tmp_path_factory.mktemp("named-routes"))
    base = st.plugin_config

    def cfg() -> dict:
        c = base()
        c["routes"] = ROUTE_NAMED
        c["default_route"] = {"require": {"scopes_any": ["read", "admin"]}}
        return c

    st.plugin_config = cfg
    routes = rig_stack.gateway_routes()[:2] + [{"name": "admin", "prefix": "/api/admin", "cluster": "upstream"}] \
        + rig_envoy.DEFAULT_ROUTES
    st.workdir.mkdir(parents=True, exist_ok=True)
    try:
        st.procs["upstream"] = rig_stack.servers.start_upstream(st.upstream_port, st.workdir)
        st.start_as1()
        st.start_as2()
        st.start_envoy(routes=routes)
        yield st
    finally:
        st.stop()


@pytest.mark.parametrize("spoof", ["x-tollgate-as: as1", "x-tollgate-as: as2", "x_tollgate_as: as1",
                                   "x-tollgate-sub: admin"])
def test_a_spoofed_header_cannot_move_a_request_to_a_weaker_policy(named_routes, spoof):
    """Envoy picks the route before Tollgate runs, with the client's copy of the gateway's route
    header in place (so `xds.route_name` names the gateway route), and again after Tollgate
    removed it. A read token must not pass /api/admin that way: where policies follow route
    names, a request carrying a copy of a header only Tollgate sets is refused (400), and
    neither the upstream nor the authorization server sees it."""
    st = named_routes
    reader = st.as1_token("read")
    admin = st.as1_token("admin")
    marker = f"/api/admin/spoof-{abs(hash(spoof))}"
    assert raw_get(st, marker, [f"Authorization: Bearer {reader}"])[0] == 403
    assert raw_get(st, marker, [f"Authorization: Bearer {admin}"])[0] == 200
    before = st.procs["upstream"].log_text().count(marker)
    status, _ = raw_get(st, marker, [f"Authorization: Bearer {reader}", spoof])
    assert status == 400
    status, _ = raw_get(st, marker, [f"Authorization: Bearer {admin}", spoof])
    assert status == 400, "refused whatever the token: the route cannot be known"
    time.sleep(0.3)
    assert st.procs["upstream"].log_text().count(marker) == before
    assert marker not in st.procs["as1"].log_text()


# --- requirements --------------------------------------------------------------------------


def test_missing_token_gets_a_bare_challenge(stack):
    r = stack.call("/api/orders")
    assert r.status_code == 401
    # A route that takes both schemes (DPoP is `allowed` by default) names both (RFC 9449 §7.1).
    assert r.headers["www-authenticate"] == 'Bearer realm="tollgate", DPoP algs="ES256 EdDSA"'


def test_insufficient_scope_names_the_needed_scope(stack):
    r = stack.call("/api/admin/users", stack.as1_token(scope="read"))
    assert r.status_code == 403
    challenge = r.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="admin"' in challenge
    assert stack.call("/api/admin/users", stack.as1_token(scope="admin")).status_code == 200


def test_method_specific_scope(stack):
    reader = stack.as2_token(scope="read")
    assert stack.call("/api/orders", reader, method="POST").status_code == 403
    writer = stack.as2_token(scope="read write")
    assert stack.call("/api/orders", writer, method="POST").status_code == 200


def test_same_cached_token_is_rechecked_per_route(stack):
    token = stack.as1_token(scope="read")
    assert stack.call("/api/orders", token).status_code == 200
    assert stack.call("/api/admin/x", token).status_code == 403


def test_route_restricted_to_one_issuer(stack):
    assert stack.call("/api/as1-only", stack.as1_token()).status_code == 200
    assert_invalid_token(stack.call("/api/as1-only", stack.as2_token()))


def test_required_claim_value(stack):
    assert stack.call("/api/claims", stack.as1_token()).status_code == 200
    r = stack.call("/api/claims", stack.as2_token())
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]


def test_request_matching_no_route_is_denied(stack):
    r = stack.call("/internal/metrics", stack.as1_token())
    assert r.status_code == 403
    assert r.json()["error"] == "access_denied"


# --- malformed requests --------------------------------------------------------------------


def test_two_tokens_in_one_request_is_invalid_request(stack):
    token = stack.as2_token()
    # requests merges duplicate headers, so send raw HTTP/1.1 with two Authorization lines.
    import socket

    host, port = "127.0.0.1", stack.envoy.listener_port
    raw = (
        f"GET /api/orders HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(raw)
        response = b""
        while chunk := s.recv(65536):
            response += chunk
    head = response.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 400"), head
    assert 'error="invalid_request"' in head


def test_garbage_bearer_credentials_are_invalid_request(stack):
    r = stack.call("/api/orders", headers={"Authorization": "Bearer a b c"})
    assert r.status_code == 400
    assert 'error="invalid_request"' in r.headers["www-authenticate"]


# --- bad tokens ----------------------------------------------------------------------------


def test_garbage_token_is_invalid(stack):
    assert_invalid_token(stack.call("/api/orders", "not-a-jwt"))


def test_wrong_audience_from_each_issuer(stack):
    other = stack.as1_token(resource="https://other.test/jwt")
    assert tokens.decode_unverified(other)[1]["aud"] == "https://other.test"
    assert_invalid_token(stack.call("/api/orders", other))
    other2 = stack.as2_token(client="dot-wrongaud", secret="dot-wrongaud-secret")
    assert_invalid_token(stack.call("/api/orders", other2))


def test_expired_token(stack):
    token = stack.as1_token(resource="https://api.test/short")  # lives 2 s; skew is 1 s
    assert stack.call("/api/orders", token).status_code == 200
    time.sleep(4.2)
    r = stack.call("/api/orders", token)
    assert_invalid_token(r)
    assert "expired" in r.headers["www-authenticate"]


def test_not_yet_valid_token(stack):
    token = stack.as2_token(client="dot-notyet", secret="dot-notyet-secret")
    assert tokens.decode_unverified(token)[1]["nbf"] > time.time() + 60
    r = stack.call("/api/orders", token)
    assert_invalid_token(r)
    assert "not valid yet" in r.headers["www-authenticate"]


def test_tampered_signature(stack):
    header, payload, signature = stack.as1_token().split(".")
    sig = bytearray(base64.urlsafe_b64decode(signature + "=="))
    sig[10] ^= 0x01
    assert_invalid_token(stack.call("/api/orders", f"{header}.{payload}.{b64(bytes(sig))}"))


def test_tampered_payload(stack):
    header, payload, signature = stack.as1_token(scope="read").split(".")
    claims = tokens.decode_unverified(f"{header}.{payload}.{signature}")[1]
    claims["scope"] = "read write admin"
    assert_invalid_token(stack.call("/api/admin/x", f"{header}.{b64json(claims)}.{signature}"))


def test_alg_none_is_refused(stack):
    header, payload = tokens.decode_unverified(stack.as1_token())
    header.update(alg="none")
    assert_invalid_token(stack.call("/api/orders", f"{b64json(header)}.{b64json(payload)}."))


def test_hs256_signed_with_the_issuers_public_key_is_refused(stack):
    """The classic key-confusion attack: HMAC keyed with the RSA public key an attacker can read."""
    token = stack.as1_token()
    header, payload = tokens.decode_unverified(token)
    keys = requests.get(f"{stack.as1_issuer}/jwks", timeout=5).json()["keys"]
    rsa_jwk = next(k for k in keys if k["kid"] == header["kid"])
    public_pem = jwk.JWK(**rsa_jwk).export_to_pem()
    forged_header = dict(header, alg="HS256")
    signing_input = f"{b64json(forged_header)}.{b64json(payload)}"
    for secret in (public_pem, json.dumps(rsa_jwk).encode()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert_invalid_token(stack.call("/api/orders", f"{signing_input}.{b64(mac)}"))


def test_unknown_issuer_is_refused(stack):
    key = jwk.JWK.generate(kty="RSA", size=2048, kid="attacker")
    now = int(time.time())
    claims = {"iss": "https://evil.example", "sub": "x", "aud": "https://api.test",
              "scope": "read", "iat": now, "exp": now + 300}
    t = jjwt.JWT(header={"alg": "RS256", "kid": "attacker", "typ": "at+jwt"}, claims=claims)
    t.make_signed_token(key)
    r = stack.call("/api/orders", t.serialize())
    assert_invalid_token(r)
    assert "not trusted" in r.headers["www-authenticate"]


def test_token_claiming_as1_but_signed_with_as2_key_is_refused(stack):
    """AS-2 mints a token with AS-1's issuer, signed with AS-2's own key and kid: keys are only
    ever looked up in the JWKS of the issuer the token names, so it cannot verify."""
    token = stack.as2_token(client="dot-impersonator", secret="dot-impersonator-secret")
    header, claims = tokens.decode_unverified(token)
    assert claims["iss"] == stack.as1_issuer
    as2_kids = {k["kid"] for k in requests.get(f"{stack.as2_issuer}/.well-known/jwks.json", timeout=5).json()["keys"]}
    assert header["kid"] in as2_kids
    assert_invalid_token(stack.call("/api/orders", token))


def test_id_token_is_not_an_access_token(stack):
    response = tokens.oidc_id_token(stack.as1_issuer, "demo-client", "demo-secret", "http://127.0.0.1/cb")
    id_token = response["id_token"]
    assert tokens.decode_unverified(id_token)[0].get("typ") != "at+jwt"
    r = stack.call("/api/orders", id_token)
    assert_invalid_token(r)
    assert "not an access token" in r.headers["www-authenticate"]


def test_denials_are_counted_per_issuer(stack):
    before = stack.stats()
    header, payload, signature = stack.as2_token().split(".")
    stack.call("/api/orders", f"{header}.{payload}.{signature[:-4]}AAAA")
    after = stack.stats()
    key = "tollgate.issuer.as2.denied.invalid_token"
    assert after[key] == before[key] + 1


def test_tokens_never_appear_in_envoy_logs(stack):
    good = stack.as1_token()
    bad_sig = good[:-6] + "AAAAAA"
    junk = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.c2VjcmV0LXRva2VuLXRleHQ"
    for token in (good, bad_sig, junk):
        stack.call("/api/orders", token)
    stack.call("/api/orders", headers={"Authorization": f"Bearer {good} {junk}"})
    time.sleep(0.3)  # log flush interval is 100 ms
    log = stack.envoy.log_text()
    assert "tollgate" in log
    for token in (good, bad_sig, junk):
        for part in token.split("."):
            if len(part) > 16:
                assert part not in log, "a token (part) was logged"
