"""The OAuth endpoint gateway end to end: clients use ONE set of OAuth endpoints under /oauth2 on
Envoy, and Tollgate sends each call to the authorization server that owns it (oidc-provider as
"as1", django-oauth-toolkit as "as2"), then the tokens obtained that way work on the API.

Everything here talks to the gateway only (never to an AS's own endpoints, except where a
browser follows the gateway's 302 to the AS's login/consent pages). Every step checks where the
call went: the AS's own per-path counters (`GET /__rig/stats`, background key and metadata
fetches left out) and Tollgate's `tollgate.issuer.<n>.gateway.<endpoint>` /
`tollgate.gateway.refused` counters. Tests that need tagging build their own deployment. Every
wait is bounded.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qs, quote, quote_plus, urljoin, urlsplit

import pytest
import requests

import stack as rig_stack
import tokens
from stack import upstream_saw

REDIRECT = "http://127.0.0.1/cb"
API = "/api/orders"
TIMEOUT = 15
WHICH = ["as1", "as2"]

# The AS's own paths behind each gateway endpoint (tests/rig/README.md).
AUTHORIZE = {"as1": "/auth", "as2": "/o/authorize/"}
TOKEN = {"as1": "/token", "as2": "/o/token/"}
INTROSPECT = {"as1": "/token/introspection", "as2": "/o/introspect/"}
REVOKE = {"as1": "/token/revocation", "as2": "/o/revoke_token/"}
USERINFO = {"as1": "/me", "as2": "/o/userinfo/"}
REGISTER = {"as1": "/reg", "as2": "/o/register/"}
# Paths the background key/metadata refresh may hit at any time (not caused by a request).
BACKGROUND_PATHS = {
    "/jwks",
    "/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server",
    "/o/.well-known/jwks.json",
    "/o/.well-known/openid-configuration",
    "/.well-known/oauth-authorization-server/o",
}
# Resource-server credentials for introspection at each AS (README); rs:client@2 is configured
# for neither issuer's gateway routing, so calls with it route by the token.
RS = {"as1": ("rs-client", "rs-secret"), "as2": ("rs:client@2", "s3cr3t+/=%&")}

UNKNOWN_SELECTOR = {
    "error": "invalid_request",
    "error_description": "the request names an authorization server that is not configured",
}
UNKNOWN_CLIENT = {
    "error": "invalid_client",
    "error_description": "the client is not registered at any configured authorization server",
}
MALFORMED_FORM = {
    "error": "invalid_request",
    "error_description": "the body is not a valid application/x-www-form-urlencoded form",
}
BODY_TOO_LARGE = {"error": "invalid_request", "error_description": "the request body is too large"}


# --------------------------------------------------------------------------------- helpers


def as_origin(st: rig_stack.Stack, which: str) -> str:
    return st.as1_issuer if which == "as1" else f"http://127.0.0.1:{st.as2_port}"


def issuer_of(st: rig_stack.Stack, which: str) -> str:
    return st.as1_issuer if which == "as1" else st.as2_issuer


def served(st: rig_stack.Stack, which: str) -> dict[str, int]:
    r = requests.get(f"{as_origin(st, which)}/__rig/stats", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["requests"]


class Watch:
    """What each AS served (foreground paths) and which gateway counters moved since the last
    reset()."""

    def __init__(self, st: rig_stack.Stack):
        self.st = st
        self.reset()

    def reset(self) -> "Watch":
        self.before = {w: served(self.st, w) for w in WHICH}
        self.counters_before = self.st.stats("tollgate.")
        return self

    def served(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for w in WHICH:
            now, was = served(self.st, w), self.before[w]
            out[w] = {p: n - was.get(p, 0) for p, n in now.items()
                      if p not in BACKGROUND_PATHS and n != was.get(p, 0)}
        return out

    def gateway(self) -> dict[str, int]:
        """Moved gateway counters (tollgate.issuer.<n>.gateway.* and tollgate.gateway.*)."""
        now = self.st.stats("tollgate.")
        return {k: v - self.counters_before.get(k, 0) for k, v in now.items()
                if ".gateway." in f".{k}" and v != self.counters_before.get(k, 0)}

    def only(self, which: str, path: str, n: int = 1, endpoint: str | None = None) -> None:
        """Exactly `n` calls reached `path` at `which`, nothing else reached either AS, and
        the gateway counted them for that issuer's `endpoint`."""
        other = "as2" if which == "as1" else "as1"
        assert self.served() == {which: {path: n}, other: {}}
        if endpoint:
            assert self.gateway() == {f"tollgate.issuer.{which}.gateway.{endpoint}": n}

    def nothing(self, refused: int | None = None) -> None:
        """Neither AS was reached; `refused` gateway refusals were counted (if given)."""
        assert self.served() == {"as1": {}, "as2": {}}
        if refused is not None:
            assert self.gateway() == ({"tollgate.gateway.refused": refused} if refused else {})


def gw_post(st: rig_stack.Stack, endpoint: str, data=None, *, basic: tuple[str, str] | None = None,
            headers: dict | None = None, **kw) -> requests.Response:
    """POST to the gateway's /oauth2/<endpoint> (endpoint may start with an issuer segment)."""
    h = dict(headers or {})
    if basic:
        h["Authorization"] = tokens.basic_auth(*basic)
    return requests.post(f"{st.url}/oauth2/{endpoint}", data=data, headers=h, timeout=TIMEOUT, **kw)


