"""The gateway's newer endpoints end to end (issue 14): PAR, the device flow, CIBA, RP-initiated
logout (GET and POST), RFC 7592 client management, and the three well-known documents, with
plain HTTP (requests) like test_gateway.py.

Each call checks where it went: the AS's own per-path counters (`/__rig/stats`) and Tollgate's
`tollgate.issuer.<n>.gateway.<endpoint>` counters (test_gateway.Watch). django-oauth-toolkit
3.4.1 has no PAR and no CIBA, and does not publish a device endpoint (its device flow also
fails with oauthlib 4.0.1, see tests/rig/README.md): for as2 the gateway must not list them.
One deployment per tagging mode (conftest's `gw`) is shared by the module.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

import browser
import stack as rig_stack
import tokens
from test_gateway import Watch, as_origin, issuer_of

TIMEOUT = 15
REDIRECT = "http://127.0.0.1/cb"
LOGGED_OUT = "http://127.0.0.1/logged-out"
WHICH = ["as1", "as2"]
OWN = {  # the AS's own paths behind each new gateway endpoint
    "par": {"as1": "/request"},
    "device_authorization": {"as1": "/device/auth"},
    "backchannel_authentication": {"as1": "/backchannel"},
    "end_session": {"as1": "/session/end", "as2": "/o/logout/"},
    "register": {"as1": "/reg", "as2": "/o/register/"},
    "token": {"as1": "/token", "as2": "/o/token/"},
}
DEMO = ("demo-client", "demo-secret")


def post(st, path, data=None, client=None, **kw) -> requests.Response:
    headers = kw.pop("headers", {})
    if client:
        headers["Authorization"] = tokens.basic_auth(*client)
    return requests.post(f"{st.url}{path}", data=data, headers=headers, timeout=TIMEOUT,
                         allow_redirects=False, **kw)


def untag(st, which, value: str) -> str:
    """What the AS minted, from what the gateway handed out."""
    return value[len(which) + 1:] if st.tagging and value.startswith(f"{which}.") else value


# -------------------------------------------------------------------------------------- PAR


def test_par_then_authorize_as1(gw):
    """RFC 9126: the pushed request goes to the AS's PAR endpoint through the gateway; the
    request_uri then works at the gateway's authorize (302 to the AS) and the code exchange."""
    st = gw
    verifier, challenge = tokens.pkce_pair()
    watch = Watch(st)
    r = post(st, "/oauth2/as1/par", {"response_type": "code", "client_id": "demo-client", "redirect_uri": REDIRECT,
                                     "scope": "openid", "state": "s-par", "code_challenge": challenge,
                                     "code_challenge_method": "S256"}, client=DEMO)
    assert r.status_code == 201, (r.status_code, r.text)
    pushed = r.json()
    assert pushed["request_uri"].startswith("urn:ietf:params:oauth:request_uri:") and pushed["expires_in"] > 0
    watch.only("as1", OWN["par"]["as1"], endpoint="par")

    query = urlencode({"client_id": "demo-client", "request_uri": pushed["request_uri"]})
    r = requests.get(f"{st.url}/oauth2/as1/authorize?{query}", allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 302, r.text
    assert r.headers["location"] == f"{st.as1_issuer}/auth?{query}"
    with requests.Session() as s:
        back = browser.login_to_redirect(s, r.headers["location"], REDIRECT)
    q = parse_qs(urlsplit(back).query)
    assert q["state"] == ["s-par"]
    watch.reset()
    r = post(st, "/oauth2/as1/token", {"grant_type": "authorization_code", "code": q["code"][0],
                                       "redirect_uri": REDIRECT, "code_verifier": verifier}, client=DEMO)
    assert r.status_code == 200, r.text
    assert "id_token" in r.json()
    watch.only("as1", OWN["token"]["as1"], endpoint="token")


def test_as2_has_no_par_so_the_gateway_lists_none(gw):
    st = gw
    for kind in ("openid-configuration", "oauth-authorization-server"):
        doc = requests.get(f"{st.url}/oauth2/as2/.well-known/{kind}", timeout=TIMEOUT).json()
        for name in ("pushed_authorization_request_endpoint", "device_authorization_endpoint",
                     "backchannel_authentication_endpoint"):
            assert name not in doc, (kind, name)


# ------------------------------------------------------------------------------ device flow


def test_device_flow_as1(gw):
    """RFC 8628: device authorization through the gateway, the user confirms at the AS's own
    page, the token poll through the gateway (pending first, then tokens)."""
    st = gw
    client = ("as1-device", "as1-device-secret")
    watch = Watch(st)
    r = post(st, "/oauth2/as1/device_authorization", {"scope": "openid read"}, client=client)
    assert r.status_code == 200, r.text
    started = r.json()
    assert started["verification_uri"].startswith(st.as1_issuer + "/"), "the user goes to the AS"
    watch.only("as1", OWN["device_authorization"]["as1"], endpoint="device_authorization")
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": started["device_code"]}
    watch.reset()
    r = post(st, "/oauth2/as1/token", poll, client=client)
    assert r.status_code == 400 and r.json()["error"] == "authorization_pending", r.text
    watch.only("as1", OWN["token"]["as1"], endpoint="token")
    browser.confirm_device_code(started["verification_uri"], started["user_code"])
    r = post(st, "/oauth2/as1/token", poll, client=client)
    assert r.status_code == 200, r.text
    got = r.json()
    assert tokens.decode_unverified(got["id_token"])[1]["sub"] == "alice"
    assert st.call("/api/orders", got["access_token"]).status_code == 200


# ------------------------------------------------------------------------------------- CIBA


def test_ciba_poll_as1(gw):
    """OpenID CIBA (poll): the backchannel request through the gateway, pending until the
    user's device approves, then the token through the gateway."""
    st = gw
    client = ("as1-ciba", "as1-ciba-secret")
    watch = Watch(st)
    r = post(st, "/oauth2/as1/backchannel_authentication", {"scope": "openid read", "login_hint": "bob"},
             client=client)
    assert r.status_code == 200, r.text
    auth_req_id = r.json()["auth_req_id"]
    watch.only("as1", OWN["backchannel_authentication"]["as1"], endpoint="backchannel_authentication")
    poll = {"grant_type": "urn:openid:params:grant-type:ciba", "auth_req_id": auth_req_id}
    r = post(st, "/oauth2/as1/token", poll, client=client)
    assert r.status_code == 400 and r.json()["error"] == "authorization_pending", r.text
    r = requests.post(f"{st.as1_issuer}/__rig/ciba", params={"auth_req_id": auth_req_id, "action": "approve"},
                      timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    r = post(st, "/oauth2/as1/token", poll, client=client)
    assert r.status_code == 200, r.text
    assert tokens.decode_unverified(r.json()["id_token"])[1]["sub"] == "bob"


# ----------------------------------------------------------------------------------- logout


def login_and_tokens(st, which, session) -> dict:
    """A code flow (gateway authorize + token) in `session`, so the AS has a session to end."""
    client = DEMO if which == "as1" else ("dot-code", "dot-code-secret")
    verifier, challenge = tokens.pkce_pair()
    query = urlencode({"response_type": "code", "client_id": client[0], "redirect_uri": REDIRECT,
                       "scope": "openid", "state": "s", "nonce": "n", "code_challenge": challenge,
                       "code_challenge_method": "S256"})
    r = session.get(f"{st.url}/oauth2/{which}/authorize?{query}", allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 302, r.text
    back = browser.login_to_redirect(session, r.headers["location"], REDIRECT, rig_user=which == "as2")
    code = parse_qs(urlsplit(back).query)["code"][0]
    r = post(st, f"/oauth2/{which}/token", {"grant_type": "authorization_code", "code": code,
                                            "redirect_uri": REDIRECT, "code_verifier": verifier}, client=client)
    assert r.status_code == 200, r.text
    return r.json()


def own_end_session(st, which) -> str:
    return as_origin(st, which) + OWN["end_session"][which]


@pytest.mark.parametrize("which", WHICH)
def test_logout_get_redirects_to_the_as_with_the_query_as_sent(gw, which):
    """GET end_session: a 302 to the AS's end_session_endpoint with the query byte-for-byte,
    answered by Tollgate (no AS call); the browser then confirms at the AS and lands on the
    post_logout_redirect_uri with its state."""
    st = gw
    headers = {"X-Rig-User": "alice"} if which == "as2" else None
    with requests.Session() as s:
        got = login_and_tokens(st, which, s)
        query = "id_token_hint=" + got["id_token"] + "&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%2Flogged-out" \
                "&state=a%20b%2Bc"
        watch = Watch(st)
        r = s.get(f"{st.url}/oauth2/{which}/end_session?{query}", allow_redirects=False, timeout=TIMEOUT)
        assert r.status_code == 302, (r.status_code, r.text)
        assert r.headers["location"] == f"{own_end_session(st, which)}?{query}"
        watch.nothing()
        assert watch.gateway() == {f"tollgate.issuer.{which}.gateway.end_session": 1}
        status, location, _ = browser.confirm_logout(s, r.headers["location"], headers=headers)
    assert location and location.startswith(LOGGED_OUT), (status, location)
    assert parse_qs(urlsplit(location).query)["state"] == ["a b+c"]


def test_logout_post_is_a_307_the_browser_reposts_to_the_as(gw):
    """POST end_session (RP-Initiated Logout §2 allows a form POST): a 307 to the AS's
    endpoint, so the browser re-sends the same POST there; oidc-provider then asks to confirm."""
    st = gw
    with requests.Session() as s:
        got = login_and_tokens(st, "as1", s)
        form = {"id_token_hint": got["id_token"], "post_logout_redirect_uri": LOGGED_OUT, "state": "p"}
        watch = Watch(st)
        r = s.post(f"{st.url}/oauth2/as1/end_session", data=form, allow_redirects=False, timeout=TIMEOUT)
        assert r.status_code == 307, (r.status_code, r.text)
        assert r.headers["location"] == own_end_session(st, "as1")
        watch.nothing()
        assert watch.gateway() == {"tollgate.issuer.as1.gateway.end_session": 1}
        # the browser re-POSTs the body to the Location (307 keeps method and body)
        page = s.post(r.headers["location"], data=form, allow_redirects=False, timeout=TIMEOUT)
        assert page.status_code == 200, page.text[:200]
        confirm = browser.forms(page.text)[0]
        done = browser.submit(s, page, confirm)
        assert done.status_code == 200 or done.status_code in (302, 303), done.status_code
        if done.status_code == 200:  # oidc-provider's own confirm page (xsrf + logout)
            confirm = next(f for f in browser.forms(done.text) if "xsrf" in f["fields"])
            done = browser.submit(s, done, confirm, {"logout": "yes"})
        assert done.headers["location"].startswith(LOGGED_OUT), done.headers.get("location")


# ------------------------------------------------------------------------------- RFC 7592


@pytest.mark.parametrize("which", WHICH)
def test_client_management_read_update_delete(gw, which):
    """RFC 7592 through the registration_client_uri the gateway handed out: GET reads, PUT
    replaces the metadata (new registration_access_token where the AS rotates it), DELETE
    removes the client, which the AS then no longer knows. (Tollgate counts these calls as
    `gateway.client_configuration`.)"""
    st = gw
    metadata = {"client_name": "mgmt", "grant_types": ["client_credentials"], "redirect_uris": [REDIRECT],
                "response_types": [], "token_endpoint_auth_method": "client_secret_basic"}
    r = requests.post(f"{st.url}/oauth2/{which}/register", json=metadata, timeout=TIMEOUT)
    assert r.status_code == 201, r.text
    reg = r.json()
    client_id = reg["client_id"]
    assert client_id.startswith("as1-" if which == "as1" else "dot-"), "the AS's own id, never tagged"
    uri = reg["registration_client_uri"]
    own_path = f"{OWN['register'][which]}/{client_id}" if which == "as1" else f"/o/register/{client_id}/"
    assert uri.rstrip("/") == f"{st.url}/oauth2/{which}/register/{client_id}"
    auth = {"Authorization": f"Bearer {reg['registration_access_token']}"}

    watch = Watch(st)
    r = requests.get(uri, headers=auth, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["client_id"] == client_id
    watch.only(which, own_path, endpoint="client_configuration")

    update = {**metadata, "client_name": "mgmt-renamed", "client_id": client_id}
    if which == "as1":
        update["client_secret"] = reg["client_secret"]  # oidc-provider: PUT carries the whole metadata
    watch.reset()
    r = requests.put(uri, json=update, headers=auth, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.json()["client_name"] == "mgmt-renamed"
    watch.only(which, own_path, endpoint="client_configuration")
    auth = {"Authorization": f"Bearer {r.json()['registration_access_token']}"}

    watch.reset()
    r = requests.delete(uri, headers=auth, timeout=TIMEOUT)
    assert r.status_code == 204, r.text
    watch.only(which, own_path, endpoint="client_configuration")
    r = post(st, f"/oauth2/{which}/token", {"grant_type": "client_credentials"},
             client=(client_id, reg["client_secret"]))
    assert r.status_code in (400, 401), r.text


# ----------------------------------------------------------------------- metadata documents


KINDS = {"as1": {"openid-configuration": "/.well-known/openid-configuration",
                 "oauth-authorization-server": "/.well-known/oauth-authorization-server"},
         "as2": {"openid-configuration": "/o/.well-known/openid-configuration",
                 "oauth-authorization-server": "/.well-known/oauth-authorization-server/o"}}


def gateway_docs(st, which) -> dict[str, requests.Response]:
    return {
        "openid-configuration": requests.get(f"{st.url}/oauth2/{which}/.well-known/openid-configuration",
                                             timeout=TIMEOUT),
        "oauth-authorization-server": requests.get(
            f"{st.url}/oauth2/{which}/.well-known/oauth-authorization-server", timeout=TIMEOUT),
        "path-inserted": requests.get(f"{st.url}/.well-known/oauth-authorization-server/oauth2/{which}",
                                      timeout=TIMEOUT),
    }


@pytest.mark.parametrize("which", WHICH)
def test_each_well_known_document_is_the_right_kind(gw, which):
    """openid-configuration is the AS's OIDC document, oauth-authorization-server (both
    locations) its RFC 8414 document: same fields apart from the endpoints, each endpoint the
    AS has (and the gateway serves) at the gateway, no *_endpoint at the AS."""
    st = gw
    docs = gateway_docs(st, which)
    for name, r in docs.items():
        assert r.status_code == 200, (name, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
    assert docs["path-inserted"].json() == docs["oauth-authorization-server"].json()
    for kind, own_path in KINDS[which].items():
        theirs = requests.get(as_origin(st, which) + own_path, timeout=TIMEOUT).json()
        ours = docs[kind].json()
        assert ours["issuer"] == theirs["issuer"] == issuer_of(st, which)
        assert ours["jwks_uri"] == theirs["jwks_uri"]
        keep = {k: v for k, v in theirs.items() if not k.endswith("_endpoint")}
        assert {k: v for k, v in ours.items() if not k.endswith("_endpoint")} == keep, kind
        for name, value in ours.items():
            if name.endswith("_endpoint"):
                assert value.startswith(f"{st.url}/oauth2/{which}/"), (kind, name, value)
                assert name in theirs, (kind, name, "not in the AS's document")
        for name in ("authorization_endpoint", "token_endpoint"):
            assert name in ours, (kind, name)
    oidc = docs["openid-configuration"].json()
    assert oidc["end_session_endpoint"] == f"{st.url}/oauth2/{which}/end_session"
    assert "subject_types_supported" in oidc and "id_token_signing_alg_values_supported" in oidc
    if which == "as1":
        assert oidc["pushed_authorization_request_endpoint"] == f"{st.url}/oauth2/as1/par"
        assert oidc["device_authorization_endpoint"] == f"{st.url}/oauth2/as1/device_authorization"
        assert oidc["backchannel_authentication_endpoint"] == f"{st.url}/oauth2/as1/backchannel_authentication"


def test_a_document_the_as_lacks_is_404(wasm, tmp_path_factory):
    """Both rig AS publish both documents, so a third issuer (the scriptable hostile AS)
    publishes only an OIDC discovery document: the gateway serves that one and answers 404
    for its RFC 8414 document, at both locations."""
    st = rig_stack.WithHostileAS(tmp_path_factory.mktemp("lacks"))
    st.hostile_port = rig_stack.free_port()
    hostile_base = f"http://127.0.0.1:{st.hostile_port}"
    issuer = hostile_base
    doc = {"issuer": issuer, "authorization_endpoint": f"{issuer}/auth", "token_endpoint": f"{issuer}/token",
           "jwks_uri": f"{issuer}/jwks", "response_types_supported": ["code"],
           "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"]}
    base_config = st.plugin_config

    def with_hostile() -> dict:
        cfg = base_config()
        cfg["issuers"].append({"name": "as3", "issuer": issuer,
                               "jwks": {"discovery": True, "upstream": "hostile"},
                               "gateway": {"metadata": True, "upstream": "hostile", "client_id_prefixes": ["h3-"]}})
        return cfg

    st.plugin_config = with_hostile
    try:
        st.start_hostile()
        st.rig("POST", "set", {"/.well-known/openid-configuration": {"json": doc},
                               "/jwks": {"json": {"keys": []}}})
        st.start()
        # as3 is not among the issuers the stack waits for: 503 until both of its documents
        # have been fetched once (the OpenID one, then the RFC 8414 one, which answers 404).
        deadline = time.monotonic() + 10
        while True:
            r = requests.get(f"{st.url}/oauth2/as3/.well-known/oauth-authorization-server", timeout=TIMEOUT)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        r = requests.get(f"{st.url}/oauth2/as3/.well-known/openid-configuration", timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        for path in ("/oauth2/as3/.well-known/oauth-authorization-server",
                     "/.well-known/oauth-authorization-server/oauth2/as3"):
            r = requests.get(st.url + path, timeout=TIMEOUT)
            assert r.status_code == 404, (path, r.status_code, r.text)
    finally:
        st.stop()


def test_new_endpoints_as2_lacks_are_refused_without_an_as_call(gw):
    """An endpoint the issuer's documents do not name is not served: no forwarding."""
    st = gw
    watch = Watch(st)
    for endpoint in ("par", "device_authorization", "backchannel_authentication"):
        r = post(st, f"/oauth2/as2/{endpoint}", {"scope": "read"}, client=("dot-client", "dot-secret"))
        assert r.status_code in (400, 404), (endpoint, r.status_code, r.text)
    assert watch.served() == {"as1": {}, "as2": {}}
