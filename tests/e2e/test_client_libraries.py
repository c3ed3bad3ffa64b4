"""Real OAuth / OpenID Connect client libraries driving the gateway (issue 14, point 4).

Two libraries, used as their documentation says, know only the gateway's per-AS metadata URL
`http://127.0.0.1:<envoy>/oauth2/<as>/.well-known/...` and find every endpoint there:

- npm openid-client 6.9.1 (panva, a certified RP; tests/rig/rp/rp.mjs, one library call per
  subcommand): it validates the metadata, the token responses, the ID token (signature against
  the AS's JWKS, iss, aud, nonce, at_hash), state, PKCE, the userinfo subject.
- PyPI authlib 1.9.10 (its requests client, OAuth2Session): metadata validation
  (OpenIDProviderMetadata, AuthorizationServerMetadata), client_credentials, introspection,
  revocation, refresh, code + PKCE; the ID token is checked with authlib.jose + CodeIDToken
  against the AS's JWKS. authlib has no client for RFC 7591 registration, PAR, the device flow,
  CIBA or RP-initiated logout: registration is a plain POST through authlib's session, the
  logout URL is built by hand from the document authlib validated (rpinitiated metadata); PAR,
  device and CIBA run with openid-client only.

Which document: OIDC flows (code, userinfo, refresh, logout) use `openid-configuration`;
OAuth flows (client_credentials, introspection, revocation, registration) use the RFC 8414
`oauth-authorization-server` document (django-oauth-toolkit lists introspection, revocation
and registration only there).

Every (library, flow, AS, tagging) is its own test; one deployment per tagging mode is shared
by the module. The browser steps (login, consent, device code, logout confirm) are played at
the AS's own pages after the gateway's redirect (tests/rig/browser.py). Each flow also checks
its result against the real AS or API (the token works on the API, introspection says active,
the revoked token is inactive), so a library that "succeeds" on a wrong answer still fails.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

import browser
import rp_client
import stack as rig_stack
import tokens
from stack import upstream_saw

TIMEOUT = 15
REDIRECT = "http://127.0.0.1/cb"
LOGGED_OUT = "http://127.0.0.1/logged-out"
API = "/api/orders"
WHICH = ["as1", "as2"]

# Clients whose ids and secrets need no RFC 6749 §2.3.1 encoding (authlib does not encode,
# authlib#594), so both libraries' client_secret_basic is right for them.
CC = {"as1": ("demo-client", "demo-secret"), "as2": ("dot-opaque", "dot-opaque-secret")}
CODE = {"as1": ("demo-client", "demo-secret"), "as2": ("dot-code", "dot-code-secret")}
CODE_SCOPE = {"as1": "openid offline_access read", "as2": "openid read"}
CODE_PARAMS = {"as1": {"prompt": "consent"}, "as2": {}}  # oidc-provider: offline_access needs consent
CLIENT_ID_PREFIX = {"as1": "as1-", "as2": "dot-"}

DOT_NO_SECRET_EXPIRY = pytest.mark.xfail(
    strict=True,
    reason="RFC 7591 §3.2.1: client_secret_expires_at is REQUIRED when a client_secret is issued; "
           "django-oauth-toolkit 3.4.1's registration answer lacks it and openid-client "
           "(oauth4webapi processDynamicClientRegistrationResponse) refuses the answer "
           "('\"response\" body \"client_secret_expires_at\" property must be a number')",
)


# -------------------------------------------------------------- deployment (conftest's `gw`)


def doc_url(st: rig_stack.Stack, which: str, kind: str) -> str:
    return f"{st.url}/oauth2/{which}/.well-known/{kind}"


OIDC, OAUTH = "openid-configuration", "oauth-authorization-server"


def issuer_of(st: rig_stack.Stack, which: str) -> str:
    return st.as1_issuer if which == "as1" else st.as2_issuer


def as_origin(st: rig_stack.Stack, which: str) -> str:
    return st.as1_issuer if which == "as1" else f"http://127.0.0.1:{st.as2_port}"


def served(st: rig_stack.Stack, which: str) -> dict[str, int]:
    return requests.get(f"{as_origin(st, which)}/__rig/stats", timeout=5).json()["requests"]


def api_ok(st: rig_stack.Stack, token: str, which: str) -> dict:
    r = st.call(API, token)
    assert r.status_code == 200, (r.status_code, r.text)
    seen = upstream_saw(r)
    assert seen["x-tollgate-issuer"] == which
    return seen


def gw_introspect(st: rig_stack.Stack, which: str, token: str, client: tuple[str, str]) -> dict:
    r = requests.post(f"{st.url}/oauth2/{which}/introspect", data={"token": token}, timeout=TIMEOUT,
                      headers={"Authorization": tokens.basic_auth(*client), "Accept": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()


def check_gateway_doc(st: rig_stack.Stack, which: str, doc: dict) -> None:
    """The document a library accepted is the gateway's: the AS's issuer and JWKS, every
    *_endpoint at the gateway."""
    assert doc["issuer"] == issuer_of(st, which)
    assert doc["jwks_uri"].startswith(as_origin(st, which) + "/")
    for name, value in doc.items():
        if name.endswith("_endpoint"):
            assert value.startswith(f"{st.url}/oauth2/{which}/"), (name, value)


def tagged(st: rig_stack.Stack, which: str, value: str) -> bool:
    return value.startswith(f"{which}.")


# ------------------------------------------------------------------------- openid-client


def oc(st, which, kind, client, **args) -> dict:
    return rp_client.run(args.pop("op"), server=doc_url(st, which, kind), client_id=client[0],
                         client_secret=client[1], **args)


def ok(result: dict) -> dict:
    assert "error" not in result, result["error"]
    return result


def oc_code_flow(st, which, *, par: bool = False) -> dict:
    """openid-client: authorization URL (plain or PAR) from the gateway's document, the browser
    at the AS, then authorizationCodeGrant on the callback URL (state, PKCE, ID token checked by
    the library)."""
    client = CODE[which]
    start = ok(oc(st, which, OIDC, client, op="auth_url", redirect_uri=REDIRECT, scope=CODE_SCOPE[which],
                  par=par, params=CODE_PARAMS[which]))
    gateway_url = start["url"]
    assert gateway_url.startswith(f"{st.url}/oauth2/{which}/authorize?")
    if par:
        assert set(parse_qs(urlsplit(gateway_url).query)) == {"client_id", "request_uri"}
    with requests.Session() as s:
        # the gateway's 302 to the AS, then the AS's own pages
        r = s.get(gateway_url, allow_redirects=False, timeout=TIMEOUT)
        assert r.status_code == 302, (r.status_code, r.text)
        assert r.headers["location"].startswith(as_origin(st, which) + "/")
        callback = browser.login_to_redirect(s, r.headers["location"], REDIRECT, rig_user=which == "as2")
    got = ok(oc(st, which, OIDC, client, op="code_grant", callback_url=callback, state=start["state"],
                nonce=start["nonce"], code_verifier=start["code_verifier"]))
    claims = got["claims"]
    assert claims["iss"] == issuer_of(st, which)
    assert claims["aud"] in (client[0], [client[0]])
    assert claims["nonce"] == start["nonce"]
    token = got["token"]
    if st.tagging:
        # an ID token's at_hash binds the access token: it stays as the AS minted it
        assert not tagged(st, which, token["access_token"])
        if "refresh_token" in token:
            assert tagged(st, which, token["refresh_token"])
    return got


OC_FLOWS = ["metadata", "client_credentials", "introspection", "revocation", "registration",
            "code_pkce", "code_pkce_par", "userinfo", "refresh", "logout", "device", "ciba"]
# PAR, the device flow and CIBA: django-oauth-toolkit 3.4.1 has no PAR and no CIBA, and its
# device flow answers 500 with oauthlib 4.0.1 (see tests/rig/README.md): as1 only.
AS1_ONLY = {"code_pkce_par", "device", "ciba"}


def oc_cases():
    for flow in OC_FLOWS:
        for which in WHICH:
            if which == "as2" and flow in AS1_ONLY:
                continue
            marks = [DOT_NO_SECRET_EXPIRY] if (flow, which) == ("registration", "as2") else []
            yield pytest.param(flow, which, marks=marks, id=f"{flow}-{which}")


@pytest.mark.parametrize("flow,which", list(oc_cases()))
def test_openid_client(gw, flow, which):
    st = gw
    if flow == "metadata":
        for kind in (OIDC, OAUTH):
            doc = ok(oc(st, which, kind, CC[which], op="metadata"))
            check_gateway_doc(st, which, doc)
    elif flow == "client_credentials":
        got = ok(oc(st, which, OAUTH, CC[which], op="client_credentials", scope="read"))
        assert got["token_type"].lower() == "bearer"
        assert tagged(st, which, got["access_token"]) == st.tagging
        api_ok(st, got["access_token"], which)
    elif flow == "introspection":
        token = ok(oc(st, which, OAUTH, CC[which], op="client_credentials", scope="read"))["access_token"]
        got = ok(oc(st, which, OAUTH, CC[which], op="introspect", token=token))
        assert got["active"] is True and got["client_id"] == CC[which][0] and got["scope"] == "read"
    elif flow == "revocation":
        token = ok(oc(st, which, OAUTH, CC[which], op="client_credentials", scope="read"))["access_token"]
        api_ok(st, token, which)
        assert ok(oc(st, which, OAUTH, CC[which], op="revoke", token=token)) == {"revoked": True}
        assert gw_introspect(st, which, token, CC[which]) == {"active": False}
        assert st.call(API, token).status_code == 401
    elif flow == "registration":
        metadata = {"client_name": "oc-reg", "grant_types": ["client_credentials"], "response_types": [],
                    "redirect_uris": [], "token_endpoint_auth_method": "client_secret_basic"}
        if which == "as2":
            metadata = {**metadata, "redirect_uris": [REDIRECT]}
        reg = ok(rp_client.run("register", server=doc_url(st, which, OAUTH), metadata=metadata))
        assert reg["client_id"].startswith(CLIENT_ID_PREFIX[which]), "the AS's own id, untagged"
        assert reg["registration_client_uri"].rstrip("/") == f"{st.url}/oauth2/{which}/register/{reg['client_id']}"
        # the new client works with the library, at the gateway
        got = ok(oc(st, which, OAUTH, (reg["client_id"], reg["client_secret"]), op="client_credentials"))
        assert got["access_token"]
    elif flow in ("code_pkce", "code_pkce_par"):
        got = oc_code_flow(st, which, par=flow == "code_pkce_par")
        seen = api_ok(st, got["token"]["access_token"], which)
        assert seen["x-tollgate-sub"] == got["claims"]["sub"]
    elif flow == "userinfo":
        got = oc_code_flow(st, which)
        info = ok(oc(st, which, OIDC, CODE[which], op="userinfo", access_token=got["token"]["access_token"],
                     sub=got["claims"]["sub"]))
        assert info["sub"] == got["claims"]["sub"]
    elif flow == "refresh":
        got = oc_code_flow(st, which)
        fresh = ok(oc(st, which, OIDC, CODE[which], op="refresh", refresh_token=got["token"]["refresh_token"]))
        assert fresh["token"]["access_token"] != got["token"]["access_token"]
        if fresh["claims"]:
            assert fresh["claims"]["sub"] == got["claims"]["sub"]
        api_ok(st, fresh["token"]["access_token"], which)
    elif flow == "logout":
        client = CODE[which]
        start = ok(oc(st, which, OIDC, client, op="auth_url", redirect_uri=REDIRECT, scope="openid",
                      params=CODE_PARAMS[which]))
        headers = {"X-Rig-User": "alice"} if which == "as2" else None
        with requests.Session() as s:
            r = s.get(start["url"], allow_redirects=False, timeout=TIMEOUT)
            callback = browser.login_to_redirect(s, r.headers["location"], REDIRECT, rig_user=which == "as2")
            got = ok(oc(st, which, OIDC, client, op="code_grant", callback_url=callback, state=start["state"],
                        nonce=start["nonce"], code_verifier=start["code_verifier"]))
            url = ok(oc(st, which, OIDC, client, op="end_session_url", params={
                "id_token_hint": got["token"]["id_token"], "post_logout_redirect_uri": LOGGED_OUT,
                "state": "bye"}))["url"]
            assert url.startswith(f"{st.url}/oauth2/{which}/end_session?")
            r = s.get(url, allow_redirects=False, timeout=TIMEOUT)
            assert r.status_code == 302, (r.status_code, r.text)
            assert r.headers["location"].split("?")[0] == issuer_doc(st, which)["end_session_endpoint"]
            status, location, _ = browser.confirm_logout(s, r.headers["location"], headers=headers)
        assert location and location.startswith(LOGGED_OUT), (status, location)
        assert parse_qs(urlsplit(location).query)["state"] == ["bye"]
    elif flow == "device":
        run = rp_client.start("device", server=doc_url(st, which, OIDC), client_id="as1-device",
                              client_secret="as1-device-secret", scope="openid read")
        try:
            started = run.first()
            assert "error" not in started, started
            browser.confirm_device_code(started["verification_uri"], started["user_code"])
            got = ok(run.finish())
        finally:
            run.stop()
        assert got["claims"]["aud"] == "as1-device" and got["claims"]["sub"] == "alice"
        api_ok(st, got["token"]["access_token"], which)
    elif flow == "ciba":
        run = rp_client.start("ciba", server=doc_url(st, which, OIDC), client_id="as1-ciba",
                              client_secret="as1-ciba-secret", scope="openid read", login_hint="bob")
        try:
            started = run.first()
            assert "error" not in started, started
            r = requests.post(f"{st.as1_issuer}/__rig/ciba", timeout=TIMEOUT,
                              params={"auth_req_id": started["auth_req_id"], "action": "approve"})
            assert r.status_code == 200, r.text
            got = ok(run.finish())
        finally:
            run.stop()
        assert got["claims"]["aud"] == "as1-ciba" and got["claims"]["sub"] == "bob"
        api_ok(st, got["token"]["access_token"], which)
    else:  # pragma: no cover
        pytest.fail(flow)


def issuer_doc(st: rig_stack.Stack, which: str) -> dict:
    """The AS's own OIDC discovery document (to know where its end-session endpoint is)."""
    own = "/.well-known/openid-configuration" if which == "as1" else "/o/.well-known/openid-configuration"
    return requests.get(as_origin(st, which) + own, timeout=TIMEOUT).json()


