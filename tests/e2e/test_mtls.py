"""mTLS certificate-bound access tokens (RFC 8705 §3, issue 15) end to end: the real
tollgate.wasm in Envoy with a TLS listener, oidc-provider minting tokens bound to the client
certificate of the token request, and clients presenting them with or without that certificate.

The rig (tests/rig/README.md, "mTLS"): a test PKI (pki.py: a CA, client certificates A and B it
signed, one self-signed), Envoy's second listener `ingress_tls` (client certificate asked for,
not required; one that does not chain to the CA fails the handshake; XFCC SANITIZE_SET with the
PEM), and AS-1's client `mtls-client`, whose tokens carry `cnf.x5t#S256` of the certificate
Envoy saw (JWT with `resource=`, opaque otherwise; those introspect with `cnf`). The rig's
configuration: as1 `mtls.mode` "allowed" (bound tokens must come with their certificate,
unbound ones pass) and the route /api/mtls `require.mtls` "required".

Every thumbprint expected here is computed with `cryptography` (pki.x5t_s256), not by
Tollgate. Every refusal is checked for its status, its challenge and, through the upstream's
own log (its `> METHOD PATH` lines, written as soon as a request's headers arrive), that the
API never saw the request.
"""

from __future__ import annotations

import json
import ssl
import warnings

import httpx
import pytest
import requests

with warnings.catch_warnings(record=True):
    # authlib 1.9.10 imports the `httpx2` package when there is one, and on falling back to
    # httpx (0.28.1 here) warns with a filter of its own set to "always"; recorded and dropped.
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import OAuth2Client

import pki
import stack as rig_stack
import tokens
import wire
from stack import MTLS_CLIENT, upstream_saw
from witness import Upstream

TIMEOUT = 15
REALM = "tollgate"
JWT_RESOURCE = "https://api.test/jwt"
KINDS = ["jwt", "opaque"]
CNF_HEADER = "x-tollgate-cnf"


# ----------------------------------------------------------------------------- deployments


def _started(st: rig_stack.Stack):
    st.start()
    try:
        yield st
    finally:
        st.stop()


@pytest.fixture(scope="module")
def mst(wasm, tmp_path_factory):
    """The standard stack plus Envoy's TLS listener (shared by the module: nothing here
    changes it)."""
    yield from _started(rig_stack.Stack(tmp_path_factory.mktemp("mtls"), tls=True))


@pytest.fixture(scope="module")
def forwarding(wasm, tmp_path_factory):
    """Certificates from the connection (the default), but the plain listener's HCM has
    `forward_client_cert_details: ALWAYS_FORWARD_ONLY`: Envoy passes a client's own
    x-forwarded-client-cert on, so Tollgate sees it and must not believe it. (FORWARD_ONLY
    forwards it only from mTLS connections: on this plain listener it drops it like SANITIZE.)"""
    yield from _started(rig_stack.Stack(tmp_path_factory.mktemp("mtls-forward-only"),
                                        forward_client_cert="ALWAYS_FORWARD_ONLY"))


@pytest.fixture(scope="module")
def xfcc_proxy(wasm, tmp_path_factory):
    """A trusted proxy in front of Envoy ends TLS and sends the certificate as XFCC
    (`sender_constraint.client_certificate` from "xfcc"); Envoy forwards it (ALWAYS_FORWARD_ONLY:
    the proxy's connection to Envoy is plain HTTP here)."""
    yield from _started(rig_stack.Stack(
        tmp_path_factory.mktemp("mtls-xfcc-proxy"), forward_client_cert="ALWAYS_FORWARD_ONLY",
        config_overrides={"sender_constraint": {"client_certificate": {"from": "xfcc",
                                                                       "header": "x-forwarded-client-cert"}}}))


@pytest.fixture(scope="module")
def client_cert_proxy(wasm, tmp_path_factory):
    """A trusted proxy sends the certificate as RFC 9440 Client-Cert (Envoy leaves that header
    alone whatever its XFCC setting)."""
    yield from _started(rig_stack.Stack(
        tmp_path_factory.mktemp("mtls-client-cert-proxy"),
        config_overrides={"sender_constraint": {"client_certificate": {"from": "client-cert",
                                                                       "header": "client-cert"}}}))


# ------------------------------------------------------------------------------- helpers


