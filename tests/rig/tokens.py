"""Get real tokens from the rig's authorization servers (used by tests and the demo).

    client_credentials(token_url, client_id, secret, scope=None, resource=None, auth="basic")
    oidc_id_token(issuer_base, client_id, secret, redirect_uri)   # oidc-provider code + PKCE
    decode_unverified(jwt) -> (header, payload)

Nothing here verifies signatures: that is the filter's job, and the tests check the filter.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

TIMEOUT = 10


class TokenError(RuntimeError):
    """A token endpoint answered with something other than 200."""

    def __init__(self, status: int, body: str):
        super().__init__(f"token endpoint answered {status}: {body[:300]}")
        self.status = status
        self.body = body


def client_credentials(
    token_url: str,
    client_id: str,
    secret: str,
    scope: str | None = None,
    resource: str | None = None,
    auth: str = "basic",
    check: bool = True,
) -> dict:
    """The token response of a client_credentials grant.

    auth="basic" sends client_secret_basic, auth="post" client_secret_post. With check=False an
    error response is returned as its JSON body (plus "_status") instead of raising TokenError.
    """
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    if resource is not None:
        data["resource"] = resource
    if auth == "basic":
        r = requests.post(token_url, data=data, auth=(client_id, secret), timeout=TIMEOUT)
    elif auth == "post":
        data.update(client_id=client_id, client_secret=secret)
        r = requests.post(token_url, data=data, timeout=TIMEOUT)
    else:
        raise ValueError(f"auth must be 'basic' or 'post', not {auth!r}")
    return _token_response(r, check)


def _token_response(r: requests.Response, check: bool) -> dict:
    if r.status_code == 200:
        return r.json()
    if check:
        raise TokenError(r.status_code, r.text)
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
) -> dict:
    """Drive oidc-provider's authorization-code + PKCE flow through its devInteractions
    (login form accepting any user, then consent) and return the token response (id_token,
    access_token, and refresh_token when scope has offline_access).

    With resource= the access token is an RFC 9068 JWT for that resource indicator.
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
    r = requests.post(f"{base}/token", data=data, auth=(client_id, secret), timeout=TIMEOUT)
    tokens = _token_response(r, check=True)
    if "id_token" in tokens and decode_unverified(tokens["id_token"])[1].get("nonce") != nonce:
        raise RuntimeError("id_token nonce does not match")
    return tokens


def _b64json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def decode_unverified(jwt: str) -> tuple[dict, dict]:
    """(header, payload) of a compact JWS, without checking the signature."""
    header, payload, _signature = jwt.split(".")
    return _b64json(header), _b64json(payload)
