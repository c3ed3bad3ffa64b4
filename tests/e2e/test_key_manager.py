"""Key-manager checks (issue 16) end to end, for both authorization servers and both kinds of
token: the real tollgate.wasm in Envoy; AS-1 oidc-provider (RFC 9068 JWTs, opaque tokens
introspected) and AS-2 django-oauth-toolkit (JWTs, opaque `dot_` tokens introspected).

- Subscription validation (WSO2 style): /api/sub-a allows clients demo-client and dot-client,
  /api/sub-b post-client and dot-opaque; every token below is allowed on one and refused on
  the other (403 access_denied).
- Client-id header binding (IBM API Connect `X-IBM-Client-Id` style): /api/bound needs
  `x-ibm-client-id` once, equal to the token's client_id. Missing or repeated: 400
  invalid_request; another client: 403 access_denied. A repeated header is sent as two header
  lines (HTTP/1.1) and two header fields (HTTP/2), raw (tests/rig/wire.py).

Every refusal is also sent as a POST with a body in three shapes (HTTP/1.1 at once and chunked,
HTTP/2 with trailers) and the upstream's own log shows it never arrived; allowed POSTs arrive
once, whole.
"""

from __future__ import annotations

import pytest

import stack as rig_stack
from witness import BODY_SHAPES, Upstream, assert_post_arrived, assert_post_refused, send

HEADER = "x-ibm-client-id"
ROUTES = [
    {"name": "sub-a", "match": {"prefix": "/api/sub-a"}, "require": {"clients": ["demo-client", "dot-client"]}},
    {"name": "sub-b", "match": {"prefix": "/api/sub-b"}, "require": {"clients": ["post-client", "dot-opaque"]}},
    {"name": "bound", "match": {"prefix": "/api/bound"}, "require": {"client_id_header": HEADER}},
    {"name": "api", "match": {"prefix": "/api"}, "require": {}},
]

# crates/tollgate-core/src/outcome.rs and policy/client.rs
NOT_SUBSCRIBED = "the client is not allowed to call this resource"
NOT_THE_CLIENT = "the token was not issued to the client the request names"
NO_CLIENT_HEADER = "the request lacks its client id header"
CLIENT_HEADER_TWICE = "the request repeats its client id header"


@pytest.fixture(scope="module")
def st(wasm, tmp_path_factory):
    s = rig_stack.Stack(tmp_path_factory.mktemp("key-manager"), config_overrides={"routes": ROUTES})
    s.start()
    yield s
    s.stop()


# (name, client, the route that allows it, the one that refuses it)
TOKENS = [
    ("as1-jwt-demo", "demo-client", "/api/sub-a", "/api/sub-b"),
    ("as1-opaque-demo", "demo-client", "/api/sub-a", "/api/sub-b"),
    ("as1-jwt-post", "post-client", "/api/sub-b", "/api/sub-a"),
    ("as1-opaque-post", "post-client", "/api/sub-b", "/api/sub-a"),
    ("as2-jwt", "dot-client", "/api/sub-a", "/api/sub-b"),
    ("as2-opaque", "dot-opaque", "/api/sub-b", "/api/sub-a"),
]
NAMES = [t[0] for t in TOKENS]
CLIENT = {t[0]: t[1] for t in TOKENS}
ROUTE_OK = {t[0]: t[2] for t in TOKENS}
ROUTE_NO = {t[0]: t[3] for t in TOKENS}


@pytest.fixture(scope="module")
def tok(st) -> dict[str, str]:
    post = ("post-client", "post-secret")
    return {
        "as1-jwt-demo": st.as1_token(),
        "as1-opaque-demo": st.as1_opaque_token(),
        "as1-jwt-post": st.as1_token(client=post),
        "as1-opaque-post": st.as1_opaque_token(client=post),
        "as2-jwt": st.as2_token(),
        "as2-opaque": st.as2_opaque_token(),
    }


def get(st, path: str, token: str, headers: list[tuple[str, str]] = (), shape: str = "get"):
    return send(st, shape, "GET", path, token, headers)


