"""The standard Tollgate deployment on loopback: Envoy + tollgate.wasm, two real authorization
servers and an echoing upstream. Used by the end-to-end tests (free ports) and the demo
(fixed ports).

    AS-1 "as1": oidc-provider, RFC 9068 JWT access tokens (resource indicators)
    AS-2 "as2": django-oauth-toolkit minting RFC 9068 JWTs
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

try:
    from . import envoy, hostile_as, servers, tokens
    from . import pki as pki_mod
    from .procs import ROOT, Proc, free_port
except ImportError:  # tests/rig on sys.path
    import envoy
    import hostile_as
    import pki as pki_mod
    import servers
    import tokens
    from procs import ROOT, Proc, free_port

# $TOLLGATE_WASM runs the tests against another build of the plugin (nothing is built then).
WASM = Path(os.environ["TOLLGATE_WASM"]).resolve() if os.environ.get("TOLLGATE_WASM") else ROOT / "target" / "tollgate.wasm"
API_AUDIENCE = "https://api.test"
# AS-1's client whose tokens are bound to its TLS client certificate (RFC 8705 §3).
MTLS_CLIENT = ("mtls-client", "mtls-secret")


def build_wasm() -> Path:
    """scripts/build-wasm: the release plugin, target/tollgate.wasm (a no-op when up to date)."""
    if os.environ.get("TOLLGATE_WASM"):
        return WASM
    subprocess.run([str(ROOT / "scripts" / "build-wasm")], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return WASM


def with_authorization(cfg: dict, pdp_port: int, listener_port: int) -> dict:
    """The demo's authorization beyond scopes (issue 16) added to `cfg`: a Cerbos PDP (AuthZEN)
    on pdp_port through cluster `cerbos`; before the `admin` route, `/api/docs/{owner}/{id}`
    asking it (owner or admin role), `/api/stepup` (RFC 9470: login at loa:2 within 300 s) and
    `/api/partners` (subscribed clients naming themselves in X-IBM-Client-Id); and the API's
    RFC 9728 protected-resource metadata. envoy-example/envoy.yaml has this (demo_plugin_config); the demo's check
    (tests/e2e/test_deploy.py) calls every part of it, and tests/e2e/test_authorize.py,
    test_step_up.py, test_key_manager.py and test_resource_metadata.py test each feature."""
    cfg = json.loads(json.dumps(cfg))
    cfg["pdps"] = {"cerbos": {"url": f"http://127.0.0.1:{pdp_port}/access/v1/evaluation",
                              "upstream": "cerbos", "timeout_ms": 1000}}
    routes = [
        {"name": "docs", "match": {"prefix": "/api/docs/"}, "require": {"authorize": {
            "pdp": "cerbos",
            "subject": {"type": "user", "id_claim": "client_id", "properties": {"roles": "roles"}},
            "resource": {"type": "document", "path": "/api/docs/{owner}/{id}", "id": "{id}",
                         "properties": {"owner": "{owner}"}},
            "actions": {"GET": "read", "PUT": "write", "DELETE": "delete"},
            "context": ["issuer", "scopes"],
            "ttl_s": 30, "negative_ttl_s": 5}}},
        {"name": "step-up", "match": {"prefix": "/api/stepup"},
         "require": {"issuers": ["as1"], "acr_values": ["urn:tollgate:loa:2"], "max_age_s": 300}},
        {"name": "partners", "match": {"prefix": "/api/partners"},
         "require": {"clients": ["demo-client", "dot-opaque"], "client_id_header": "x-ibm-client-id"}},
    ]
    at = next(i for i, r in enumerate(cfg["routes"]) if r.get("name") == "admin")
    cfg["routes"][at:at] = routes
    cfg["protected_resources"] = [{
        "path": "/api", "resource_name": "Tollgate demo API",
        "resource_documentation": "https://github.com/tollgate/tollgate#try-it-one-command",
    }]
    return cfg


# The demo's signing key for the gateway-signed backend token (issue 17). PUBLISHED HERE, so it
# signs nothing anyone should trust: a deployment makes its own (any JOSE library's Ed25519 or
# P-256 key generation; README "What the upstream receives").
DEMO_BACKEND_KEY = {
    "kty": "OKP", "crv": "Ed25519", "kid": "demo-ed25519-1",
    "x": "tWZDpF4-sJNVO1QzV1FC9s7AIrDoxW1XfVV7pmQOa1A",
    "d": "8Gw2AvLlLZJtFpY8Vqr9CrOtcL6DYugjgG--bbO6C5k",
}
# AS-1's client for RFC 8693 token exchange (tests/rig/as_oidc/server.mjs).
EXCHANGE_CLIENT = ("tollgate-exchanger", "tollgate-exchanger-secret")


def with_upstream_tokens(cfg: dict, as1_port: int, listener_port: int) -> dict:
    """The demo's upstream tokens (issue 17) added to `cfg`: AS-1's RFC 8693 token endpoint
    (`token_exchange`, client tollgate-exchanger); the gateway-signed token's key
    (`backend_token`, DEMO_BACKEND_KEY; issuer the gateway's origin; its JWKS at
    /.well-known/tollgate/jwks.json); and, before the `admin` route, `/api/exchanged` (AS-1
    tokens only, exchanged at AS-1 for https://next.test/api: the upstream gets the exchanged
    token as Authorization) and `/api/signed` (any issuer's token: the upstream gets the
    gateway-signed token in x-tollgate-jwt). envoy-example/envoy.yaml has this;
    tests/e2e/test_upstream_token.py tests each feature, the demo's check (test_deploy.py)
    calls both routes."""
    cfg = json.loads(json.dumps(cfg))
    as1 = next(i for i in cfg["issuers"] if i["name"] == "as1")
    as1["token_exchange"] = {
        "endpoint": f"http://127.0.0.1:{as1_port}/token",
        "upstream": "as1",
        "client_id": EXCHANGE_CLIENT[0],
        "client_secret": EXCHANGE_CLIENT[1],
    }
    cfg["backend_token"] = {
        "issuer": f"http://127.0.0.1:{listener_port}",
        "keys": [DEMO_BACKEND_KEY],
        "jwks_path": "/.well-known/tollgate/jwks.json",
        "jwks_max_age_s": 300,
    }
    routes = [
        {"name": "exchanged", "match": {"prefix": "/api/exchanged"},
         "require": {"issuers": ["as1"], "scopes_any": ["read", "admin"],
                     "upstream_token": {"exchange": {"resource": "https://next.test/api"}}}},
        {"name": "signed", "match": {"prefix": "/api/signed"},
         "require": {"scopes_any": ["read", "admin"],
                     "upstream_token": {"sign": {"audience": "demo-upstream"}}}},
    ]
    at = next(i for i, r in enumerate(cfg["routes"]) if r.get("name") == "admin")
    cfg["routes"][at:at] = routes
    return cfg


def demo_plugin_config(as1_port: int = 9100, as2_port: int = 9200, listener_port: int = 10000,
                       pdp_port: int = 9400) -> dict:
    """envoy-example/envoy.yaml's plugin configuration: the standard one, plus issue 16's
    authorization (with_authorization) and issue 17's upstream tokens (with_upstream_tokens)."""
    cfg = with_authorization(plugin_config(as1_port, as2_port, listener_port), pdp_port, listener_port)
    return with_upstream_tokens(cfg, as1_port, listener_port)


