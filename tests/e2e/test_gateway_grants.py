"""Revoked grants through the gateway: a revocation the AS confirms evicts every cached access
token of the grant, not only the token it names (issue 14, point 5).

Tollgate caches an opaque token's introspection answer (up to max_ttl_s, 300 s here). When a
refresh token is revoked, oidc-provider (as1) revokes the whole grant, so the grant's access
tokens are inactive at once; django-oauth-toolkit (as2) revokes the refresh token and the access
token bound to it, and has already revoked the older ones when it rotated the refresh token.
Every test gets tokens through the gateway, puts their answers in Tollgate's cache (an API call
that costs no introspection afterwards proves it), revokes through the gateway, and counts the
AS's introspection calls (`/__rig/stats`): a refused call that introspected once proves the
cache entry was evicted, not served (which would have answered 200) nor aged out (300 s).
"""

from __future__ import annotations

import pytest

from test_gateway import (  # noqa: F401  (tagging_stack: the module-scoped fixture)
    CODE_CLIENTS,
    INTROSPECT,
    REVOKE,
    RS,
    TOKEN,
    Watch,
    api_ok,
    assert_refused,
    cc_token,
    gw_code_flow,
    gw_introspect,
    gw_post,
    gw_token,
    is_jwt,
    tagging_stack,
)

API = "/api/orders"
# as2: dot-opaque-code mints opaque dot_ tokens with refresh tokens (client_secret_post).
DOT = ("dot-opaque-code", "dot-opaque-code-secret")


def other(which: str) -> str:
    return "as2" if which == "as1" else "as1"


def grant(st, which: str, scope: str = "openid offline_access read") -> dict:
    """An authorization code grant through the gateway with opaque tokens and a refresh token."""
    if which == "as1":
        got = gw_code_flow(st, "as1", scope=scope)
    else:
        got = gw_code_flow(st, "as2", client=DOT, scope="read", auth="post")
    assert "refresh_token" in got and not is_jwt(got["access_token"]), sorted(got)
    return got


def refresh(st, which: str, refresh_token: str) -> dict:
    client, auth = (CODE_CLIENTS["as1"], "basic") if which == "as1" else (DOT, "post")
    watch = Watch(st)
    got = gw_token(st, {"grant_type": "refresh_token", "refresh_token": refresh_token},
                   client=client, auth=auth)
    watch.only(which, TOKEN[which], endpoint="token")
    return got


def cached(st, token: str, which: str) -> None:
    """The token works on the API and its answer is cached: a second call costs no
    introspection."""
    api_ok(st, token, which)
    watch = Watch(st)
    api_ok(st, token, which)
    assert watch.served() == {"as1": {}, "as2": {}}, "answered from the cache"


def revoke(st, which: str, token: str, hint: str | None = None) -> None:
    """Revocation through the gateway by the grant's client; the AS confirms (200)."""
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    client = CODE_CLIENTS["as1"] if which == "as1" else DOT
    if which == "as1":
        r = gw_post(st, "revoke", data, basic=client)
    else:
        r = gw_post(st, "revoke", {**data, "client_id": client[0], "client_secret": client[1]})
    assert r.status_code == 200, (r.status_code, r.text)


def refused_after_asking(st, which: str, tokens: list[str]) -> None:
    """Each token is refused (401), and the AS was asked about each once: the cached answers
    were evicted."""
    watch = Watch(st)
    for token in tokens:
        assert_refused(st.call(API, token))
    assert watch.served() == {which: {INTROSPECT[which]: len(tokens)}, other(which): {}}


# ------------------------------------------------------------------------- oidc-provider (as1)


def test_revoking_the_refresh_token_evicts_the_cached_access_token(stack):
    got = grant(stack, "as1")
    cached(stack, got["access_token"], "as1")
    watch = Watch(stack)
    revoke(stack, "as1", got["refresh_token"], "refresh_token")
    watch.only("as1", REVOKE["as1"], endpoint="revoke")
    refused_after_asking(stack, "as1", [got["access_token"]])


def test_a_refreshed_grant_loses_every_access_token_with_its_refresh_token(stack):
    """Two access tokens of one grant (the code exchange's and a refresh's), both cached:
    revoking the refresh token (the one the last answer carried) evicts both."""
    got = grant(stack, "as1")
    fresh = refresh(stack, "as1", got["refresh_token"])
    assert fresh["access_token"] != got["access_token"]
    for token in (got["access_token"], fresh["access_token"]):
        cached(stack, token, "as1")
    revoke(stack, "as1", fresh.get("refresh_token", got["refresh_token"]))
    refused_after_asking(stack, "as1", [got["access_token"], fresh["access_token"]])


