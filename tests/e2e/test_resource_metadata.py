"""RFC 9728 protected-resource metadata (issue 16) end to end: the real tollgate.wasm in Envoy
with both real authorization servers, the standard routes, and two protected resources on
different paths (`/api` and `/api/as1-only`; their origin is the gateway's public origin, the
listener's URL).

The discovery is driven by a third-party client library, npm oauth4webapi (tests/rig/rp/rp.mjs,
op `resource_discovery`): it calls the resource with a token it does not know, reads the
WWW-Authenticate challenges, fetches the resource's metadata at the RFC 9728 §3.1 well-known
URL of the URL it called (and requires its `resource` to be that URL, §3.3), discovers the
authorization server it picked from `authorization_servers`, gets a token there and calls
again. Nothing here builds a well-known URL the way Tollgate does but to compare.

The upstream's own log (`> METHOD PATH` lines) is the witness that a document request is
answered by Tollgate and never reaches the API.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

import rp_client
import stack as rig_stack

TIMEOUT = 15
WELL_KNOWN = "/.well-known/oauth-protected-resource"
JWT_RESOURCE = "https://api.test/jwt"
RESOURCES = [
    {"path": "/api"},
    {"path": "/api/as1-only", "resource_name": "AS-1 only",
     "resource_documentation": "https://docs.example.com/as1-only"},
]


@pytest.fixture(scope="module")
def prm(wasm, tmp_path_factory):
    """The standard stack with two protected resources (shared by the module: nothing here
    changes it)."""
    st = rig_stack.Stack(tmp_path_factory.mktemp("resource-metadata"),
                         config_overrides={"protected_resources": RESOURCES})
    st.start()
    try:
        yield st
    finally:
        st.stop()


def arrivals(st: rig_stack.Stack) -> list[str]:
    return [ln for ln in st.procs["upstream"].log_text().splitlines() if ln.startswith("> ")]


def challenges(r: requests.Response) -> list[str]:
    return [v for k, v in r.raw.headers.items() if k.lower() == "www-authenticate"]


def metadata_param(challenge: str) -> str | None:
    marker = 'resource_metadata="'
    if marker not in challenge:
        return None
    return challenge.split(marker, 1)[1].split('"', 1)[0]


@pytest.mark.parametrize("server", ["as1", "as2"])
def test_a_client_follows_the_challenge_to_the_metadata_the_server_and_a_token(prm, server):
    """401 -> resource metadata -> AS metadata -> token -> 200, for each AS, by oauth4webapi."""
    if server == "as1":
        # oidc-provider: OpenID discovery; a JWT for the rig's resource indicator.
        args = dict(issuer=prm.as1_issuer, algorithm="oidc", client_id="demo-client",
                    client_secret="demo-secret", token_params={"resource": JWT_RESOURCE})
    else:
        # django-oauth-toolkit: RFC 8414 discovery (/.well-known/oauth-authorization-server/o).
        args = dict(issuer=prm.as2_issuer, algorithm="oauth2", client_id="dot-client",
                    client_secret="dot-secret")
    out = rp_client.run("resource_discovery", url=f"{prm.url}/api", scope="read", **args)
    assert "error" not in out, out
    expected_url = f"{prm.url}{WELL_KNOWN}/api"
    assert out["challenge_status"] == 401
    schemes = sorted(c["scheme"] for c in out["challenges"])
    assert schemes == ["bearer", "dpop"], out["challenges"]
    for c in out["challenges"]:
        assert c["parameters"]["resource_metadata"] == expected_url, c
    # The library looked where the challenges point.
    assert out["metadata_url"] == expected_url
    meta = out["metadata"]
    assert meta["resource"] == f"{prm.url}/api"
    assert meta["authorization_servers"] == [prm.as1_issuer, prm.as2_issuer]
    assert meta["bearer_methods_supported"] == ["header"]
    assert set(meta["scopes_supported"]) == {"admin", "write", "read"}
    assert meta["dpop_signing_alg_values_supported"]
    assert meta["dpop_bound_access_tokens_required"] is False
    assert meta["tls_client_certificate_bound_access_tokens"] is True
    assert out["as_issuer"] == args["issuer"]
    assert out["status"] == 200, out
    seen = json.loads(out["body"])["headers"]
    assert seen["x-tollgate-iss"] == args["issuer"]


def test_two_resources_on_different_paths_each_have_their_own_document(prm):
    before = len(arrivals(prm))
    api = requests.get(f"{prm.url}{WELL_KNOWN}/api", timeout=TIMEOUT)
    as1 = requests.get(f"{prm.url}{WELL_KNOWN}/api/as1-only", timeout=TIMEOUT)
    assert api.status_code == as1.status_code == 200
    assert api.headers["content-type"] == "application/json"
    assert api.json()["resource"] == f"{prm.url}/api"
    assert as1.json() == {
        "resource": f"{prm.url}/api/as1-only",
        "authorization_servers": [prm.as1_issuer],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": as1.json()["dpop_signing_alg_values_supported"],
        "dpop_bound_access_tokens_required": False,
        "tls_client_certificate_bound_access_tokens": True,
        "resource_name": "AS-1 only",
        "resource_documentation": "https://docs.example.com/as1-only",
    }
    # Each route's challenges name the document of the resource it is under.
    for path, doc in [("/api/orders", "/api"), ("/api/as1-only/x", "/api/as1-only"),
                      ("/api/dpop/x", "/api")]:
        r = requests.get(prm.url + path, timeout=TIMEOUT)
        assert r.status_code == 401
        assert challenges(r), path
        for c in challenges(r):
            assert metadata_param(c) == f"{prm.url}{WELL_KNOWN}{doc}", (path, c)
    # No resource is at the root: its well-known URL is no one's document (it goes to the
    # routes, and none matches it).
    root = requests.get(f"{prm.url}{WELL_KNOWN}", timeout=TIMEOUT)
    assert root.status_code == 403
    assert "resource" not in root.json()
    # Tollgate answered all of them: the upstream saw none.
    time.sleep(0.3)
    assert not any(WELL_KNOWN in ln for ln in arrivals(prm)[before:])


def test_a_spoofed_host_or_forwarded_header_changes_no_url(prm):
    path = f"{WELL_KNOWN}/api"
    plain = requests.get(prm.url + path, timeout=TIMEOUT)
    assert plain.status_code == 200
    spoofed = requests.get(prm.url + path, timeout=TIMEOUT, headers={
        "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
        "X-Forwarded-Port": "443", "Forwarded": "host=evil.example;proto=https"})
    assert spoofed.status_code == 200
    assert spoofed.content == plain.content
    assert "evil" not in spoofed.text
    # Another Host is not the resource's origin: no document (the routes apply, and none
    # matches), never one naming that host.
    before = len(arrivals(prm))
    other = requests.get(prm.url + path, timeout=TIMEOUT, headers={"Host": "evil.example"})
    assert other.status_code == 403
    assert "evil" not in other.text
    # The challenges name the configured URL whatever the request says.
    for headers in [{"Host": "evil.example"},
                    {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}]:
        r = requests.get(f"{prm.url}/api/orders", timeout=TIMEOUT, headers=headers)
        assert r.status_code == 401
        for c in challenges(r):
            assert metadata_param(c) == f"{prm.url}{WELL_KNOWN}/api", c
    time.sleep(0.3)
    assert arrivals(prm)[before:] == []


def test_the_standard_stack_has_no_resource_and_its_challenges_are_unchanged(stack):
    r = requests.get(f"{stack.url}/api/orders", timeout=TIMEOUT)
    assert r.status_code == 401
    assert all("resource_metadata" not in c for c in challenges(r))
    assert requests.get(f"{stack.url}{WELL_KNOWN}/api", timeout=TIMEOUT).status_code == 403