def tls_context(st: rig_stack.Stack, ident: pki.Identity | None) -> ssl.SSLContext:
    """Trusts the test CA (hostname 127.0.0.1 checked against the server certificate's IP SAN);
    presents ident's certificate when given."""
    ctx = ssl.create_default_context(cafile=str(st.pki.ca))
    if ident is not None:
        ctx.load_cert_chain(str(ident.cert), str(ident.key))
    return ctx


def gateway_token(st: rig_stack.Stack, kind: str, ident: pki.Identity, scope: str = "read") -> str:
    """mtls-client's token from the gateway's token endpoint over Envoy's TLS listener,
    presenting ident's certificate (the binding comes from the handshake, through Envoy's XFCC)."""
    data = {"grant_type": "client_credentials", "scope": scope}
    if kind == "jwt":
        data["resource"] = JWT_RESOURCE
    r = requests.post(f"{st.tls_url}/oauth2/as1/token", data=data,
                      headers={"Authorization": tokens.basic_auth(*MTLS_CLIENT)},
                      cert=ident.pair, verify=str(st.pki.ca), timeout=TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()["access_token"]


def unbound_token(st: rig_stack.Stack, kind: str) -> str:
    return st.as1_token() if kind == "jwt" else st.as1_opaque_token()


def call(st: rig_stack.Stack, path: str, token: str | None, *, cert: pki.Identity | None = None,
         tls: bool = True, scheme: str = "Bearer", method: str = "GET", headers: dict | None = None,
         data=None) -> requests.Response:
    """One API call: over the TLS listener (with cert's certificate, or none) or the plain one."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"{scheme} {token}"
    if tls:
        return requests.request(method, st.tls_url + path, headers=h, data=data, timeout=TIMEOUT,
                                cert=cert.pair if cert else None, verify=str(st.pki.ca))
    assert cert is None, "the plain listener has no TLS"
    return requests.request(method, st.url + path, headers=h, data=data, timeout=TIMEOUT)


def assert_allowed(r, path: str) -> dict:
    """200 from the upstream for this path; the headers it received."""
    status = r.status_code
    assert status == 200, (status, dict(r.headers), r.text[:500])
    assert "www-authenticate" not in {k.lower() for k in r.headers}
    echo = r.json()
    assert echo["path"] == path, echo
    return echo["headers"]


# Why Tollgate refused (crates/tollgate-core/src/binding.rs, BindingError::describe).
OTHER_CERT = "the token is bound to another client certificate"
NO_CERT = "the token is bound to a client certificate, and none was presented"
NOT_BOUND = "this resource requires a certificate-bound token"


def assert_invalid_token(r, why: str | None = None) -> None:
    """401 invalid_token with RFC 6750's Bearer challenge (the rig's routes also offer DPoP,
    whose challenge follows), for this reason when given."""
    status = r.status_code
    assert status == 401, (status, dict(r.headers), r.text[:500])
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith(f'Bearer realm="{REALM}", error="invalid_token", error_description="'), challenge
    assert r.json()["error"] == "invalid_token", r.text
    if why is not None:
        assert f'error_description="{why}"' in challenge, challenge
        assert r.json()["error_description"] == why, r.text


def refused(st: rig_stack.Stack, path: str, token: str, why: str | None = None, **kw) -> requests.Response:
    """The call is refused with 401 invalid_token (for that reason) and the upstream never saw it."""
    seen = Upstream(st)
    r = call(st, path, token, **kw)
    assert_invalid_token(r, why)
    seen.saw_nothing()
    return r


def allowed(st: rig_stack.Stack, path: str, token: str, **kw) -> dict:
    """The call reached the upstream (once) and got its 200; the headers it received."""
    seen = Upstream(st)
    r = call(st, path, token, **kw)
    headers = assert_allowed(r, path)
    assert seen.arrivals() == [f"> {kw.get('method', 'GET')} {path}"]
    return headers


def mtls_identity(ident: pki.Identity) -> str:
    """The x-tollgate-cnf value for a request that proved this certificate."""
    return f"mtls;x5t={pki.x5t_s256(ident.pem)}"


@pytest.fixture(scope="module")
def bound(mst) -> dict[str, str]:
    """mtls-client tokens bound to client certificate A, one of each kind, from the gateway."""
    return {kind: gateway_token(mst, kind, mst.pki.a) for kind in KINDS}


# ------------------------------------------------------------------------- the rig itself


def test_the_pki_thumbprint_is_rfc8705s(mst):
    """x5t#S256 = base64url(SHA-256(DER)), no padding: checked against the DER the TLS
    listener's handshake would carry (cryptography's parse of the PEM) by hand."""
    import base64
    import hashlib

    p = mst.pki
    der = p.a.der
    want = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    assert pki.x5t_s256(p.a.pem) == pki.x5t_s256(der) == want and len(want) == 43
    assert len({p.a.x5t, p.b.x5t, p.self_signed.x5t}) == 3


def test_the_tls_listener_asks_for_a_certificate_but_does_not_require_one(mst):
    """A client without a certificate gets through the handshake (Tollgate decides); Envoy
    then sets no XFCC. With certificate A it sets exactly one element, Hash= and Cert= for A."""
    r = call(mst, "/public/x", None)
    assert r.status_code == 200
    assert "x-forwarded-client-cert" not in upstream_saw(r)
    r = call(mst, "/public/x", None, cert=mst.pki.a)
    assert r.status_code == 200
    xfcc = upstream_saw(r)["x-forwarded-client-cert"]
    assert f"Hash={pki.sha256_hex(mst.pki.a.pem)}" in xfcc.split(";"), xfcc
    assert f'Cert="{pki.url_encoded_pem(mst.pki.a.pem)}"' in xfcc.split(";"), xfcc


def test_a_self_signed_client_certificate_fails_the_handshake(mst):
    """The TLS listener verifies a presented certificate against the test CA (Envoy's default
    VERIFY_TRUST_CHAIN): the self-signed one never reaches Tollgate or the upstream. (With TLS
    1.3 the client learns it on its first read: an alert or EOF instead of an answer.)"""
    seen = Upstream(mst)
    before = rig_stack.envoy.stats(mst.envoy.admin_port, "listener.")
    with pytest.raises(requests.exceptions.SSLError):
        call(mst, "/public/x", None, cert=mst.pki.self_signed)
    seen.saw_nothing()
    after = rig_stack.envoy.stats(mst.envoy.admin_port, "listener.")
    key = next(k for k in after if k.endswith("ssl.fail_verify_error") and "127.0.0.1_" + str(mst.tls_port) in k)
    assert after[key] == before.get(key, 0) + 1, {k: v for k, v in after.items() if "ssl" in k}


def test_the_plain_listener_drops_a_clients_xfcc(mst):
    """Envoy's default SANITIZE on the plain listener: a client's own XFCC never gets past it."""
    spoof = pki.xfcc(mst.pki.a.pem)
    r = call(mst, "/public/x", None, tls=False, headers={"x-forwarded-client-cert": spoof})
    assert r.status_code == 200
    assert "x-forwarded-client-cert" not in upstream_saw(r)


# ------------------------------------------------------------ a real client gets the tokens


def authlib_client(st: rig_stack.Stack, client: tuple[str, str], ident: pki.Identity | None):
    """authlib's httpx OAuth2Client (client_secret_basic) over Envoy's TLS listener, presenting
    ident's certificate. httpx 0.28 takes the certificate and the CA as an SSLContext."""
    return OAuth2Client(client_id=client[0], client_secret=client[1],
                        token_endpoint_auth_method="client_secret_basic",
                        verify=tls_context(st, ident), timeout=TIMEOUT)