def plugin_config(as1_port: int, as2_port: int, listener_port: int, tagging: bool = False,
                  tls_port: int | None = None, **issuer_overrides) -> dict:
    """The demo/test plugin configuration. listener_port: Envoy's, whose origin is the gateway's
    public origin (the URL its metadata documents name); tls_port: Envoy's TLS listener, when
    there is one (its https origin is a second public origin); issuer_overrides: {"as1": {...},
    "as2": {...}} merged into each issuer; tagging turns on the gateway's stateless routing tags."""
    issuers = [
        {
            "name": "as1",
            "issuer": f"http://127.0.0.1:{as1_port}",
            # oidc-provider publishes its JWKS location in OIDC discovery.
            "jwks": {"discovery": True, "upstream": "as1"},
            "audiences": [API_AUDIENCE],
            "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
            "require_at_jwt": True,
            "clock_skew_s": 1,
            # Opaque tokens (requests without resource=): introspected at AS-1 only. Its
            # discovery document names the introspection endpoint. oidc-provider also says
            # "active" for refresh tokens, but only access tokens carry token_type.
            "introspection": {
                "discovery": True,
                "upstream": "as1",
                "client_id": "rs-client",
                "client_secret": "rs-secret",
                "require_token_type": True,
            },
            "opaque_tokens": {"pattern": "[A-Za-z0-9_-]{43}"},
            # RFC 8705 §3: AS-1's mtls-client gets certificate-bound tokens (cnf.x5t#S256); they
            # are accepted with their certificate, unbound tokens still pass (the /api/mtls route
            # requires bound ones).
            "mtls": {"mode": "allowed"},
            # Behind the gateway's /oauth2 endpoints: its OpenID and RFC 8414 documents (both
            # at their standard places). The rig's AS-1 gives registered clients ids starting
            # with "as1-" (features.registration.idFactory), so they route by that prefix.
            "gateway": {
                "metadata": True,
                "upstream": "as1",
                "client_ids": ["demo-client", "post-client", "rs-client", "short-opaque-client", "mtls-client"],
                "client_id_prefixes": ["as1-"],
            },
        },
        {
            "name": "as2",
            "issuer": f"http://127.0.0.1:{as2_port}/o",
            "jwks": {
                "uri": f"http://127.0.0.1:{as2_port}/o/.well-known/jwks.json",
                "upstream": "as2",
            },
            "audiences": [API_AUDIENCE],
            "algorithms": ["RS256"],
            "require_at_jwt": True,
            "clock_skew_s": 1,
            # DOT's opaque tokens carry the prefix dot_; its RFC 8414 metadata names the
            # introspection endpoint. The client id needs RFC 6749 §2.3.1 encoding.
            "introspection": {
                "discovery": f"http://127.0.0.1:{as2_port}/.well-known/oauth-authorization-server/o",
                "upstream": "as2",
                "client_id": "rs:client@2",
                "client_secret": "s3cr3t+/=%&",
            },
            "opaque_tokens": {"prefixes": ["dot_"]},
            # django-oauth-toolkit cannot mint DPoP-bound tokens (RFC 9449), so DPoP is off for
            # its tokens: a DOT token with the DPoP scheme is refused, and a route only AS-2
            # serves (/api/hinted) does not advertise DPoP. A route that requires DPoP still
            # does, whatever an issuer's mode.
            "dpop": {"mode": "off"},
            # Both of DOT's documents: its OpenID one lists userinfo, its RFC 8414 one
            # introspection, revocation and registration. The rig's DOT gives registered
            # clients ids starting with "dot-" (CLIENT_ID_GENERATOR_CLASS).
            "gateway": {
                "metadata": True,
                "upstream": "as2",
                "client_id_prefixes": ["dot-"],
            },
        },
    ]
    for issuer in issuers:
        for key, value in issuer_overrides.get(issuer["name"], {}).items():
            if isinstance(value, dict) and isinstance(issuer.get(key), dict):
                issuer[key] = {**issuer[key], **value}  # one level deep: tweak a few fields
            else:
                issuer[key] = value
    return {
        "issuers": issuers,
        "routes": [
            {"name": "public", "match": {"prefix": "/public"}, "anonymous": True},
            # Only certificate-bound tokens presented with their certificate (RFC 8705 §3).
            {"name": "mtls", "match": {"prefix": "/api/mtls"}, "require": {"mtls": "required"}},
            # Only DPoP-bound tokens presented with a proof of their key (RFC 9449; AS-1's
            # dpop-client gets them, and as1's dpop mode is the default, allowed).
            {"name": "dpop", "match": {"prefix": "/api/dpop"}, "require": {"dpop": "required"}},
            {"name": "admin", "match": {"prefix": "/api/admin"}, "require": {"scopes": ["admin"]}},
            # Opaque tokens whose issuer the rules cannot tell: the client names it.
            {"name": "hinted", "match": {"prefix": "/api/hinted"},
             "require": {"issuers": ["as2"], "issuer_header": "x-token-issuer"}},
            {"name": "as1-only", "match": {"prefix": "/api/as1-only"}, "require": {"issuers": ["as1"]}},
            {
                "name": "demo-client-only",
                "match": {"prefix": "/api/claims"},
                "require": {"claims": {"client_id": "demo-client"}},
            },
            {"name": "writes", "match": {"prefix": "/api", "methods": ["POST", "PUT", "PATCH", "DELETE"]},
             "require": {"scopes": ["write"]}},
            {"name": "api", "match": {"prefix": "/api"}, "require": {"scopes_any": ["read", "admin"]}},
        ],
        "identity": {"payload_header": "x-tollgate-claims"},
        # One set of OAuth endpoints for both servers (see README "Several authorization servers
        # behind one set of endpoints").
        "gateway": {
            "base_path": "/oauth2",
            # The URLs the gateway's documents name: configured, never the request's Host.
            "public_origins": [f"http://127.0.0.1:{listener_port}"]
            + ([f"https://127.0.0.1:{tls_port}"] if tls_port else []),
            "selector_param": "as",
            "selector_header": "x-oauth-as",
            "tagging": tagging,
        },
    }