def gw_token(st: rig_stack.Stack, data: dict, *, client: tuple[str, str], auth: str = "basic",
             endpoint: str = "token", headers: dict | None = None) -> dict:
    """A token request through the gateway, with client_secret_basic or client_secret_post."""
    data = dict(data)
    basic = None
    if auth == "basic":
        basic = client
    else:
        data.update(client_id=client[0], client_secret=client[1])
    r = gw_post(st, endpoint, data, basic=basic, headers=headers)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def gw_introspect(st: rig_stack.Stack, token: str, client: tuple[str, str], endpoint: str = "introspect") -> dict:
    r = gw_post(st, endpoint, {"token": token}, basic=client, headers={"Accept": "application/json"})
    assert r.status_code == 200, (r.status_code, r.text)
    return r.json()


def gw_userinfo(st: rig_stack.Stack, token: str) -> requests.Response:
    return requests.get(f"{st.url}/oauth2/userinfo", headers={"Authorization": f"Bearer {token}"},
                        timeout=TIMEOUT)


def api_ok(st: rig_stack.Stack, token: str, which: str) -> dict:
    """The token works on the protected API and was accepted as `which`'s; returns the
    identity headers the upstream saw."""
    r = st.call(API, token)
    assert r.status_code == 200, (r.status_code, r.headers, r.text)
    seen = upstream_saw(r)
    assert seen["x-tollgate-issuer"] == which
    return seen


def assert_refused(r: requests.Response) -> None:
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def assert_oauth_error(r: requests.Response, status: int, body: dict) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json() == body
    assert r.headers["cache-control"] == "no-store"
    if body["error"] == "invalid_client":
        assert r.headers["www-authenticate"] == 'Basic realm="oauth"'


def is_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def encode_query(pairs: list[tuple[str, str]]) -> str:
    """A query string with deliberately mixed (but valid) encodings: '+' for spaces in scope,
    %20 elsewhere, every reserved character escaped — the gateway must pass these bytes on as
    they are."""
    out = []
    for name, value in pairs:
        enc = quote_plus(value, safe="") if name == "scope" else quote(value, safe="")
        out.append(f"{name}={enc}")
    return "&".join(out)


# --------------------------------------------------------------- authorization code + PKCE


CODE_CLIENTS = {
    "as1": ("demo-client", "demo-secret"),
    "as2": ("dot-code", "dot-code-secret"),
}