def gateway_document(st: rig_stack.Stack) -> dict:
    """The gateway's RFC 8414 document for as1, fetched over TLS: its URLs are the TLS
    listener's (the second public origin), and it says the AS binds tokens to certificates."""
    r = httpx.get(f"{st.tls_url}/oauth2/as1/.well-known/oauth-authorization-server",
                  verify=tls_context(st, None), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["token_endpoint"] == f"{st.tls_url}/oauth2/as1/token"
    assert doc["tls_client_certificate_bound_access_tokens"] is True
    assert "mtls_endpoint_aliases" not in doc
    return doc


def test_authlib_gets_a_jwt_bound_to_its_certificate(mst):
    """client_credentials with authlib over TLS with certificate A, at the gateway: the JWT's
    cnf.x5t#S256 is A's thumbprint."""
    doc = gateway_document(mst)
    with authlib_client(mst, MTLS_CLIENT, mst.pki.a) as client:
        got = client.fetch_token(doc["token_endpoint"], grant_type="client_credentials", scope="read",
                                 resource=JWT_RESOURCE)
    assert got["token_type"].lower() == "bearer"
    _, claims = tokens.decode_unverified(got["access_token"])
    assert claims["client_id"] == "mtls-client"
    assert claims["cnf"] == {"x5t#S256": pki.x5t_s256(mst.pki.a.pem)}


def test_authlib_gets_an_opaque_token_that_introspects_bound(mst):
    """Without resource= the token is opaque; introspected through the gateway (authlib's
    introspect_token, as rs-client) it answers cnf.x5t#S256 = A's thumbprint."""
    doc = gateway_document(mst)
    with authlib_client(mst, MTLS_CLIENT, mst.pki.a) as client:
        got = client.fetch_token(doc["token_endpoint"], grant_type="client_credentials", scope="read")
    assert "." not in got["access_token"]
    with authlib_client(mst, ("rs-client", "rs-secret"), None) as rs:
        r = rs.introspect_token(doc["introspection_endpoint"], token=got["access_token"])
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["active"] is True and answer["client_id"] == "mtls-client"
    assert answer["token_type"] == "Bearer"
    assert answer["cnf"] == {"x5t#S256": pki.x5t_s256(mst.pki.a.pem)}


def test_authlib_with_certificate_b_gets_a_token_bound_to_b(mst):
    with authlib_client(mst, MTLS_CLIENT, mst.pki.b) as client:
        got = client.fetch_token(f"{mst.tls_url}/oauth2/as1/token", grant_type="client_credentials",
                                 scope="read", resource=JWT_RESOURCE)
    assert tokens.decode_unverified(got["access_token"])[1]["cnf"] == {"x5t#S256": pki.x5t_s256(mst.pki.b.pem)}


def test_no_certificate_no_token(mst):
    """oidc-provider refuses mtls-client a token when no certificate came with the request:
    over TLS without one, and over the plain listener with a forged XFCC (Envoy drops it)."""
    with authlib_client(mst, MTLS_CLIENT, None) as client, pytest.raises(OAuthError) as refusal:
        client.fetch_token(f"{mst.tls_url}/oauth2/as1/token", grant_type="client_credentials", scope="read")
    assert refusal.value.error == "invalid_grant"
    r = requests.post(f"{mst.url}/oauth2/as1/token", data={"grant_type": "client_credentials", "scope": "read"},
                      headers={"Authorization": tokens.basic_auth(*MTLS_CLIENT),
                               "x-forwarded-client-cert": pki.xfcc(mst.pki.a.pem)}, timeout=TIMEOUT)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


# --------------------------------------------------------------------------- enforcement


@pytest.mark.parametrize("kind", KINDS)
def test_bound_token_with_its_certificate_passes(mst, bound, kind):
    """A's token with A's certificate: 200 on the route that requires mTLS and on the generic
    API route (as1 "allowed"); the upstream learns the proved binding."""
    for path in ("/api/mtls/x", "/api/x"):
        seen = allowed(mst, path, bound[kind], cert=mst.pki.a)
        assert seen.get(CNF_HEADER) == mtls_identity(mst.pki.a), (path, seen)


@pytest.mark.parametrize("kind", KINDS)
def test_bound_token_with_another_certificate_is_refused(mst, bound, kind):
    """A's token with B's certificate (also signed by the CA, so the handshake succeeds): 401,
    on the mTLS route and on the generic one (a bound token is held to its binding whatever
    the mode)."""
    for path in ("/api/mtls/x", "/api/x"):
        refused(mst, path, bound[kind], OTHER_CERT, cert=mst.pki.b)


@pytest.mark.parametrize("kind", KINDS)
def test_bound_token_without_a_certificate_is_refused(mst, bound, kind):
    """A's token over TLS with no client certificate, and over the plain listener: 401."""
    for path in ("/api/mtls/x", "/api/x"):
        refused(mst, path, bound[kind], NO_CERT)
        refused(mst, path, bound[kind], NO_CERT, tls=False)


@pytest.mark.parametrize("kind", KINDS)
def test_bound_token_with_a_clients_own_xfcc_on_the_plain_listener_is_refused(mst, bound, kind):
    """The plain listener with an XFCC for A written by the client (Hash= and Cert=): 401.
    (This Envoy drops the header, SANITIZE; test_a_clients_xfcc_is_not_a_certificate has one
    that lets it through.)"""
    for path in ("/api/mtls/x", "/api/x"):
        refused(mst, path, bound[kind], NO_CERT, tls=False,
                headers={"x-forwarded-client-cert": pki.xfcc(mst.pki.a.pem)})


@pytest.mark.parametrize("kind", KINDS)
def test_unbound_token_on_the_mtls_route_is_refused(mst, kind):
    """demo-client's unbound token with certificate A: the route requires a certificate-bound
    token, 401; the same token passes on the generic route ("allowed"), with no binding to
    report upstream."""
    token = unbound_token(mst, kind)
    refused(mst, "/api/mtls/x", token, NOT_BOUND, cert=mst.pki.a)
    seen = allowed(mst, "/api/x", token, cert=mst.pki.a)
    assert CNF_HEADER not in seen
    seen = allowed(mst, "/api/x", token, tls=False)
    assert CNF_HEADER not in seen


def test_a_clients_own_x_tollgate_cnf_never_reaches_the_upstream(mst, bound):
    """x-tollgate-cnf is Tollgate's: an inbound copy is removed (unbound token: none at all;
    bound token: only Tollgate's value)."""
    forged = {CNF_HEADER: "mtls;x5t=" + pki.x5t_s256(mst.pki.b.pem)}
    seen = allowed(mst, "/api/x", unbound_token(mst, "jwt"), cert=mst.pki.a, headers=forged)
    assert CNF_HEADER not in seen
    seen = allowed(mst, "/api/x", unbound_token(mst, "jwt"), tls=False, headers=forged)
    assert CNF_HEADER not in seen
    seen = allowed(mst, "/api/mtls/x", bound["jwt"], cert=mst.pki.a, headers=forged)
    assert seen[CNF_HEADER] == mtls_identity(mst.pki.a)


@pytest.mark.parametrize("kind", KINDS)
def test_dpop_scheme_with_a_certificate_bound_token_is_refused(mst, bound, kind):
    """`Authorization: DPoP <A's token>` with no proof, even with certificate A: 401 (the token
    is not DPoP-bound, and no proof came). The challenge may be the DPoP one."""
    seen = Upstream(mst)
    r = call(mst, "/api/mtls/x", bound[kind], cert=mst.pki.a, scheme="DPoP")
    assert r.status_code == 401, (r.status_code, dict(r.headers), r.text[:500])
    challenge = r.headers["www-authenticate"]
    assert "DPoP " in challenge, challenge
    dpop_challenge = challenge[challenge.index("DPoP "):]  # the error is in the scheme used
    assert 'error="invalid_dpop_proof"' in dpop_challenge or 'error="invalid_token"' in dpop_challenge, challenge
    assert r.json()["error"] in ("invalid_dpop_proof", "invalid_token"), r.text
    seen.saw_nothing()


# ------------------------------------------------------------------------------- bodies


BODY = json.dumps({"order": "x" * 2000, "n": 42}).encode()


def chunks():
    for i in range(0, len(BODY), 700):
        yield BODY[i:i + 700]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", ["at-once", "chunked"])
def test_post_with_a_body_over_http1(mst, bound, kind, shape):
    """A JSON POST on the mTLS route, the body sent with the headers or chunked: allowed with
    A's certificate (the whole body reaches the upstream), refused with B's (nothing does)."""
    data = BODY if shape == "at-once" else chunks()
    headers = {"content-type": "application/json"}
    seen = Upstream(mst)
    r = call(mst, "/api/mtls/orders", bound[kind], cert=mst.pki.a, method="POST", headers=headers, data=data)
    assert_allowed(r, "/api/mtls/orders")
    assert r.json()["body_len"] == len(BODY)
    assert r.json()["headers"][CNF_HEADER] == mtls_identity(mst.pki.a)
    if shape == "chunked":
        assert r.json()["headers"].get("transfer-encoding") == "chunked"
    assert seen.arrivals() == ["> POST /api/mtls/orders"]

    data = BODY if shape == "at-once" else chunks()
    refused(mst, "/api/mtls/orders", bound[kind], OTHER_CERT, cert=mst.pki.b, method="POST", headers=headers,
            data=data)


@pytest.mark.parametrize("kind", KINDS)
def test_post_with_a_body_over_http2(mst, bound, kind):
    """The same over HTTP/2 (ALPN h2, httpx with the certificate in its SSLContext)."""
    for ident, ok in ((mst.pki.a, True), (mst.pki.b, False)):
        seen = Upstream(mst)
        with httpx.Client(http2=True, verify=tls_context(mst, ident), timeout=TIMEOUT) as client:
            r = client.post(f"{mst.tls_url}/api/mtls/orders", content=BODY,
                            headers={"authorization": f"Bearer {bound[kind]}", "content-type": "application/json"})
        assert r.http_version == "HTTP/2"
        if ok:
            assert_allowed(r, "/api/mtls/orders")
            assert r.json()["body_len"] == len(BODY)
            assert r.json()["headers"][CNF_HEADER] == mtls_identity(ident)
            assert seen.arrivals() == ["> POST /api/mtls/orders"]
        else:
            assert_invalid_token(r, OTHER_CERT)
            seen.saw_nothing()


# -------------------------------------------------------- certificates from request headers


@pytest.mark.parametrize("kind", KINDS)
def test_a_clients_xfcc_is_not_a_certificate(forwarding, kind):
    """Certificates come from the connection: a bound token sent on the plain listener with the
    client's own `x-forwarded-client-cert` for A (Hash= and Cert=, as Envoy would write it) is
    refused, although this Envoy (ALWAYS_FORWARD_ONLY) lets the header through to Tollgate — the
    unbound call shows it reaching the upstream."""
    st = forwarding
    p = st.make_pki()
    spoof = {"x-forwarded-client-cert": pki.xfcc(p.a.pem)}
    r = call(st, "/api/x", unbound_token(st, kind), tls=False, headers=spoof)
    assert upstream_saw(r).get("x-forwarded-client-cert") == spoof["x-forwarded-client-cert"]
    token = st.as1_bound_token(p.a.pem, resource=JWT_RESOURCE if kind == "jwt" else None)
    for path in ("/api/mtls/x", "/api/x"):
        refused(st, path, token, NO_CERT, tls=False, headers=spoof)
        refused(st, path, token, NO_CERT, tls=False, headers={"client-cert": pki.client_cert_header(p.a.pem)})


@pytest.mark.parametrize("kind", KINDS)
def test_trusted_proxy_xfcc(xfcc_proxy, kind):
    """`client_certificate` from "xfcc": the test is the proxy. XFCC for A with A's token →
    200 and the upstream gets the binding but not the header; XFCC for B, or none → 401. Hash=
    alone and Cert= alone each name the certificate. The gateway's calls keep the header, so
    as1 binds a token asked for through the gateway to the proxy's certificate."""
    st = xfcc_proxy
    p = st.make_pki()
    token = st.as1_bound_token(p.a.pem, resource=JWT_RESOURCE if kind == "jwt" else None)
    for header in (pki.xfcc(p.a.pem), pki.xfcc(p.a.pem, cert=False), pki.xfcc(p.a.pem, hash_=False)):
        for path in ("/api/mtls/x", "/api/x"):
            seen = allowed(st, path, token, tls=False, headers={"x-forwarded-client-cert": header})
            assert "x-forwarded-client-cert" not in seen, seen
            assert seen[CNF_HEADER] == mtls_identity(p.a)
    for path in ("/api/mtls/x", "/api/x"):
        refused(st, path, token, OTHER_CERT, tls=False, headers={"x-forwarded-client-cert": pki.xfcc(p.b.pem)})
        refused(st, path, token, NO_CERT, tls=False)
    # the gateway's calls keep the header for the AS: a token through it is bound to A
    r = requests.post(f"{st.url}/oauth2/as1/token", timeout=TIMEOUT,
                      data={"grant_type": "client_credentials", "scope": "read", "resource": JWT_RESOURCE},
                      headers={"Authorization": tokens.basic_auth(*MTLS_CLIENT),
                               "x-forwarded-client-cert": pki.xfcc(p.a.pem)})
    assert r.status_code == 200, r.text
    assert tokens.decode_unverified(r.json()["access_token"])[1]["cnf"] == {"x5t#S256": pki.x5t_s256(p.a.pem)}
    # an unbound token through the proxy with a certificate: the header is still removed
    seen = allowed(st, "/api/x", unbound_token(st, kind), tls=False,
                   headers={"x-forwarded-client-cert": pki.xfcc(p.a.pem)})
    assert "x-forwarded-client-cert" not in seen and CNF_HEADER not in seen


@pytest.mark.parametrize("kind", KINDS)
def test_trusted_proxy_client_cert(client_cert_proxy, kind):
    """`client_certificate` from "client-cert" (RFC 9440 `Client-Cert: :<base64 DER>:`): the
    same, with that header."""
    st = client_cert_proxy
    p = st.make_pki()
    token = st.as1_bound_token(p.a.pem, resource=JWT_RESOURCE if kind == "jwt" else None)
    for path in ("/api/mtls/x", "/api/x"):
        seen = allowed(st, path, token, tls=False, headers={"client-cert": pki.client_cert_header(p.a.pem)})
        assert "client-cert" not in seen, seen
        assert seen[CNF_HEADER] == mtls_identity(p.a)
        refused(st, path, token, OTHER_CERT, tls=False, headers={"client-cert": pki.client_cert_header(p.b.pem)})
        refused(st, path, token, NO_CERT, tls=False)
        # an XFCC is not what this deployment reads (Envoy's SANITIZE drops it anyway)
        refused(st, path, token, NO_CERT, tls=False, headers={"x-forwarded-client-cert": pki.xfcc(p.a.pem)})


PROXY_BODY_SHAPES = ["first-packet", "later", "chunked", "chunked-trailers", "h2", "h2-trailers"]


@pytest.mark.parametrize("shape", PROXY_BODY_SHAPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("proxy", ["xfcc", "client-cert"])
def test_trusted_proxy_with_a_body(request, proxy, kind, shape):
    """A POST with a JSON body through each trusted-proxy deployment, in each shape (HTTP/1.1 at
    once, later, chunked, chunked with trailers; HTTP/2 DATA with and without trailers): with
    A's certificate header the whole body reaches the upstream once, without the header; with
    B's nothing does. (For an opaque token the request waits for introspection while the body
    arrives.)"""
    st = request.getfixturevalue("xfcc_proxy" if proxy == "xfcc" else "client_cert_proxy")
    name = "x-forwarded-client-cert" if proxy == "xfcc" else "client-cert"
    as_header = pki.xfcc if proxy == "xfcc" else pki.client_cert_header
    p = st.make_pki()
    token = st.as1_bound_token(p.a.pem, resource=JWT_RESOURCE if kind == "jwt" else None)
    path = "/api/mtls/orders"

    def send(ident: pki.Identity) -> wire.Reply:
        headers = [("Authorization", f"Bearer {token}"), ("Content-Type", "application/json"),
                   (name, as_header(ident.pem))]
        return wire.send(st.listener_port, wire.request(shape, "POST", path, headers, BODY,
                                                        host=f"127.0.0.1:{st.listener_port}"))

    seen = Upstream(st)
    r = send(p.a)
    assert r.status == 200, r
    echo = r.json()
    assert echo["path"] == path and echo["method"] == "POST" and echo["body_len"] == len(BODY), echo
    assert name not in echo["headers"], echo["headers"]
    assert echo["headers"][CNF_HEADER] == mtls_identity(p.a)
    assert seen.arrivals() == [f"> POST {path}"]

    seen = Upstream(st)
    r = send(p.b)
    assert r.status == 401, r
    assert f'error_description="{OTHER_CERT}"' in r.headers["www-authenticate"], r
    seen.saw_nothing()


# ---------------------------------------------------------------------------- mode "off"


def test_mode_off_refuses_certificate_bound_tokens(new_stack):
    """as1 `mtls.mode` "off" on a route without its own mode: a certificate-bound token cannot
    be proven there and is refused even with its certificate; unbound tokens pass."""
    st = new_stack(tls=True, issuer_overrides={"as1": {"mtls": {"mode": "off"}}})
    st.start()
    token = gateway_token(st, "jwt", st.pki.a)
    refused(st, "/api/x", token, cert=st.pki.a)
    seen = allowed(st, "/api/x", unbound_token(st, "jwt"), cert=st.pki.a)
    assert CNF_HEADER not in seen