def gateway_routes(route_header: str = "x-tollgate-as") -> list[dict]:
    """Envoy routes that send gateway calls Tollgate routed (route header = issuer name) to
    that authorization server's cluster; they come before the API routes."""
    return [
        {
            "name": f"oauth-{name}",
            "match": {"prefix": "/", "headers": [{"name": route_header, "string_match": {"exact": name}}]},
            "route": {"cluster": name, "timeout": "15s"},
        }
        for name in ("as1", "as2")
    ] + envoy.DEFAULT_ROUTES


@dataclass
class Stack:
    """Starts and stops the whole deployment. Ports default to free ones."""

    workdir: Path
    as1_port: int = field(default_factory=free_port)
    as2_port: int = field(default_factory=free_port)
    upstream_port: int = field(default_factory=free_port)
    listener_port: int = field(default_factory=free_port)
    concurrency: int = 1
    issuer_overrides: dict = field(default_factory=dict)
    tagging: bool = False
    # Top-level plugin configuration keys to set (None: remove the key), e.g. {"gateway": None}.
    config_overrides: dict = field(default_factory=dict)
    # A second Envoy listener terminating TLS (envoy.tls_listener) on tls_port, with the test PKI
    # (pki.py) written to workdir/pki: st.tls_url, st.pki.
    tls: bool = False
    tls_port: int = 0
    # The plain listener's forward_client_cert_details (None: Envoy's default, SANITIZE), e.g.
    # "ALWAYS_FORWARD_ONLY" so a client's own x-forwarded-client-cert reaches Tollgate and the
    # upstream (FORWARD_ONLY forwards it only from mTLS connections, never on this plain listener).
    forward_client_cert: str | None = None
    procs: dict[str, Proc] = field(default_factory=dict)
    pki: pki_mod.Pki | None = None

    def __post_init__(self) -> None:
        if self.tls and not self.tls_port:
            self.tls_port = free_port()

    @property
    def as1_issuer(self) -> str:
        return f"http://127.0.0.1:{self.as1_port}"

    @property
    def as2_issuer(self) -> str:
        return f"http://127.0.0.1:{self.as2_port}/o"

    @property
    def envoy(self) -> envoy.EnvoyProc:
        return self.procs["envoy"]  # type: ignore[return-value]

    @property
    def url(self) -> str:
        return self.envoy.url

    @property
    def tls_url(self) -> str:
        """https://127.0.0.1:<tls_port> (Envoy's `ingress_tls` listener; Stack(tls=True))."""
        return self.envoy.tls_url

    def plugin_config(self) -> dict:
        cfg = plugin_config(self.as1_port, self.as2_port, self.listener_port, self.tagging,
                            tls_port=self.tls_port or None, **self.issuer_overrides)
        for key, value in self.config_overrides.items():
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
        return cfg

    def clusters(self) -> dict[str, int]:
        return {"as1": self.as1_port, "as2": self.as2_port, "upstream": self.upstream_port}

    def start_as1(self) -> Proc:
        self.procs["as1"] = servers.start_oidc(self.as1_port, self.workdir / "as1-state", self.workdir)
        return self.procs["as1"]

    def start_as2(self) -> Proc:
        self.procs["as2"] = servers.start_dot(
            self.as2_port, self.workdir / "as2-state", self.workdir, impersonate_issuer=self.as1_issuer
        )
        return self.procs["as2"]

    def make_pki(self) -> pki_mod.Pki:
        """The test PKI in workdir/pki (made once per stack; Envoy's TLS listener uses it)."""
        if self.pki is None:
            self.pki = pki_mod.make(self.workdir / "pki")
        return self.pki

    def tls_listener(self) -> envoy.TlsListener | None:
        if not self.tls:
            return None
        p = self.make_pki()
        return envoy.TlsListener(port=self.tls_port, cert=p.server.cert, key=p.server.key, ca=p.ca)

    def start_envoy(self, **kwargs) -> envoy.EnvoyProc:
        kwargs.setdefault("concurrency", self.concurrency)
        kwargs.setdefault("routes", gateway_routes())
        kwargs.setdefault("listener_port", self.listener_port)
        kwargs.setdefault("tls", self.tls_listener())
        kwargs.setdefault("forward_client_cert_details", self.forward_client_cert)
        self.procs["envoy"] = envoy.start_envoy(
            WASM, self.plugin_config(), self.clusters(), log_dir=self.workdir, **kwargs
        )
        return self.envoy

    def start(self) -> "Stack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.procs["upstream"] = servers.start_upstream(self.upstream_port, self.workdir)
            self.start_as1()
            self.start_as2()
            self.start_envoy()
            self.wait_gateway_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_gateway_ready(self, timeout: float = 10.0) -> None:
        """Until Tollgate has fetched both servers' metadata (the gateway answers 503 before)."""
        deadline = time.monotonic() + timeout
        for name in ("as1", "as2"):
            url = f"{self.url}/oauth2/{name}/.well-known/oauth-authorization-server"
            while requests.get(url, timeout=5).status_code == 503:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not learn {name}'s metadata in {timeout}s")
                time.sleep(0.05)

    def stop(self) -> None:
        for name in ("envoy", "as1", "as2", "upstream"):
            proc = self.procs.get(name)
            if proc:
                proc.stop()

    # --- tokens -------------------------------------------------------------------------------

    def as1_token(self, scope: str = "read", resource: str = "https://api.test/jwt",
                  client: tuple[str, str] = ("demo-client", "demo-secret")) -> str:
        return tokens.client_credentials(
            f"{self.as1_issuer}/token", *client, scope=scope, resource=resource
        )["access_token"]

    def as1_opaque_token(self, scope: str = "read", client: tuple[str, str] = ("demo-client", "demo-secret")) -> str:
        return tokens.client_credentials(f"{self.as1_issuer}/token", *client, scope=scope)["access_token"]

    def as1_bound_token(self, cert_pem: str, scope: str = "read",
                        resource: str | None = "https://api.test/jwt") -> str:
        """A token of mtls-client bound to this certificate (cnf.x5t#S256), asked of AS-1
        directly with the x-forwarded-client-cert Envoy's TLS listener would set: the rig plays
        the TLS-terminating proxy oidc-provider trusts (tests/rig/as_oidc/server.mjs). A JWT for
        `resource`, or opaque with resource=None."""
        return tokens.client_credentials(
            f"{self.as1_issuer}/token", *MTLS_CLIENT, scope=scope, resource=resource,
            extra_headers={"x-forwarded-client-cert": pki_mod.xfcc(cert_pem)},
        )["access_token"]

    def as2_opaque_token(self, scope: str = "read", client: tuple[str, str] = ("dot-opaque", "dot-opaque-secret")) -> str:
        return tokens.client_credentials(f"{self.as2_issuer}/token/", *client, scope=scope)["access_token"]

    def as2_token(self, client: str = "dot-client", secret: str = "dot-secret", scope: str = "read") -> str:
        return tokens.client_credentials(f"{self.as2_issuer}/token/", client, secret, scope=scope)["access_token"]

    # --- calls through Envoy ------------------------------------------------------------------

    def call(self, path: str, token: str | None = None, method: str = "GET",
             headers: dict | None = None) -> requests.Response:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.url + path, headers=h, timeout=15)

    def stats(self, prefix: str = "tollgate.") -> dict[str, int]:
        return envoy.stats(self.envoy.admin_port, prefix)