def test_revoking_one_access_token_evicts_its_whole_grant(stack):
    """oidc-provider revokes the grant of a revoked access token: the grant's other access
    token, cached, is evicted too; the refresh token no longer works at the AS."""
    got = grant(stack, "as1")
    fresh = refresh(stack, "as1", got["refresh_token"])
    for token in (got["access_token"], fresh["access_token"]):
        cached(stack, token, "as1")
    revoke(stack, "as1", got["access_token"], "access_token")
    refused_after_asking(stack, "as1", [fresh["access_token"], got["access_token"]])
    r = gw_post(stack, "token", {"grant_type": "refresh_token", "refresh_token": got["refresh_token"]},
                basic=CODE_CLIENTS["as1"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text


def test_revoking_a_grant_evicts_nothing_of_other_grants_or_tokens(stack):
    mine, theirs = grant(stack, "as1"), grant(stack, "as1")
    lone, _ = cc_token(stack, "as1", jwt=False)
    dot = grant(stack, "as2")
    for token, which in ((mine["access_token"], "as1"), (theirs["access_token"], "as1"),
                         (lone, "as1"), (dot["access_token"], "as2")):
        cached(stack, token, which)
    revoke(stack, "as1", mine["refresh_token"])
    refused_after_asking(stack, "as1", [mine["access_token"]])
    watch = Watch(stack)
    api_ok(stack, theirs["access_token"], "as1")
    api_ok(stack, lone, "as1")
    api_ok(stack, dot["access_token"], "as2")
    assert watch.served() == {"as1": {}, "as2": {}}, "still from the cache"


@pytest.mark.parametrize("which", ["as1", "as2"])
def test_tagged_tokens_of_a_revoked_grant_are_evicted(tagging_stack, which):
    """With tagging, clients hold `<as>.<token>`: the revocation names the tagged refresh token.
    as2 (no ID token) tags its opaque access tokens too, so their cache keys are the tagged ones;
    as1's code grant has an ID token, whose at_hash keeps its access tokens untagged."""
    st = tagging_stack
    prefix = f"{which}."
    got = grant(st, which)
    assert got["refresh_token"].startswith(prefix)
    cached(st, got["access_token"], which)  # before the refresh: DOT revokes it there
    fresh = refresh(st, which, got["refresh_token"])
    cached(st, fresh["access_token"], which)
    tokens = [got["access_token"], fresh["access_token"]]
    if which == "as2":
        assert all(t.startswith(prefix) for t in tokens), "tagged access tokens"
    revoke(st, which, fresh.get("refresh_token", got["refresh_token"]))
    refused_after_asking(st, which, tokens)


# ---------------------------------------------------------------- django-oauth-toolkit (as2)


def test_dot_revokes_the_refresh_token_and_its_access_token_and_the_gateway_evicts_the_grant(stack):
    """DOT rotates refresh tokens: the refresh revokes the old refresh token and deletes its
    access token at once (Tollgate still serves that one from its cache: nothing told it).
    Revoking the current refresh token revokes it and its access token. The gateway evicts
    both access tokens of the grant; a new grant of the same client works."""
    got = grant(stack, "as2")
    cached(stack, got["access_token"], "as2")
    fresh = refresh(stack, "as2", got["refresh_token"])
    assert fresh["refresh_token"] != got["refresh_token"], "DOT rotates"
    cached(stack, fresh["access_token"], "as2")
    # What DOT did at the refresh: the old access token is gone there, cached here.
    assert gw_introspect(stack, got["access_token"], RS["as2"]) == {"active": False}
    api_ok(stack, got["access_token"], "as2")

    revoke(stack, "as2", fresh["refresh_token"], "refresh_token")
    assert gw_introspect(stack, fresh["access_token"], RS["as2"]) == {"active": False}
    refused_after_asking(stack, "as2", [got["access_token"], fresh["access_token"]])
    r = gw_post(stack, "token", {"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"],
                                 "client_id": DOT[0], "client_secret": DOT[1]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text

    again = grant(stack, "as2")
    cached(stack, again["access_token"], "as2")


@pytest.mark.parametrize("which", ["as1", "as2"])
def test_a_revocation_the_as_refuses_evicts_nothing_of_the_grant(stack, which):
    """Only a confirmed revocation evicts: wrong client credentials get 401 from the AS and the
    grant's access token stays cached."""
    got = grant(stack, which)
    cached(stack, got["access_token"], which)
    client = CODE_CLIENTS["as1"] if which == "as1" else DOT
    r = gw_post(stack, f"{which}/revoke", {"token": got["refresh_token"]}, basic=(client[0], "wrong"))
    assert r.status_code == 401, (r.status_code, r.text)
    watch = Watch(stack)
    api_ok(stack, got["access_token"], which)
    assert watch.served() == {"as1": {}, "as2": {}}