def assert_error(r, status: int, error: str, description: str) -> None:
    assert r.status == status, r
    assert r.json() == {"error": error, "error_description": description}, r
    if status == 403:
        assert "www-authenticate" not in r.headers, r
    else:
        assert r.headers["www-authenticate"].startswith(
            f'Bearer realm="tollgate", error="invalid_request", error_description="{description}"'), r


def test_the_tokens_name_their_clients(st, tok):
    """Not Tollgate: what the rig's servers put in client_id (JWTs; the opaque ones' answers
    are what the routes below see)."""
    import tokens
    for name in ("as1-jwt-demo", "as1-jwt-post", "as2-jwt"):
        assert tokens.decode_unverified(tok[name])[1]["client_id"] == CLIENT[name]


@pytest.mark.parametrize("name", NAMES)
def test_subscription_allows_and_refuses(st, tok, name):
    seen = Upstream(st)
    r = get(st, ROUTE_OK[name] + "/x", tok[name])
    assert r.status == 200, r
    assert seen.arrivals() == [f"> GET {ROUTE_OK[name]}/x"]
    seen = Upstream(st)
    assert_error(get(st, ROUTE_NO[name] + "/x", tok[name]), 403, "access_denied", NOT_SUBSCRIBED)
    seen.saw_nothing()


# (case, header lines, status, error, description); `None` in a value: the token's own client
HEADER_CASES = [
    ("missing", [], 400, "invalid_request", NO_CLIENT_HEADER),
    ("repeated", [(HEADER, None), (HEADER, None)], 400, "invalid_request", CLIENT_HEADER_TWICE),
    ("repeated-other", [(HEADER, None), ("X-IBM-Client-Id", "someone-else")], 400, "invalid_request",
     CLIENT_HEADER_TWICE),
    ("different", [(HEADER, "someone-else")], 403, "access_denied", NOT_THE_CLIENT),
    ("other-case", [(HEADER, "DEMO-CLIENT")], 403, "access_denied", NOT_THE_CLIENT),
]


def lines(case_lines, client: str) -> list[tuple[str, str]]:
    return [(n, client if v is None else v) for n, v in case_lines]


@pytest.mark.parametrize("http", ["get", "h2"])
@pytest.mark.parametrize("name", NAMES)
def test_client_id_header(st, tok, name, http):
    """Missing, repeated (HTTP/1.1 header lines and HTTP/2 fields: Envoy hands Tollgate each
    occurrence), different, equal; over HTTP/1.1 (GET) and HTTP/2 (a POST with DATA)."""
    client = CLIENT[name]
    for case, case_lines, status, error, description in HEADER_CASES:
        if case == "other-case" and client != "demo-client":
            continue
        seen = Upstream(st)
        r = get(st, "/api/bound/x", tok[name], lines(case_lines, client), shape=http)
        assert_error(r, status, error, description)
        seen.saw_nothing()
    seen = Upstream(st)
    r = get(st, "/api/bound/x", tok[name], [(HEADER, client)], shape=http)
    assert r.status == 200, r
    echo = r.json()
    assert echo["headers"][HEADER] == client, "passed on as sent"
    assert echo["headers"]["x-tollgate-client-id"] == client
    assert len(seen.arrivals()) == 1


@pytest.mark.parametrize("shape", BODY_SHAPES)
@pytest.mark.parametrize("name", NAMES)
def test_posts_with_a_body(st, tok, name, shape):
    """Each refusal as a JSON POST in each shape never reaches the upstream; the allowed POSTs
    (subscribed route; header equal) arrive once with the whole body."""
    client = CLIENT[name]
    r = assert_post_refused(st, shape, ROUTE_NO[name] + "/orders", tok[name], 403)
    assert r.json()["error_description"] == NOT_SUBSCRIBED
    for case, case_lines, status, _error, description in HEADER_CASES:
        if case == "other-case":
            continue
        r = assert_post_refused(st, shape, "/api/bound/orders", tok[name], status, lines(case_lines, client))
        assert r.json()["error_description"] == description, (case, r)
    assert_post_arrived(st, shape, ROUTE_OK[name] + "/orders", tok[name])
    assert_post_arrived(st, shape, "/api/bound/orders", tok[name], [(HEADER, client)])