class WithHostileAS(Stack):
    """The standard stack plus the scriptable hostile authorization server (hostile_as.py) as the
    Envoy cluster `hostile`. `start` starts that server first (or `start_hostile`, to script its
    answers before Envoy fetches anything); `stop` stops it too. Subclasses add its issuers in
    `plugin_config` and may adjust Envoy's HttpConnectionManager in `tweak_hcm`."""

    hostile_port: int = 0

    def start_hostile(self) -> None:
        """Starts the hostile server on `hostile_port` (a free one if unset), once."""
        if "hostile" in self.procs:
            return
        self.hostile_port = self.hostile_port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs["hostile"] = hostile_as.start(self.hostile_port, self.workdir)

    def start(self) -> "WithHostileAS":
        try:
            self.start_hostile()
            super().start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            if "hostile" in self.procs:
                self.procs["hostile"].stop()

    @property
    def hostile_base(self) -> str:
        return f"http://127.0.0.1:{self.hostile_port}"

    def clusters(self) -> dict[str, int]:
        return {**super().clusters(), "hostile": self.hostile_port}

    def rig(self, method: str, path: str, body=None) -> dict:
        """The hostile server's control API: `rig("POST", "set", {path: answer})`, `rig("GET", "stats")`."""
        r = requests.request(method, f"{self.hostile_base}/__rig/{path}", json=body, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    def tweak_hcm(self, hcm: dict) -> None:
        """Changes to the listener's HttpConnectionManager before Envoy starts (none here)."""

    def start_envoy(self, access_log: bool = True, **kwargs) -> envoy.EnvoyProc:
        config = envoy.render(self.listener_port, free_port(), WASM, self.plugin_config(), self.clusters(),
                              gateway_routes(), access_log=access_log)
        self.tweak_hcm(envoy.http_connection_manager(config))
        kwargs.setdefault("concurrency", self.concurrency)
        self.procs["envoy"] = envoy.start_envoy(config=config, log_dir=self.workdir, **kwargs)
        return self.envoy


def upstream_saw(response: requests.Response) -> dict:
    """The request headers the echoing upstream received (lower-case names)."""
    return json.loads(response.text)["headers"]