def gw_authorize(st: rig_stack.Stack, which: str, client: str, scope: str, *,
                 selector: str | None = None, resource: str | None = None,
                 watch: Watch | None = None) -> tuple[str, dict]:
    """GET the gateway's authorize endpoint; checks the answer is a 302 to the AS's own
    authorization endpoint with the query exactly as sent (selector pair excepted), answered by
    Tollgate without contacting the AS. Returns (Location, the flow's secrets)."""
    verifier, challenge = tokens.pkce_pair()
    flow = {
        # state and nonce carry characters that need escaping, so byte-for-byte matters
        "state": f"{secrets.token_urlsafe(12)} /+%&=?é",
        "nonce": f"n-{secrets.token_urlsafe(12)}+/=",
        "verifier": verifier,
    }
    pairs = [
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", flow["state"]),
        ("nonce", flow["nonce"]),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]
    if "offline_access" in scope.split():
        pairs.append(("prompt", "consent"))  # oidc-provider drops offline_access without it
    if resource:
        pairs.append(("resource", resource))
    query = encode_query(pairs)
    sent = query
    path = "/oauth2/authorize"
    if selector == "path":
        path = f"/oauth2/{which}/authorize"
    elif selector == "param":  # Tollgate's own parameter, in the middle: it must come off
        sent = encode_query(pairs[:3]) + f"&as={which}&" + encode_query(pairs[3:])
    watch = watch or Watch(st)
    r = requests.get(f"{st.url}{path}?{sent}", allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 302, (r.status_code, r.text)
    location = r.headers["location"]
    assert location == f"{as_origin(st, which)}{AUTHORIZE[which]}?{query}"
    assert r.headers["cache-control"] == "no-store"
    # The gateway answered itself: the browser, not Tollgate, goes to the AS.
    watch.nothing()
    assert watch.gateway() == {f"tollgate.issuer.{which}.gateway.authorize": 1}
    return location, flow


def browser_to_redirect(st: rig_stack.Stack, which: str, location: str, user: str = "alice") -> str:
    """Plays the browser at the AS from the gateway's Location until it is sent to the
    redirect_uri; returns that URL. as1: oidc-provider devInteractions (login + consent pages);
    as2: DOT logged in through the rig's X-Rig-User header."""
    with requests.Session() as s:
        headers = {"X-Rig-User": user} if which == "as2" else {}
        r = s.get(location, headers=headers, allow_redirects=False, timeout=TIMEOUT)
        for _ in range(10):
            assert r.status_code in (302, 303), (r.status_code, r.text[:300])
            nxt = urljoin(r.url, r.headers["location"])
            if nxt.startswith(REDIRECT):
                return nxt
            if "/interaction/" in urlsplit(nxt).path:
                page = s.get(nxt, timeout=TIMEOUT)
                page.raise_for_status()
                prompt = page.text.split('name="prompt" value="', 1)[1].split('"', 1)[0]
                form = {"prompt": prompt}
                if prompt == "login":
                    form.update(login=user, password="any")
                r = s.post(nxt, data=form, allow_redirects=False, timeout=TIMEOUT)
            else:
                r = s.get(nxt, headers=headers, allow_redirects=False, timeout=TIMEOUT)
    pytest.fail("the authorization flow did not reach the redirect_uri in 10 steps")


def gw_code_flow(st: rig_stack.Stack, which: str, *, client: tuple[str, str] | None = None,
                 scope: str = "openid read", selector: str | None = None,
                 resource: str | None = None, auth: str = "basic") -> dict:
    """Authorization code + PKCE with the gateway's /authorize and /token only; checks each
    step reached `which` and nothing else. Returns the token response."""
    client = client or CODE_CLIENTS[which]
    location, flow = gw_authorize(st, which, client[0], scope, selector=selector, resource=resource)
    back = parse_qs(urlsplit(browser_to_redirect(st, which, location)).query)
    assert "error" not in back, back
    assert back["state"] == [flow["state"]], "state came back unchanged"
    if which == "as1":  # RFC 9207: the AS's own issuer, not the gateway
        assert back["iss"] == [st.as1_issuer]
    watch = Watch(st)
    data = {
        "grant_type": "authorization_code",
        "code": back["code"][0],
        "redirect_uri": REDIRECT,
        "code_verifier": flow["verifier"],
    }
    got = gw_token(st, data, client=client, auth=auth)
    watch.only(which, TOKEN[which], endpoint="token")
    if "id_token" in got:
        _, claims = tokens.decode_unverified(got["id_token"])
        assert claims["nonce"] == flow["nonce"], "nonce preserved through the gateway"
        assert claims["iss"] == issuer_of(st, which)
        assert claims["aud"] in (client[0], [client[0]])
    return got


@pytest.mark.parametrize(
    "which,selector",
    [("as1", None), ("as1", "path"), ("as2", None), ("as2", "param")],
    ids=["as1-by-client", "as1-by-path", "as2-by-client", "as2-by-as-param"],
)
def test_code_flow_with_pkce_through_the_gateway(stack, which, selector):
    """/authorize answers a 302 to the right AS with the query byte-for-byte (only Tollgate's
    `as` parameter removed); the code exchange at /oauth2/token reaches that AS only; PKCE,
    state and nonce hold; the access token works on the API as that user's."""
    got = gw_code_flow(stack, which, selector=selector)
    assert set(got) >= {"access_token", "id_token", "token_type"}
    assert got["token_type"].lower() == "bearer"
    _, id_claims = tokens.decode_unverified(got["id_token"])
    seen = api_ok(stack, got["access_token"], which)
    assert seen["x-tollgate-sub"] == id_claims["sub"]
    assert seen["x-tollgate-client-id"] == CODE_CLIENTS[which][0]
    if which == "as1":
        # no resource= at /authorize: an opaque token, introspected at AS-1
        assert not is_jwt(got["access_token"])
        assert id_claims["sub"] == "alice"
    else:
        assert is_jwt(got["access_token"])  # dot-code gets RFC 9068 JWTs


def test_code_flow_with_a_wrong_pkce_verifier_is_refused_by_the_as(stack):
    """The gateway does not get in the way of PKCE: a wrong code_verifier goes to the AS and
    the AS refuses it."""
    location, _ = gw_authorize(stack, "as2", "dot-code", "read")
    code = parse_qs(urlsplit(browser_to_redirect(stack, "as2", location)).query)["code"][0]
    watch = Watch(stack)
    r = gw_post(stack, "token", {"grant_type": "authorization_code", "code": code,
                                 "redirect_uri": REDIRECT, "code_verifier": "x" * 64},
                basic=CODE_CLIENTS["as2"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    watch.only("as2", TOKEN["as2"], endpoint="token")


# ------------------------------------------------------------------------- refresh tokens


@pytest.mark.parametrize("which", WHICH)
def test_refresh_token_grant_through_the_gateway(stack, which):
    """as1: offline_access (prompt=consent) with resource= gives JWT access tokens and a
    refresh token; as2: dot-opaque-code gives opaque dot_ tokens. The refresh goes through
    /oauth2/token (routed by client id: basic for as1, client_secret_post for as2) and the new
    access token works on the API."""
    if which == "as1":
        got = gw_code_flow(stack, "as1", scope="openid offline_access read",
                           resource="https://api.test/jwt")
        client, auth = CODE_CLIENTS["as1"], "basic"
        assert is_jwt(got["access_token"])
    else:
        client, auth = ("dot-opaque-code", "dot-opaque-code-secret"), "post"
        got = gw_code_flow(stack, "as2", client=client, scope="read", auth=auth)
        assert got["access_token"].startswith("dot_")
    assert "refresh_token" in got
    api_ok(stack, got["access_token"], which)

    watch = Watch(stack)
    fresh = gw_token(stack, {"grant_type": "refresh_token", "refresh_token": got["refresh_token"]},
                     client=client, auth=auth)
    watch.only(which, TOKEN[which], endpoint="token")
    assert fresh["access_token"] != got["access_token"]
    assert is_jwt(fresh["access_token"]) == is_jwt(got["access_token"])
    seen = api_ok(stack, fresh["access_token"], which)
    assert seen["x-tollgate-client-id"] == client[0]
    assert "read" in seen["x-tollgate-scope"].split()


# --------------------------------------------------------------------- client credentials


@pytest.mark.parametrize(
    "which,client,auth,resource",
    [
        ("as1", ("demo-client", "demo-secret"), "basic", "https://api.test/jwt"),
        ("as1", ("post-client", "post-secret"), "post", None),
        ("as2", ("dot-client", "dot-secret"), "basic", None),
        ("as2", ("dot-opaque", "dot-opaque-secret"), "post", None),
    ],
    ids=["as1-basic-jwt", "as1-post-opaque", "as2-basic-jwt", "as2-post-opaque"],
)
def test_client_credentials_routed_by_client_id(stack, which, client, auth, resource):
    """The client id (from Basic credentials or from the form) picks the AS: as1 by its
    configured client_ids, as2 by the dot- prefix."""
    data = {"grant_type": "client_credentials", "scope": "read"}
    if resource:
        data["resource"] = resource
    watch = Watch(stack)
    got = gw_token(stack, data, client=client, auth=auth)
    watch.only(which, TOKEN[which], endpoint="token")
    assert is_jwt(got["access_token"]) == (which == "as2" and client[0] == "dot-client" or bool(resource))
    seen = api_ok(stack, got["access_token"], which)
    assert seen["x-tollgate-client-id"] == client[0]


@pytest.mark.parametrize("which", WHICH)
@pytest.mark.parametrize("how", ["header", "form-param", "query-param"])
def test_client_credentials_for_an_unconfigured_client_needs_a_selector(stack, which, how):
    """rs:client@2 exists at both AS but is in neither issuer's gateway routing: without a
    selector it is an unknown client (401, no AS reached); with `x-oauth-as` or the `as`
    parameter it reaches the AS named, its RFC 6749 §2.3.1-encoded Basic header unchanged."""
    watch = Watch(stack)
    r = gw_post(stack, "token", {"grant_type": "client_credentials", "scope": "read"}, basic=RS["as2"])
    assert_oauth_error(r, 401, UNKNOWN_CLIENT)
    watch.nothing(refused=1)

    watch.reset()
    endpoint, headers, data = "token", {}, {"grant_type": "client_credentials", "scope": "read"}
    if how == "header":
        headers["x-oauth-as"] = which
    elif how == "form-param":
        data["as"] = which
    else:
        endpoint = f"token?as={which}"
    got = gw_token(stack, data, client=RS["as2"], endpoint=endpoint, headers=headers)
    watch.only(which, TOKEN[which], endpoint="token")
    seen = api_ok(stack, got["access_token"], which)
    assert seen["x-tollgate-client-id"] == "rs:client@2"


# ---------------------------------------------------------------- dynamic client registration


def register(st: rig_stack.Stack, which: str, name: str, endpoint: str | None = None) -> dict:
    """RFC 7591 registration of a client_credentials client through the gateway (JSON body)."""
    metadata = {
        "client_name": name,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    if which == "as1":
        metadata.update(response_types=[], scope="read write")
    r = requests.post(f"{st.url}/oauth2/{endpoint or which + '/register'}", data=json.dumps(metadata),
                      headers={"Content-Type": "application/json"}, timeout=TIMEOUT)
    assert r.status_code == 201, (r.status_code, r.text)
    return r.json()


@pytest.mark.parametrize("which", WHICH)
def test_registration_without_tagging_routes_by_the_as_prefix(stack, which):
    """POST /oauth2/<as>/register creates the client at that AS, with the AS's own id (never
    tagged, so its ID tokens' aud is that id). The AS mints ids with a prefix (as1-, dot-: the
    rig's idFactory / CLIENT_ID_GENERATOR_CLASS) that the issuer's client_id_prefixes claim, so
    /oauth2/token without any selector reaches that AS; the token works on the API."""
    watch = Watch(stack)
    reg = register(stack, which, "gateway-test")
    watch.only(which, REGISTER[which], endpoint="register")
    client = (reg["client_id"], reg["client_secret"])
    assert reg["client_id"].startswith("as1-" if which == "as1" else "dot-")
    assert not reg["client_id"].startswith(f"{which}.")  # no tagging here

    watch.reset()
    got = gw_token(stack, {"grant_type": "client_credentials", "scope": "read"}, client=client)
    watch.only(which, TOKEN[which], endpoint="token")
    seen = api_ok(stack, got["access_token"], which)
    assert seen["x-tollgate-client-id"] == reg["client_id"]


@pytest.mark.parametrize("which", WHICH)
def test_client_configuration_through_the_gateway(stack, which):
    """RFC 7592: GET /oauth2/<as>/register/<client_id> with the registration access token
    reads the client registered through the gateway."""
    reg = register(stack, which, "gateway-config")
    watch = Watch(stack)
    r = requests.get(f"{stack.url}/oauth2/{which}/register/{reg['client_id']}", timeout=TIMEOUT,
                     headers={"Authorization": f"Bearer {reg['registration_access_token']}"})
    assert watch.gateway() == {f"tollgate.issuer.{which}.gateway.client_configuration": 1}
    assert r.status_code == 200, (r.status_code, r.text[:200])
    assert r.json()["client_id"] == reg["client_id"]
    # Management stays behind the gateway: the URL the AS returned points at the gateway.
    assert reg["registration_client_uri"].startswith(f"{stack.url}/oauth2/{which}/register/")


@pytest.fixture(scope="module")
def tagging_stack(wasm, tmp_path_factory):
    """A private deployment with the gateway's routing tags on (as new_stack(tagging=True),
    shared by the tagging tests of this module)."""
    st = rig_stack.Stack(tmp_path_factory.mktemp("tagging"), tagging=True)
    st.start()
    yield st
    st.stop()


@pytest.mark.parametrize("which", WHICH)
def test_registration_with_tagging_routes_without_any_selector(tagging_stack, which):
    """With tagging on, registration still answers the AS's own client id (the `aud` of that
    client's ID tokens; the rig's AS mint it with a prefix the configuration routes by); that
    client gets tokens at /oauth2/token with no selector (basic and post), its opaque tokens
    come back as `<as>.<token>`, work on the API (introspected at the right AS with the tag
    removed), and introspection and revocation through the gateway follow the tag."""
    st = tagging_stack
    watch = Watch(st)
    # as2: a client_name starting "opaque" makes the rig's DOT mint opaque dot_ tokens
    reg = register(st, which, "opaque-tagged")
    watch.only(which, REGISTER[which], endpoint="register")
    assert reg["client_id"].startswith({"as1": "as1-", "as2": "dot-"}[which]), "the AS's own id"
    client = (reg["client_id"], reg["client_secret"])
    prefix = f"{which}."

    for auth in ("basic", "post"):
        watch.reset()
        got = gw_token(st, {"grant_type": "client_credentials", "scope": "read"}, client=client, auth=auth)
        watch.only(which, TOKEN[which], endpoint="token")
        token = got["access_token"]
        assert token.startswith(prefix), "opaque tokens are tagged"
        bare = token[len(prefix):]
        if which == "as1":
            assert len(bare) == 43 and not is_jwt(bare)
        else:
            assert bare.startswith("dot_") and len(bare) == 34

    # The tagged token on the API: introspected once, at the right AS, as the AS minted it.
    watch.reset()
    seen = api_ok(st, token, which)
    assert seen["x-tollgate-client-id"] == reg["client_id"]
    assert watch.served() == {which: {INTROSPECT[which]: 1}, ("as2" if which == "as1" else "as1"): {}}

    # Introspection through the gateway: rs:client@2 routes nowhere itself, the tag decides.
    watch.reset()
    answer = gw_introspect(st, token, RS["as2"])
    assert answer["active"] is True and answer["client_id"] == reg["client_id"]
    watch.only(which, INTROSPECT[which], endpoint="introspect")

    # Revocation through the gateway, by the client itself (its id's prefix routes it).
    watch.reset()
    r = gw_post(st, "revoke", {"token": token}, basic=client)
    assert r.status_code == 200, r.text
    watch.only(which, REVOKE[which], endpoint="revoke")
    assert_refused(st.call(API, token))
    assert gw_introspect(st, token, RS["as2"]) == {"active": False}


def test_tagged_refresh_token_through_the_gateway(tagging_stack):
    """With tagging on, the refresh token the gateway handed out is `as1.<token>`; refreshing
    with it at /oauth2/token must reach as1 with the tag removed. The access token that came
    with the ID token is not tagged: the ID token's at_hash binds it (OIDC Core §3.1.3.8)."""
    st = tagging_stack
    got = gw_code_flow(st, "as1", scope="openid offline_access read")
    assert got["refresh_token"].startswith("as1.")
    assert not got["access_token"].startswith("as1.")
    assert is_jwt(got["id_token"])  # JWTs are never tagged
    api_ok(st, got["access_token"], "as1")
    watch = Watch(st)
    r = gw_post(st, "token", {"grant_type": "refresh_token", "refresh_token": got["refresh_token"]},
                basic=CODE_CLIENTS["as1"])
    assert r.status_code == 200, (r.status_code, r.text)
    watch.only("as1", TOKEN["as1"], endpoint="token")
    fresh = r.json()
    # oidc-provider answers a refresh of an openid grant with a new ID token too.
    assert fresh["access_token"].startswith("as1.") == ("id_token" not in fresh)
    api_ok(st, fresh["access_token"], "as1")


# ------------------------------------------------------------- introspection and revocation


def cc_token(st: rig_stack.Stack, which: str, jwt: bool) -> tuple[str, tuple[str, str]]:
    """A client_credentials token obtained through the gateway, and its client."""
    if which == "as1":
        client = ("demo-client", "demo-secret")
        data = {"grant_type": "client_credentials", "scope": "read"}
        if jwt:
            data["resource"] = "https://api.test/jwt"
    else:
        client = ("dot-client", "dot-secret") if jwt else ("dot-opaque", "dot-opaque-secret")
        data = {"grant_type": "client_credentials", "scope": "read"}
    token = gw_token(st, data, client=client)["access_token"]
    assert is_jwt(token) == jwt
    return token, client


@pytest.mark.parametrize("which", WHICH)
def test_introspection_and_revocation_through_the_gateway(stack, which):
    """as1's resource server rs-client routes by its client id; as2's rs:client@2 (whose Basic
    header needs RFC 6749 §2.3.1 encoding, which must reach DOT unchanged) routes by the token
    (dot_ prefix). The token's own client revokes it; the AS then says inactive."""
    token, client = cc_token(stack, which, jwt=False)
    watch = Watch(stack)
    answer = gw_introspect(stack, token, RS[which])
    assert answer["active"] is True and answer["client_id"] == client[0]
    assert answer["scope"] == "read"
    watch.only(which, INTROSPECT[which], endpoint="introspect")

    watch.reset()
    r = gw_post(stack, "revoke", {"token": token, "token_type_hint": "access_token"}, basic=client)
    assert r.status_code == 200, r.text
    watch.only(which, REVOKE[which], endpoint="revoke")
    assert gw_introspect(stack, token, RS[which]) == {"active": False}


@pytest.mark.parametrize("which", WHICH)
def test_an_opaque_token_revoked_through_the_gateway_is_refused_by_the_next_call(stack, which):
    """The token works and its introspection answer is cached (up to 300 s). Revocation through
    the gateway takes it out of Tollgate's cache, so the next API call asks the AS again, which
    now says inactive: 401 at once, not after the cached answer ages out."""
    token, client = cc_token(stack, which, jwt=False)
    api_ok(stack, token, which)
    api_ok(stack, token, which)  # now from the cache

    watch = Watch(stack)
    r = gw_post(stack, "revoke", {"token": token}, basic=client)
    assert r.status_code == 200, r.text
    watch.only(which, REVOKE[which], endpoint="revoke")

    watch.reset()
    assert_refused(stack.call(API, token))
    assert watch.served() == {which: {INTROSPECT[which]: 1}, ("as2" if which == "as1" else "as1"): {}}


def test_a_jwt_revoked_through_the_gateway_is_refused_when_its_issuer_introspects_jwts(new_stack):
    """DOT stores (and can revoke) its JWTs. With introspect_jwts on for as2, revocation through
    the gateway evicts the cached verification and the next call's introspection says inactive."""
    st = new_stack(issuer_overrides={"as2": {"introspection": {"introspect_jwts": True}}})
    st.start()
    token, client = cc_token(st, "as2", jwt=True)
    api_ok(st, token, "as2")
    api_ok(st, token, "as2")
    r = gw_post(st, "revoke", {"token": token}, basic=client)
    assert r.status_code == 200, r.text
    assert_refused(st.call(API, token))


def test_a_jwt_the_as_cannot_revoke_keeps_working(stack):
    """oidc-provider does not revoke structured (JWT) access tokens: 400 unsupported_token_type.
    Nothing was revoked, so the token keeps working (revocation before exp needs an AS that
    revokes JWTs and introspect_jwts)."""
    token, client = cc_token(stack, "as1", jwt=True)
    api_ok(stack, token, "as1")
    r = gw_post(stack, "revoke", {"token": token}, basic=client)
    assert r.status_code == 400 and r.json()["error"] == "unsupported_token_type", r.text
    api_ok(stack, token, "as1")


@pytest.mark.parametrize("which", WHICH)
def test_a_revocation_the_as_refuses_does_not_block_the_token(stack, which):
    """RFC 7009 §2.1: the AS authenticates the client before revoking. A revocation call with
    wrong client credentials is refused by the AS (401 invalid_client) and must not make the
    API refuse the token (anyone who saw a token could otherwise cut its owner off)."""
    token, client = cc_token(stack, which, jwt=False)
    api_ok(stack, token, which)
    r = gw_post(stack, "revoke", {"token": token}, basic=(client[0], "wrong-secret"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
    api_ok(stack, token, which)


# ------------------------------------------------------------------------------- userinfo


@pytest.mark.parametrize("which", WHICH)
def test_userinfo_through_the_gateway(stack, which):
    """as1: the opaque access token of a code flow with scope openid (routed by the opaque
    token rule); as2: dot-code's JWT access token with scope openid (routed by its iss)."""
    got = gw_code_flow(stack, which, scope="openid read")
    _, id_claims = tokens.decode_unverified(got["id_token"])
    watch = Watch(stack)
    r = gw_userinfo(stack, got["access_token"])
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["sub"] == id_claims["sub"]
    watch.only(which, USERINFO[which], endpoint="userinfo")


def test_userinfo_with_tagging_and_an_access_token_bound_by_an_id_token(tagging_stack):
    """With tagging on, the code flow's opaque access token comes with an ID token whose
    at_hash binds it, so the gateway leaves it untagged; userinfo through the gateway routes it
    by the issuers' opaque-token rules and sends the AS the token it minted. (A tagged token at
    userinfo is routed by its tag and sent untagged: plan tests.)"""
    st = tagging_stack
    got = gw_code_flow(st, "as1", scope="openid read")
    assert not got["access_token"].startswith("as1.") and "id_token" in got
    watch = Watch(st)
    r = gw_userinfo(st, got["access_token"])
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["sub"] == "alice"
    watch.only("as1", USERINFO["as1"], endpoint="userinfo")


# --------------------------------------------------------------------------------- errors


def test_unknown_selectors_are_invalid_request_and_reach_no_as(stack):
    watch = Watch(stack)
    cc = {"grant_type": "client_credentials", "scope": "read"}
    demo = ("demo-client", "demo-secret")
    cases = [
        gw_post(stack, "as9/token", cc, basic=demo),
        gw_post(stack, "as9/introspect", {"token": "x"}, basic=demo),
        gw_post(stack, "token?as=as9", cc, basic=demo),
        gw_post(stack, "token", {**cc, "as": "as9"}, basic=demo),
        gw_post(stack, "token", cc, basic=demo, headers={"x-oauth-as": "as9"}),
        requests.get(f"{stack.url}/oauth2/authorize?client_id=demo-client&as=as9", allow_redirects=False,
                     timeout=TIMEOUT),
        requests.get(f"{stack.url}/oauth2/as9/authorize?client_id=demo-client", allow_redirects=False,
                     timeout=TIMEOUT),
        requests.get(f"{stack.url}/oauth2/as9/.well-known/openid-configuration", timeout=TIMEOUT),
    ]
    for r in cases:
        assert_oauth_error(r, 400, UNKNOWN_SELECTOR)
    watch.nothing(refused=len(cases))


def test_unknown_clients_are_invalid_client_and_reach_no_as(stack):
    watch = Watch(stack)
    cc = {"grant_type": "client_credentials", "scope": "read"}
    cases = [
        gw_post(stack, "token", cc, basic=("nobody", "x")),
        gw_post(stack, "token", {**cc, "client_id": "nobody", "client_secret": "x"}),
        requests.get(f"{stack.url}/oauth2/authorize?client_id=nobody&response_type=code",
                     allow_redirects=False, timeout=TIMEOUT),
        # a token no rule recognises does not route an unknown client either
        gw_post(stack, "introspect", {"token": "not-a-known-token"}, basic=("nobody", "x")),
    ]
    for r in cases:
        assert_oauth_error(r, 401, UNKNOWN_CLIENT)
    watch.nothing(refused=len(cases))


def test_an_oversized_body_is_413_and_reaches_no_as(stack):
    watch = Watch(stack)
    body = "grant_type=client_credentials&client_id=demo-client&pad=" + "x" * 65536
    assert len(body) > 65536
    r = requests.post(f"{stack.url}/oauth2/token", data=body, timeout=TIMEOUT,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_oauth_error(r, 413, BODY_TOO_LARGE)
    watch.nothing(refused=1)
    watch.reset()
    # exactly at the limit the call goes on (what the AS makes of it is the AS's business)
    prefix = "grant_type=client_credentials&scope=read&pad="
    at_limit = prefix + "x" * (65536 - len(prefix))
    assert len(at_limit) == 65536
    r = requests.post(f"{stack.url}/oauth2/token", data=at_limit, timeout=TIMEOUT,
                      headers={"Content-Type": "application/x-www-form-urlencoded",
                               "Authorization": tokens.basic_auth("demo-client", "demo-secret")})
    assert r.status_code != 413 or r.json() != BODY_TOO_LARGE, r.text[:300]
    watch.only("as1", TOKEN["as1"], endpoint="token")


@pytest.mark.parametrize(
    "body",
    [
        "grant_type=client_credentials&scope=read&scope=write",  # RFC 6749 §3.2: no repeats
        "grant_type=client_credentials&client_id=demo-client&client_id=demo-client",
        "grant_type=client_credentials&scope=%FF",  # not UTF-8 once decoded
        "grant_type=client_credentials&scope=%E2%82",  # truncated UTF-8 sequence
    ],
    ids=["repeated-scope", "repeated-client-id", "bad-utf8", "truncated-utf8"],
)
def test_a_malformed_form_is_invalid_request_and_reaches_no_as(stack, body):
    watch = Watch(stack)
    r = requests.post(f"{stack.url}/oauth2/token", data=body, timeout=TIMEOUT,
                      headers={"Content-Type": "application/x-www-form-urlencoded",
                               "Authorization": tokens.basic_auth("demo-client", "demo-secret")})
    assert_oauth_error(r, 400, MALFORMED_FORM)
    watch.nothing(refused=1)


# ------------------------------------------------------------------------------- metadata


ENDPOINT_NAMES = {
    "authorization_endpoint": "authorize",
    "token_endpoint": "token",
    "introspection_endpoint": "introspect",
    "revocation_endpoint": "revoke",
    "userinfo_endpoint": "userinfo",
    "registration_endpoint": "register",
    "pushed_authorization_request_endpoint": "par",
    "device_authorization_endpoint": "device_authorization",
    "backchannel_authentication_endpoint": "backchannel_authentication",
    "end_session_endpoint": "end_session",
}


@pytest.mark.parametrize(
    "which,document,own",
    [
        ("as1", "openid-configuration", "/.well-known/openid-configuration"),
        ("as2", "oauth-authorization-server", "/.well-known/oauth-authorization-server/o"),
    ],
)
def test_metadata_lists_the_gateway_endpoints_and_the_as_issuer_and_keys(stack, which, document, own):
    """The gateway's document is the AS's own of the same kind with each endpoint it lists
    pointing at /oauth2/<as>/...; issuer and jwks_uri stay the AS's, and so does everything else.
    It is served from what Tollgate already fetched (no AS call), and a client that discovers the
    token endpoint from it gets a working token."""
    theirs = requests.get(as_origin(stack, which) + own, timeout=TIMEOUT).json()
    watch = Watch(stack)
    r = requests.get(f"{stack.url}/oauth2/{which}/.well-known/{document}", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    watch.nothing()
    assert watch.gateway() == {f"tollgate.issuer.{which}.gateway.metadata": 1}

    assert doc["issuer"] == issuer_of(stack, which) == theirs["issuer"]
    assert doc["jwks_uri"] == theirs["jwks_uri"]
    assert doc["jwks_uri"].startswith(as_origin(stack, which))
    listed = [name for name in theirs if name.endswith("_endpoint")]
    assert "token_endpoint" in listed and "introspection_endpoint" in listed
    assert sorted(name for name in doc if name.endswith("_endpoint")) == sorted(listed)
    for name in listed:
        assert doc[name] == f"{stack.url}/oauth2/{which}/{ENDPOINT_NAMES[name]}", name
    assert {k: v for k, v in doc.items() if k not in ENDPOINT_NAMES} == \
        {k: v for k, v in theirs.items() if k not in ENDPOINT_NAMES}

    # A client that only knows the document: client_credentials at its token_endpoint.
    client = ("post-client", "post-secret") if which == "as1" else ("dot-client", "dot-secret")
    watch.reset()
    r = requests.post(doc["token_endpoint"], data={"grant_type": "client_credentials", "scope": "read"},
                      headers={"Authorization": tokens.basic_auth(*client)}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    watch.only(which, TOKEN[which], endpoint="token")
    api_ok(stack, r.json()["access_token"], which)


@pytest.mark.parametrize("headers", [
    {"Host": "evil.example"},
    {"Host": "evil.example:80"},
    {"Host": "127.0.0.1"},  # the right host on another port
])
@pytest.mark.parametrize("path", ["/oauth2/as1/.well-known/openid-configuration",
                                  "/oauth2/as2/.well-known/oauth-authorization-server"])
def test_metadata_is_not_published_for_a_host_the_gateway_is_not_at(stack, headers, path):
    """Documents are cacheable: one built from the request's Host would poison every cache
    between client and gateway with `http://evil.example/oauth2/as1/token`. A host that is not
    one of the configured public_origins gets no document, and no AS is asked."""
    watch = Watch(stack)
    r = requests.get(stack.url + path, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 404, r.text
    assert r.json()["error"] == "invalid_request"
    assert "evil" not in r.text
    watch.nothing(refused=1)


@pytest.mark.parametrize("headers", [
    {"X-Forwarded-Proto": "https"},
    {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https", "Forwarded": "host=evil.example;proto=https"},
    {"X-Forwarded-Port": "8443", "X-Forwarded-Prefix": "/evil"},
])
def test_forwarded_headers_never_shape_the_published_urls(stack, headers):
    """The scheme and host of every URL in a gateway document come from public_origins: the
    X-Forwarded-* family a client sends is never read."""
    r = requests.get(f"{stack.url}/oauth2/as1/.well-known/openid-configuration", headers=headers,
                     timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    doc = r.json()
    for name, endpoint in ENDPOINT_NAMES.items():
        assert doc[name] == f"{stack.url}/oauth2/as1/{endpoint}", name
    assert "evil" not in r.text and "https://127.0.0.1" not in r.text


def test_registration_answer_names_the_configured_origin_whatever_the_host(stack):
    """registration_client_uri is rewritten to the gateway's: with a Host that is none of its
    public origins, the first configured origin, never the Host."""
    metadata = {"client_name": "host-spoof", "grant_types": ["client_credentials"], "redirect_uris": [],
                "token_endpoint_auth_method": "client_secret_basic"}
    r = requests.post(f"{stack.url}/oauth2/as2/register", data=json.dumps(metadata), timeout=TIMEOUT,
                      headers={"Content-Type": "application/json", "Host": "evil.example",
                               "X-Forwarded-Proto": "https"})
    assert r.status_code == 201, r.text
    assert r.json()["registration_client_uri"].startswith(f"{stack.url}/oauth2/as2/register/")
    assert "evil" not in r.text


# ------------------------------------------------------------------------- default issuer


def test_top_level_metadata_and_unrouted_calls_go_to_the_default_issuer(new_stack):
    st = new_stack()
    cfg = st.plugin_config()
    cfg["gateway"]["default_issuer"] = "as2"
    st.plugin_config = lambda: cfg
    st.start()
    r = requests.get(f"{st.url}/oauth2/.well-known/oauth-authorization-server", timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["issuer"] == st.as2_issuer
    assert doc["token_endpoint"] == f"{st.url}/oauth2/token"
    # A client the configuration does not know goes to the default issuer (which refuses it).
    watch = Watch(st)
    r = gw_post(st, "token", {"grant_type": "client_credentials"}, basic=("someone", "x"))
    assert r.status_code in (401, 403), r.text
    assert watch.gateway() == {"tollgate.issuer.as2.gateway.token": 1}


def test_top_level_metadata_without_a_default_issuer_is_not_found(stack):
    r = requests.get(f"{stack.url}/oauth2/.well-known/openid-configuration", timeout=TIMEOUT)
    assert r.status_code == 404
    assert r.json()["error"] == "invalid_request"


def test_a_client_cannot_pick_an_authorization_server_route_itself(stack):
    """x-tollgate-as is Tollgate's: a copy a client sends is removed, so an API call carrying
    it still reaches the API upstream (not the AS cluster the Envoy route would pick)."""
    token = stack.as2_token()
    watch = Watch(stack)
    r = stack.call("/api/orders", token, headers={"x-tollgate-as": "as1"})
    assert r.status_code == 200, r.text
    assert "x-tollgate-as" not in rig_stack.upstream_saw(r)
    watch.nothing()
