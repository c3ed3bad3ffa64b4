"""Get real tokens from the rig's authorization servers (used by tests and the demo).

    client_credentials(token_url, client_id, secret, scope=None, resource=None, auth="basic")
    oidc_id_token(issuer_base, client_id, secret, redirect_uri)   # oidc-provider code + PKCE
    dot_code_token(issuer, client_id, secret, redirect_uri, user)  # DOT code + PKCE
    introspect(url, token, client_id, secret, auth="basic") -> RFC 7662 response (dict)
    token_exchange(token_url, client_id, secret, subject_token, audience=..., resource=...,
                   scope=..., actor_token=...)  # RFC 8693 at oidc-provider -> token response
    revoke(url, token, client_id, secret, auth="basic") -> HTTP status (RFC 7009)
    basic_auth(client_id, secret) -> "Basic ..." with RFC 6749 2.3.1 encoding
    decode_unverified(jwt) -> (header, payload)

Client authentication: auth="basic" is client_secret_basic with client_id and secret
form-urlencoded before base64 (RFC 6749 section 2.3.1; requests' auth=(id, secret) does not
encode), auth="post" is client_secret_post, auth="basic-unencoded" is the common mistake of
base64("id:secret") without the encoding (for negative tests).

Nothing here verifies signatures: that is the filter's job, and the tests check the filter.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from urllib.parse import parse_qs, quote_plus, urljoin, urlsplit

import requests

TIMEOUT = 10


class TokenError(RuntimeError):
    """A token (or introspection / revocation) endpoint answered with something other than 200."""

    def __init__(self, status: int, body: str, endpoint: str = "token endpoint"):
        super().__init__(f"{endpoint} answered {status}: {body[:300]}")
        self.status = status
        self.body = body


def basic_auth(client_id: str, secret: str) -> str:
    """The client_secret_basic Authorization value: RFC 6749 section 2.3.1 form-urlencodes the
    client_id and secret before joining them with ":" and base64-encoding (so "a:b" / "x+y"
    travel as "a%3Ab" / "x%2By")."""
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def _client_auth(data: dict, client_id: str, secret: str, auth: str) -> dict:
    """Adds client authentication to the form `data`; returns the headers to send."""
    if auth == "basic":
        return {"Authorization": basic_auth(client_id, secret)}
    if auth == "basic-unencoded":
        return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}
    if auth == "post":
        data.update(client_id=client_id, client_secret=secret)
        return {}
    raise ValueError(f"auth must be 'basic', 'post' or 'basic-unencoded', not {auth!r}")


def client_credentials(
    token_url: str,
    client_id: str,
    secret: str,
    scope: str | None = None,
    resource: str | None = None,
    auth: str = "basic",
    check: bool = True,
    extra_headers: dict | None = None,
) -> dict:
    """The token response of a client_credentials grant.

    auth="basic" sends client_secret_basic, auth="post" client_secret_post (see the module
    docstring). With check=False an error response is returned as its JSON body (plus "_status")
    instead of raising TokenError. extra_headers are added to the request (e.g. the XFCC a
    TLS-terminating proxy would set).
    """
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    if resource is not None:
        data["resource"] = resource
    headers = {**_client_auth(data, client_id, secret, auth), **(extra_headers or {})}
    r = requests.post(token_url, data=data, headers=headers, timeout=TIMEOUT)
    return _token_response(r, check)


TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
_UNSET = object()


def token_exchange(
    token_url: str,
    client_id: str,
    secret: str,
    subject_token: str | None,
    *,
    subject_token_type: str | None = ACCESS_TOKEN_TYPE,
    audience: str | list[str] | None = None,
    resource: str | list[str] | None = None,
    scope: str | None = None,
    actor_token: str | None = None,
    actor_token_type=_UNSET,
    requested_token_type: str | None = None,
    auth: str = "basic",
    check: bool = True,
) -> dict:
    """RFC 8693 §2.1: exchange `subject_token` at the token endpoint, authenticated as client_id
    (oidc-provider's `tollgate-exchanger`). audience= and resource= may be lists (sent repeated).
    actor_token_type defaults to the access-token type when actor_token is given. None leaves
    a parameter out (subject_token=None, subject_token_type=None for negative tests). Returns
    the §2.2.1 response (access_token, issued_token_type, token_type, expires_in, scope); with
    check=False an error answer comes back as its JSON body plus "_status"."""
    data: list[tuple[str, str]] = [("grant_type", TOKEN_EXCHANGE)]
    if subject_token is not None:
        data.append(("subject_token", subject_token))
    if subject_token_type is not None:
        data.append(("subject_token_type", subject_token_type))
    if actor_token_type is _UNSET:
        actor_token_type = ACCESS_TOKEN_TYPE if actor_token is not None else None
    for name, value in (("audience", audience), ("resource", resource)):
        for v in [value] if isinstance(value, str) else (value or []):
            data.append((name, v))
    for name, value in (("scope", scope), ("actor_token", actor_token), ("actor_token_type", actor_token_type),
                        ("requested_token_type", requested_token_type)):
        if value is not None:
            data.append((name, value))
    extra: dict = {}
    headers = _client_auth(extra, client_id, secret, auth)
    data.extend(extra.items())
    r = requests.post(token_url, data=data, headers=headers, timeout=TIMEOUT)
    return _token_response(r, check)


def introspect(
    url: str,
    token: str,
    client_id: str,
    secret: str,
    auth: str = "basic",
    token_type_hint: str | None = None,
    check: bool = True,
) -> dict:
    """RFC 7662: POST token=... to the introspection endpoint (oidc-provider
    `/token/introspection`, DOT `/o/introspect/`) authenticated as client_id; returns the JSON
    response ({"active": false} for unknown, expired or revoked tokens).

    With check=False a non-200 answer is returned as its JSON body (or {"body": text}) plus
    "_status" instead of raising TokenError. (DOT answers a failed client authentication with an
    empty 403, oidc-provider with 401 {"error": "invalid_client"}.)
    """
    data = {"token": token}
    if token_type_hint is not None:
        data["token_type_hint"] = token_type_hint
    headers = _client_auth(data, client_id, secret, auth)
    headers["Accept"] = "application/json"
    r = requests.post(url, data=data, headers=headers, timeout=TIMEOUT)
    return _token_response(r, check, "introspection endpoint")


def revoke(
    url: str,
    token: str,
    client_id: str,
    secret: str,
    auth: str = "basic",
    token_type_hint: str | None = None,
    check: bool = True,
) -> int:
    """RFC 7009: POST token=... to the revocation endpoint (oidc-provider `/token/revocation`,
    DOT `/o/revoke_token/`) as client_id, which must be the client the token was issued to
    (DOT silently ignores other clients' tokens; oidc-provider answers 400 invalid_request).
    Returns the HTTP status (200, also for unknown tokens); raises TokenError on anything else
    unless check=False."""
    data = {"token": token}
    if token_type_hint is not None:
        data["token_type_hint"] = token_type_hint
    headers = _client_auth(data, client_id, secret, auth)
    r = requests.post(url, data=data, headers=headers, timeout=TIMEOUT)
    if r.status_code != 200 and check:
        raise TokenError(r.status_code, r.text, "revocation endpoint")
    return r.status_code


def _token_response(r: requests.Response, check: bool, endpoint: str = "token endpoint") -> dict:
    if r.status_code == 200:
        return r.json()
    if check:
        raise TokenError(r.status_code, r.text, endpoint)
    try:
        body = r.json()
    except ValueError:
        body = {"body": r.text}
    return {**body, "_status": r.status_code}


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)"""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def oidc_id_token(
    issuer_base: str,
    client_id: str,
    secret: str,
    redirect_uri: str,
    *,
    scope: str = "openid",
    resource: str | None = None,
    login: str = "alice",
    acr: str | None = None,
) -> dict:
    """Drive oidc-provider's authorization-code + PKCE flow through its devInteractions
    (login form accepting any user, then consent) and return the token response (id_token,
    access_token, and refresh_token when scope has offline_access).

    With resource= the access token is an RFC 9068 JWT for that resource indicator. acr= is
    the authentication context class chosen on the rig's login page (server.mjs ACR_VALUES;
    none: the page's default, urn:tollgate:loa:1); the access token carries it and auth_time.
    """
    base = issuer_base.rstrip("/")
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    params = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    if "offline_access" in scope.split():
        params["prompt"] = "consent"  # oidc-provider drops offline_access without it
    if resource:
        params["resource"] = resource

    with requests.Session() as s:
        r = s.get(f"{base}/auth", params=params, allow_redirects=False, timeout=TIMEOUT)
        code = None
        for _ in range(10):
            if r.status_code not in (302, 303):
                raise RuntimeError(f"authorization flow stopped at {r.url}: {r.status_code} {r.text[:300]}")
            location = urljoin(r.url, r.headers["location"])
            if location.startswith(redirect_uri):
                query = parse_qs(urlsplit(location).query)
                if "error" in query:
                    raise RuntimeError(f"authorization failed: {query}")
                if query.get("state") != [state]:
                    raise RuntimeError("authorization response has the wrong state")
                code = query["code"][0]
                break
            if "/interaction/" in urlsplit(location).path:
                page = s.get(location, timeout=TIMEOUT)
                page.raise_for_status()
                prompt = re.search(r'name="prompt" value="(\w+)"', page.text)
                if not prompt:
                    raise RuntimeError(f"no prompt on interaction page {location}")
                form = {"prompt": prompt.group(1)}
                if form["prompt"] == "login":
                    form.update(login=login, password="any")
                    if acr is not None:
                        form["acr"] = acr
                r = s.post(location, data=form, allow_redirects=False, timeout=TIMEOUT)
            else:
                r = s.get(location, allow_redirects=False, timeout=TIMEOUT)
        if code is None:
            raise RuntimeError("authorization flow did not reach the redirect_uri")

    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    if resource:
        data["resource"] = resource
    headers = {"Authorization": basic_auth(client_id, secret)}
    r = requests.post(f"{base}/token", data=data, headers=headers, timeout=TIMEOUT)
    tokens = _token_response(r, check=True)
    if "id_token" in tokens and decode_unverified(tokens["id_token"])[1].get("nonce") != nonce:
        raise RuntimeError("id_token nonce does not match")
    return tokens


def dot_code_token(
    issuer: str,
    client_id: str,
    secret: str,
    redirect_uri: str,
    user: str = "alice",
    scope: str = "read",
) -> dict:
    """django-oauth-toolkit's authorization-code + PKCE flow for a skip_authorization client
    (dot-code, dot-opaque-code), logged in through the rig's X-Rig-User header; returns the token
    response. issuer is DOT's issuer, http://127.0.0.1:P/o."""
    base = issuer.rstrip("/")
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    params = {
        "client_id": client_id,
        "response_type": "code",
        "redirect_uri": redirect_uri,
        "scope": scope,
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    r = requests.get(
        f"{base}/authorize/", params=params, headers={"X-Rig-User": user}, allow_redirects=False, timeout=TIMEOUT
    )
    location = r.headers.get("location", "")
    if r.status_code != 302 or not location.startswith(redirect_uri):
        raise RuntimeError(f"DOT authorization did not redirect to {redirect_uri}: {r.status_code}")
    query = parse_qs(urlsplit(location).query)
    if "error" in query or query.get("state") != [state]:
        raise RuntimeError(f"DOT authorization failed: {sorted(query)}")
    data = {
        "grant_type": "authorization_code",
        "code": query["code"][0],
        "redirect_uri": redirect_uri,
        "code_verifier": verifier,
    }
    r = requests.post(
        f"{base}/token/", data=data, headers={"Authorization": basic_auth(client_id, secret)}, timeout=TIMEOUT
    )
    return _token_response(r, check=True)


def _b64json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def decode_unverified(jwt: str) -> tuple[dict, dict]:
    """(header, payload) of a compact JWS, without checking the signature."""
    header, payload, _signature = jwt.split(".")
    return _b64json(header), _b64json(payload)
