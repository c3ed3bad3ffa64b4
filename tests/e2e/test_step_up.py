"""RFC 9470 step-up (issue 16) end to end: the real tollgate.wasm in Envoy, oidc-provider (AS-1)
minting access tokens that carry the `acr` a user logged in with and the login's `auth_time`
(JWT claims, and members of the introspection answer of an opaque token).

The rig's AS-1 (tests/rig/as_oidc/server.mjs): its login page has an `acr` select,
urn:tollgate:loa:1 (the default: a plain login) or urn:tollgate:loa:2; extraTokenClaims puts
the session's acr and auth_time into access tokens. Tokens here come from the authorization
code flow of `demo-client` (tokens.oidc_id_token): with `resource=` an RFC 9068 JWT, without it
an opaque token Tollgate introspects at AS-1.

Routes: /api/high needs acr urn:tollgate:loa:2; /api/fresh needs an authentication at most
MAX_AGE seconds old; /api/strict needs scope admin and loa:2 (scope errors come first). Every
refusal is checked for its exact challenge (RFC 9470 §3) and, for POSTs with a body in three
shapes, that the upstream never saw the request (its own log).
"""

from __future__ import annotations

import time

import pytest
import requests

import stack as rig_stack
import tokens
from witness import BODY_SHAPES, Upstream, assert_post_arrived, assert_post_refused

LOA1 = "urn:tollgate:loa:1"
LOA2 = "urn:tollgate:loa:2"
MAX_AGE = 4
KINDS = ["jwt", "opaque"]
REDIRECT = "http://127.0.0.1/cb"

ROUTES = [
    {"name": "high", "match": {"prefix": "/api/high"},
     "require": {"issuers": ["as1"], "acr_values": [LOA2]}},
    {"name": "fresh", "match": {"prefix": "/api/fresh"},
     "require": {"issuers": ["as1"], "max_age_s": MAX_AGE}},
    {"name": "strict", "match": {"prefix": "/api/strict"},
     "require": {"issuers": ["as1"], "scopes": ["admin"], "acr_values": [LOA2, "urn:tollgate:loa:3"]}},
    {"name": "api", "match": {"prefix": "/api"}, "require": {}},
]

# crates/tollgate-core/src/policy/stepup.rs
ACR_NOT_ACCEPTED = "a stronger authentication of the user is required"
AUTH_TOO_OLD = "a more recent authentication of the user is required"


def challenge(description: str, params: str) -> str:
    return (f'Bearer realm="tollgate", error="insufficient_user_authentication", '
            f'error_description="{description}", {params}')


@pytest.fixture(scope="module")
def st(wasm, tmp_path_factory):
    s = rig_stack.Stack(tmp_path_factory.mktemp("step-up"), config_overrides={"routes": ROUTES})
    s.start()
    yield s
    s.stop()


def login_token(st, kind: str, acr: str | None = None, scope: str = "openid read") -> str:
    """An access token of demo-client from a login at AS-1 (acr: the login page's choice)."""
    resource = "https://api.test/jwt" if kind == "jwt" else None
    return tokens.oidc_id_token(st.as1_issuer, "demo-client", "demo-secret", REDIRECT,
                                scope=scope, resource=resource, acr=acr)["access_token"]