# ------------------------------------------------------------------------------- authlib


def authlib_doc(st, which, kind) -> dict:
    from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
    from authlib.oidc.discovery import OpenIDProviderMetadata
    from authlib.oidc.rpinitiated.discovery import OpenIDProviderMetadata as RPInitiatedMetadata

    r = requests.get(doc_url(st, which, kind), timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    doc = r.json()
    if kind == OIDC:
        OpenIDProviderMetadata(doc).validate()
        if "end_session_endpoint" in doc:
            RPInitiatedMetadata(doc).validate_end_session_endpoint()
    else:
        AuthorizationServerMetadata(doc).validate()
    return doc


def authlib_session(client, **kw):
    from authlib.integrations.requests_client import OAuth2Session

    return OAuth2Session(client[0], client[1], token_endpoint_auth_method="client_secret_basic", **kw)


def authlib_code_flow(st, which) -> tuple[dict, dict]:
    """authlib: create_authorization_url with PKCE S256 and a nonce, the browser at the AS,
    fetch_token with the callback URL; the ID token verified with authlib.jose against the AS's
    JWKS (from the gateway's document) as a CodeIDToken (iss, aud, nonce, at_hash)."""
    from authlib.common.security import generate_token
    from authlib.jose import JsonWebKey, jwt
    from authlib.oidc.core import CodeIDToken

    doc = authlib_doc(st, which, OIDC)
    client = CODE[which]
    verifier = generate_token(48)
    nonce = generate_token(20)
    with authlib_session(client, redirect_uri=REDIRECT, scope=CODE_SCOPE[which],
                         code_challenge_method="S256") as sess:
        url, state = sess.create_authorization_url(doc["authorization_endpoint"], code_verifier=verifier,
                                                   nonce=nonce, **CODE_PARAMS[which])
        assert url.startswith(f"{st.url}/oauth2/{which}/authorize?")
        with requests.Session() as s:
            r = s.get(url, allow_redirects=False, timeout=TIMEOUT)
            assert r.status_code == 302, (r.status_code, r.text)
            callback = browser.login_to_redirect(s, r.headers["location"], REDIRECT, rig_user=which == "as2")
        token = dict(sess.fetch_token(doc["token_endpoint"], authorization_response=callback,
                                      code_verifier=verifier, state=state))
    jwks = JsonWebKey.import_key_set(requests.get(doc["jwks_uri"], timeout=TIMEOUT).json())
    claims = jwt.decode(token["id_token"], jwks, claims_cls=CodeIDToken,
                        claims_options={"iss": {"essential": True, "value": issuer_of(st, which)}},
                        claims_params={"nonce": nonce, "client_id": client[0],
                                       "access_token": token["access_token"]})
    claims.validate(leeway=5)
    if st.tagging:
        assert not tagged(st, which, token["access_token"])
        if "refresh_token" in token:
            assert tagged(st, which, token["refresh_token"])
    return token, dict(claims)


AUTHLIB_FLOWS = ["metadata", "client_credentials", "introspection", "revocation", "registration",
                 "code_pkce", "userinfo", "refresh", "logout"]


@pytest.mark.parametrize("flow,which", [pytest.param(f, w, id=f"{f}-{w}") for f in AUTHLIB_FLOWS for w in WHICH])
def test_authlib(gw, flow, which):
    st = gw
    if flow == "metadata":
        for kind in (OIDC, OAUTH):
            check_gateway_doc(st, which, authlib_doc(st, which, kind))
        return
    if flow in ("client_credentials", "introspection", "revocation", "registration"):
        doc = authlib_doc(st, which, OAUTH)
        with authlib_session(CC[which], scope="read") as sess:
            if flow == "registration":
                # authlib has no RFC 7591 client: a plain JSON POST through its session
                r = sess.post(doc["registration_endpoint"], json={
                    "client_name": "authlib-reg", "grant_types": ["client_credentials"],
                    "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "client_secret_basic"},
                    withhold_token=True, auth=None, timeout=TIMEOUT)
                assert r.status_code == 201, r.text
                reg = r.json()
                assert reg["client_id"].startswith(CLIENT_ID_PREFIX[which])
                assert reg["registration_client_uri"].startswith(f"{st.url}/oauth2/{which}/register/")
                with authlib_session((reg["client_id"], reg["client_secret"])) as new:
                    assert new.fetch_token(doc["token_endpoint"], grant_type="client_credentials")["access_token"]
                return
            token = sess.fetch_token(doc["token_endpoint"], grant_type="client_credentials")["access_token"]
            assert tagged(st, which, token) == st.tagging
            if flow == "client_credentials":
                api_ok(st, token, which)
            elif flow == "introspection":
                r = sess.introspect_token(doc["introspection_endpoint"], token=token)
                assert r.status_code == 200, r.text
                got = r.json()
                assert got["active"] is True and got["client_id"] == CC[which][0]
            else:
                api_ok(st, token, which)
                r = sess.revoke_token(doc["revocation_endpoint"], token=token)
                assert r.status_code == 200, r.text
                assert gw_introspect(st, which, token, CC[which]) == {"active": False}
                assert st.call(API, token).status_code == 401
        return
    if flow == "code_pkce":
        token, claims = authlib_code_flow(st, which)
        assert api_ok(st, token["access_token"], which)["x-tollgate-sub"] == claims["sub"]
    elif flow == "userinfo":
        token, claims = authlib_code_flow(st, which)
        doc = authlib_doc(st, which, OIDC)
        with authlib_session(CODE[which], token=token) as sess:
            r = sess.get(doc["userinfo_endpoint"], timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        assert r.json()["sub"] == claims["sub"]
    elif flow == "refresh":
        token, claims = authlib_code_flow(st, which)
        doc = authlib_doc(st, which, OIDC)
        with authlib_session(CODE[which]) as sess:
            fresh = dict(sess.refresh_token(doc["token_endpoint"], refresh_token=token["refresh_token"]))
        assert fresh["access_token"] != token["access_token"]
        api_ok(st, fresh["access_token"], which)
    elif flow == "logout":
        doc = authlib_doc(st, which, OIDC)
        assert doc["end_session_endpoint"] == f"{st.url}/oauth2/{which}/end_session"
        headers = {"X-Rig-User": "alice"} if which == "as2" else None
        token, _ = authlib_code_flow(st, which)
        url = doc["end_session_endpoint"] + "?" + urlencode({
            "id_token_hint": token["id_token"], "post_logout_redirect_uri": LOGGED_OUT, "state": "bye"})
        with requests.Session() as s:
            # a fresh login in this browser, then logout through the gateway
            r = s.get(url, allow_redirects=False, timeout=TIMEOUT)
            assert r.status_code == 302, (r.status_code, r.text)
            status, location, _ = browser.confirm_logout(s, r.headers["location"], headers=headers)
        assert location and location.startswith(LOGGED_OUT), (status, location)
    else:  # pragma: no cover
        pytest.fail(flow)


# rs:client@2 / s3cr3t+/=%& is an introspection client at both AS whose id and secret change
# when form-urlencoded: the case where client_secret_basic needs RFC 6749 §2.3.1's encoding.
ENCODED_CLIENT = ("rs:client@2", "s3cr3t+/=%&")


@pytest.mark.xfail(
    strict=True,
    reason="RFC 6749 §2.3.1: client_secret_basic form-urlencodes the client id and secret "
           "before base64; authlib 1.9.10 (authlib.oauth2.auth.encode_client_secret_basic) does "
           "not (https://github.com/authlib/authlib/issues/594; it did from 1.3.0 and was "
           "reverted after https://github.com/authlib/authlib/issues/629), so both AS refuse "
           "the credentials",
)
@pytest.mark.parametrize("which", WHICH)
def test_authlib_client_secret_basic_with_characters_that_need_encoding(gw, which):
    """The same introspection through the gateway with a client whose credentials need
    encoding; the gateway forwards the header as sent, so the AS judges the library."""
    st = gw
    doc = authlib_doc(st, which, OAUTH)
    with authlib_session(CC[which], scope="read") as sess:
        token = sess.fetch_token(doc["token_endpoint"], grant_type="client_credentials")["access_token"]
    # Correctly encoded (tokens.basic_auth), the client is accepted: the case is the library's.
    assert gw_introspect(st, which, token, ENCODED_CLIENT)["active"] is True
    with authlib_session(ENCODED_CLIENT) as sess:
        r = sess.introspect_token(doc["introspection_endpoint"], token=token)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["active"] is True


def test_rp_driver_reports_library_failures(gw):
    """The driver can fail: openid-client refuses a document whose issuer is not the one it
    was told (discovery by issuer identifier on the gateway's URL, which is not the issuer)."""
    got = rp_client.run("metadata", server=f"{gw.url}/oauth2/as1", client_id="demo-client",
                        client_secret="demo-secret")
    assert "error" in got, json.dumps(got)[:200]