@pytest.fixture(scope="module")
def low(st) -> dict[str, str]:
    return {kind: login_token(st, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def high(st) -> dict[str, str]:
    return {kind: login_token(st, kind, acr=LOA2) for kind in KINDS}


def get(st, path: str, token: str) -> requests.Response:
    return requests.get(st.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=15)


def assert_step_up(r: requests.Response, description: str, params: str) -> None:
    """401 with the RFC 9470 challenge first (AS-1 takes DPoP too: its bare challenge follows)."""
    assert r.status_code == 401, (r.status_code, r.text)
    values = r.raw.headers.getlist("www-authenticate")
    assert values[0] == challenge(description, params), values
    assert [v.split(" ")[0] for v in values] == ["Bearer", "DPoP"], values
    assert "error=" not in values[1], values
    assert r.json() == {"error": "insufficient_user_authentication", "error_description": description}


def test_the_as_puts_acr_and_auth_time_into_access_tokens(st, low, high):
    """Not Tollgate: the rig's AS-1 as the tests below rely on it."""
    for tokens_by_kind, acr in ((low, LOA1), (high, LOA2)):
        jwt = tokens.decode_unverified(tokens_by_kind["jwt"])[1]
        assert jwt["acr"] == acr and abs(jwt["auth_time"] - time.time()) < 600, jwt
        answer = tokens.introspect(f"{st.as1_issuer}/token/introspection", tokens_by_kind["opaque"],
                                   "rs-client", "rs-secret")
        assert answer["active"] and answer["acr"] == acr and "auth_time" in answer, answer
    machine = tokens.decode_unverified(st.as1_token())[1]
    assert "acr" not in machine and "auth_time" not in machine, "client_credentials: no user"


@pytest.mark.parametrize("kind", KINDS)
def test_a_plain_login_gets_the_step_up_challenge(st, low, kind):
    seen = Upstream(st)
    assert_step_up(get(st, "/api/high/orders", low[kind]), ACR_NOT_ACCEPTED, f'acr_values="{LOA2}"')
    seen.saw_nothing()
    # The same token is fine where nothing more is asked.
    assert get(st, "/api/orders", low[kind]).status_code == 200


@pytest.mark.parametrize("kind", KINDS)
def test_a_login_with_the_required_acr_passes(st, high, kind):
    seen = Upstream(st)
    r = get(st, "/api/high/orders", high[kind])
    assert r.status_code == 200, r.text
    assert seen.arrivals() == ["> GET /api/high/orders"]


def test_a_machine_token_has_no_acr_and_is_refused(st):
    assert_step_up(get(st, "/api/high/x", st.as1_token()), ACR_NOT_ACCEPTED, f'acr_values="{LOA2}"')


@pytest.mark.parametrize("kind", KINDS)
def test_scope_errors_come_before_step_up(st, low, kind):
    """/api/strict: a low-acr token without scope admin gets insufficient_scope (a new login
    would not help); with admin it gets the step-up challenge listing both acr values."""
    r = get(st, "/api/strict/x", low[kind])
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope", r.text
    admin = login_token(st, kind, scope="openid read admin")
    if kind == "jwt":
        assert "admin" in tokens.decode_unverified(admin)[1]["scope"].split()
    assert_step_up(get(st, "/api/strict/x", admin), ACR_NOT_ACCEPTED,
                   f'acr_values="{LOA2} urn:tollgate:loa:3"')


def test_an_old_authentication_fails_max_age(st):
    """Tokens from a new login pass /api/fresh at once; MAX_AGE + 1 s after the login both are
    refused with max_age (the JWT and the introspected token, both from Tollgate's cache by
    then: the age is checked on every request)."""
    t0 = time.time()
    fresh = {kind: login_token(st, kind, acr=LOA2) for kind in KINDS}
    for kind in KINDS:
        assert get(st, "/api/fresh/x", fresh[kind]).status_code == 200, kind
    elapsed = time.time() - t0
    assert elapsed < MAX_AGE, "the logins took too long for this check"
    time.sleep(MAX_AGE + 1.5 - elapsed)
    for kind in KINDS:
        seen = Upstream(st)
        assert_step_up(get(st, "/api/fresh/x", fresh[kind]), AUTH_TOO_OLD, f'max_age="{MAX_AGE}"')
        seen.saw_nothing()
        for shape in BODY_SHAPES:
            r = assert_post_refused(st, shape, "/api/fresh/orders", fresh[kind], 401)
            assert r.headers["www-authenticate"].startswith(challenge(AUTH_TOO_OLD, f'max_age="{MAX_AGE}"')), r


@pytest.mark.parametrize("shape", BODY_SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_posts_with_a_body(st, low, high, kind, shape):
    """A JSON POST in each shape: the low-acr token is refused before anything reaches the
    upstream; the loa:2 token's POST arrives once, whole."""
    r = assert_post_refused(st, shape, "/api/high/orders", low[kind], 401)
    assert r.headers["www-authenticate"].startswith(challenge(ACR_NOT_ACCEPTED, f'acr_values="{LOA2}"')), r
    assert r.json()["error"] == "insufficient_user_authentication"
    assert_post_arrived(st, shape, "/api/high/orders", high[kind])
