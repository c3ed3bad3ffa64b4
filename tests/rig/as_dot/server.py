"""Tollgate test rig: a real django-oauth-toolkit authorization server on 127.0.0.1.

    .venv/bin/python server.py --port P --state-dir DIR [--impersonate-issuer URL]

Issuer http://127.0.0.1:P/o. sqlite and the OIDC RSA key live in DIR, so a restart with the
same DIR keeps clients, tokens and the key. Access tokens are RFC 9068 JWTs (typ at+jwt, RS256,
kid = the JWKS kid) signed with DOT's OIDC key, except for the dot-opaque* and rs* clients, whose
tokens are opaque: "dot_" + oauthlib's default random token (30 of [A-Za-z0-9]). DOT stores every
access token, so all of them introspect (/o/introspect/) and revoke (/o/revoke_token/).

Clients (created at start if missing; all confidential, secrets hashed with MD5 for speed):
    dot-client / dot-secret                      client_credentials, aud https://api.test
    dot-notyet / dot-notyet-secret               client_credentials, nbf = now + 3600
    dot-wrongaud / dot-wrongaud-secret           client_credentials, aud https://other.test
    dot-impersonator / dot-impersonator-secret   client_credentials, iss = --impersonate-issuer
                                                 (a malicious AS claiming another's issuer)
    dot-code / dot-code-secret                   authorization_code (PKCE S256 required),
                                                 redirect_uri http://127.0.0.1/cb, OIDC RS256,
                                                 no consent screen
    dot-opaque / dot-opaque-secret               client_credentials, opaque dot_ token
    dot-opaque-short / dot-opaque-short-secret   client_credentials, opaque dot_ token, 2 s
    dot-opaque-code / dot-opaque-code-secret     authorization_code like dot-code (no OIDC),
                                                 opaque dot_ token (introspects with username)
    rs-client / rs-secret                        resource server: introspection caller
                                                 (client_credentials, opaque dot_ token)
    rs:client@2 / s3cr3t+/=%&                    the same, with characters that RFC 6749 2.3.1
                                                 form-urlencoding must escape in basic auth
Any client may introspect any token: basic auth (scheme spelled exactly "Basic"; id and secret
form-urlencoded per RFC 6749 2.3.1), client_id + client_secret in the body, or an opaque Bearer
token with scope "introspection". A failed authentication gets an empty 403. A client may revoke
only its own tokens (others' are ignored with 200).
Scopes: openid read write admin introspection (default read). A request carrying
`X-Rig-User: NAME` is logged in as NAME (user created on first use) so /o/authorize needs no
login form. Dynamic client registration is open at /o/register/; a registered client gets JWT
access tokens, or opaque dot_ tokens when its client_name starts with "opaque".

Rig control (test use only; not counted):
    GET  /__rig/stats         {"requests": {path: count}} for every non-rig path since start or
                              the last reset
    POST /__rig/reset-stats   zero the counters
    POST /__rig/delay?ms=N    hold every later non-rig request N ms (integer 0..60000, 0 = off)

Logs one line per request (method, path without query, status); never tokens or secrets.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs

import django
from django.conf import settings

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--port", type=int, required=True)
ARGS.add_argument("--state-dir", type=Path, required=True)
ARGS.add_argument("--impersonate-issuer", default=None)

API_AUDIENCE = "https://api.test"

# client_id -> (secret, grant type, extra Application fields)
CLIENTS = {
    "dot-client": ("dot-secret", "client-credentials", {}),
    "dot-notyet": ("dot-notyet-secret", "client-credentials", {}),
    "dot-wrongaud": ("dot-wrongaud-secret", "client-credentials", {}),
    "dot-impersonator": ("dot-impersonator-secret", "client-credentials", {}),
    "dot-code": (
        "dot-code-secret",
        "authorization-code",
        {"redirect_uris": "http://127.0.0.1/cb", "algorithm": "RS256", "skip_authorization": True,
         "post_logout_redirect_uris": "http://127.0.0.1/logged-out"},
    ),
    # opaque access tokens ("dot_" + DOT's default random token), for introspection
    "dot-opaque": ("dot-opaque-secret", "client-credentials", {}),
    "dot-opaque-short": ("dot-opaque-short-secret", "client-credentials", {}),
    "dot-opaque-code": (
        "dot-opaque-code-secret",
        "authorization-code",
        {"redirect_uris": "http://127.0.0.1/cb", "skip_authorization": True},
    ),
    # resource servers calling /o/introspect/ (any client may; these exist for clarity)
    "rs-client": ("rs-secret", "client-credentials", {}),
    "rs:client@2": ("s3cr3t+/=%&", "client-credentials", {}),
}
# rs-* get opaque tokens too: DOT accepts only opaque Bearer tokens at /o/introspect/ (with OIDC
# on, oauthlib hands JWT-shaped Bearer tokens to its JWTToken type, which DOT does not support)
OPAQUE_CLIENTS = {"dot-opaque", "dot-opaque-short", "dot-opaque-code", "rs-client", "rs:client@2"}
OPAQUE_PREFIX = "dot_"
SHORT_TTL_CLIENTS = {"dot-opaque-short": 2}
ACCESS_TOKEN_TTL = 3600


def rsa_private_pem(state_dir: Path) -> str:
    """The OIDC signing key, generated on first start and kept in the state dir."""
    path = state_dir / "oidc-rsa.pem"
    if not path.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(pem)
        tmp.chmod(0o600)
        tmp.replace(path)
    return path.read_text()


def configure(args: argparse.Namespace) -> None:
    state_dir = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    issuer = f"http://127.0.0.1:{args.port}/o"
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tollgate-rig-not-a-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "oauth2_provider",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            f"{__name__}.RigUserMiddleware",
        ],
        AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.RemoteUserBackend"],
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(state_dir / "dot.sqlite3"),
                "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF"},
            }
        },
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
            }
        ],
        LOGGING={
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"stderr": {"class": "logging.StreamHandler"}},
            # 4xx are already in the one-line access log; keep tracebacks of 5xx
            "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False}},
        },
        OAUTH2_PROVIDER={
            "OIDC_ENABLED": True,
            "OIDC_ISS_ENDPOINT": issuer,
            "OIDC_RSA_PRIVATE_KEY": rsa_private_pem(state_dir),
            "OIDC_JWKS_MAX_AGE_SECONDS": 60,
            "SCOPES": {
                "openid": "OpenID Connect",
                "read": "read",
                "write": "write",
                "admin": "admin",
                "introspection": "call /o/introspect/ with this token as Bearer",
            },
            "DEFAULT_SCOPES": ["read"],
            "ACCESS_TOKEN_EXPIRE_SECONDS": access_token_ttl,
            "ACCESS_TOKEN_GENERATOR": functools.partial(mint_access_token, issuer, args.impersonate_issuer),
            "REFRESH_TOKEN_GENERATOR": "oauthlib.oauth2.rfc6749.tokens.random_token_generator",
            # RFC 7591 clients get ids "dot-" + DOT's default 40 random ASCII letters/digits, so a
            # gateway can route them by prefix
            "CLIENT_ID_GENERATOR_CLASS": f"{__name__}.PrefixedClientIdGenerator",
            # OpenID RP-Initiated Logout at /o/logout/ (a confirm form; end_session_endpoint in
            # the OIDC discovery document)
            "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
            "DCR_ENABLED": True,
            "DCR_REGISTRATION_PERMISSION_CLASSES": ("oauth2_provider.dcr.AllowAllDCRPermission",),
        },
    )


# ---------------------------------------------------------------- access tokens


@functools.cache
def signing_key():
    from jwcrypto import jwk
    from oauth2_provider.settings import oauth2_settings

    key = jwk.JWK.from_pem(oauth2_settings.OIDC_RSA_PRIVATE_KEY.encode())
    return key, key.thumbprint()  # DOT's JWKS view publishes the thumbprint as kid


def access_token_ttl(request) -> int:
    """oauthlib expires_in (seconds): 3600, or 2 for the short-lived test clients."""
    return SHORT_TTL_CLIENTS.get(request.client.client_id, ACCESS_TOKEN_TTL)


def is_opaque_dcr_client(client) -> bool:
    """Dynamically registered clients (RFC 7591) whose client_name starts with "opaque" get
    opaque dot_ tokens like the dot-opaque* clients; other registered clients get JWTs."""
    return client.client_id not in CLIENTS and (client.name or "").startswith("opaque")


def mint_access_token(issuer: str, impersonate_issuer: str | None, request) -> str:
    """oauthlib token generator: an RFC 9068 JWT, with per-client twists for negative tests;
    for the opaque clients "dot_" + DOT's default (oauthlib random_token_generator) token."""
    from jwcrypto import jwt
    from oauthlib.oauth2.rfc6749.tokens import random_token_generator

    client_id = request.client.client_id
    if client_id in OPAQUE_CLIENTS or is_opaque_dcr_client(request.client):
        return OPAQUE_PREFIX + random_token_generator(request)
    key, kid = signing_key()
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": str(request.user.pk) if getattr(request, "user", None) else client_id,
        "aud": API_AUDIENCE,
        "client_id": client_id,
        "scope": " ".join(request.scopes or []),
        "iat": now,
        "exp": now + int(request.expires_in),
        "jti": uuid.uuid4().hex,
    }
    if client_id == "dot-notyet":
        claims["nbf"] = now + 3600
    elif client_id == "dot-wrongaud":
        claims["aud"] = "https://other.test"
    elif client_id == "dot-impersonator":
        claims["iss"] = impersonate_issuer or "https://impersonation-target.invalid"
    token = jwt.JWT(header={"alg": "RS256", "typ": "at+jwt", "kid": kid}, claims=claims)
    token.make_signed_token(key)
    return token.serialize()


# ---------------------------------------------------------------- client ids


def define_client_id_generator() -> None:
    """Defines PrefixedClientIdGenerator (CLIENT_ID_GENERATOR_CLASS names it)."""
    from oauth2_provider.generators import ClientIdGenerator

    class PrefixedClientIdGenerator(ClientIdGenerator):
        """DOT's default id (40 of [A-Za-z0-9]) with the prefix "dot-"."""

        def hash(self):
            return "dot-" + super().hash()

    globals()["PrefixedClientIdGenerator"] = PrefixedClientIdGenerator


# ---------------------------------------------------------------- login by header



def define_rig_user_middleware() -> None:
    """Defines RigUserMiddleware (MIDDLEWARE names it); Django must be set up first."""
    from django.contrib.auth.middleware import RemoteUserMiddleware

    class RigUserMiddleware(RemoteUserMiddleware):
        """Logs the request in as the user named by the X-Rig-User header (test rig only)."""

        header = "HTTP_X_RIG_USER"

    globals()["RigUserMiddleware"] = RigUserMiddleware


# ---------------------------------------------------------------- urls + startup

urlpatterns: list = []


def setup(args: argparse.Namespace) -> None:
    configure(args)
    define_client_id_generator()
    django.setup()
    define_rig_user_middleware()
    from django.core.management import call_command
    from django.urls import include, path

    from oauth2_provider.urls import metadata_urlpatterns

    urlpatterns.append(path("o/", include("oauth2_provider.urls", namespace="oauth2_provider")))
    # RFC 8414 location for issuer .../o: /.well-known/oauth-authorization-server/o
    urlpatterns.append(path("", include((metadata_urlpatterns, "rfc8414"))))
    call_command("migrate", verbosity=0, interactive=False)
    ensure_clients()


def ensure_clients() -> None:
    from oauth2_provider.models import get_application_model

    Application = get_application_model()
    existing = set(Application.objects.filter(client_id__in=CLIENTS).values_list("client_id", flat=True))
    for client_id, (secret, grant, extra) in CLIENTS.items():
        if client_id not in existing:
            Application.objects.create(
                client_id=client_id,
                client_secret=secret,
                name=client_id,
                client_type=Application.CLIENT_CONFIDENTIAL,
                authorization_grant_type=grant,
                **extra,
            )


class RigControl:
    """WSGI wrapper: per-path request counters and an artificial delay, like the oidc rig's
    /__rig/ endpoints. Rig requests are neither counted nor delayed."""

    MAX_DELAY_MS = 60000

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.delay_ms = 0

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/__rig/"):
            return self.rig(environ, start_response, path)
        with self.lock:
            self.counts[path] = self.counts.get(path, 0) + 1
            delay_ms = self.delay_ms  # the setting when the request arrived
        if delay_ms:
            time.sleep(delay_ms / 1000)
        return self.app(environ, start_response)

    @staticmethod
    def json(start_response, status: str, body: dict):
        data = json.dumps(body).encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        start_response(status, headers + [("Content-Length", str(len(data)))])
        return [data]

    def rig(self, environ, start_response, path):
        route = f"{environ.get('REQUEST_METHOD', '')} {path}"
        with self.lock:
            if route == "GET /__rig/stats":
                return self.json(start_response, "200 OK", {"requests": dict(self.counts)})
            if route == "POST /__rig/reset-stats":
                self.counts.clear()
                return self.json(start_response, "200 OK", {"requests": {}})
            if route == "POST /__rig/delay":
                raw = parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["0"])[0]
                try:
                    ms = int(raw)
                except ValueError:
                    ms = -1
                if not 0 <= ms <= self.MAX_DELAY_MS:
                    return self.json(
                        start_response, "400 Bad Request", {"error": "ms must be an integer from 0 to 60000"}
                    )
                self.delay_ms = ms
                return self.json(start_response, "200 OK", {"delay_ms": ms})
        return self.json(start_response, "404 Not Found", {"error": "no such rig endpoint"})


def serve(port: int) -> None:
    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    class Handler(WSGIRequestHandler):
        def log_request(self, code="-", size="-"):
            method, _, target = self.requestline.partition(" ")
            path = target.split(" ")[0].split("?")[0]
            print(f"{method} {path} {getattr(code, 'value', code)}", flush=True)

        def log_message(self, format, *args):  # errors only; the request line is logged above
            if not format.startswith('"%s" %s %s'):
                print(f"http: {format % args}", file=sys.stderr, flush=True)

    class Server(ThreadedWSGIServer):
        # Django's listen backlog (10) overflows when Envoy opens a burst of connections at
        # once (per-request callouts of 20+ waiting requests): the dropped SYNs are retried
        # after 1 s, Envoy's connect timeout, so the callouts fail with 503.
        request_queue_size = 128

    server = Server(("127.0.0.1", port), Handler)
    server.set_app(RigControl(WSGIHandler()))
    print(f"django-oauth-toolkit listening on http://127.0.0.1:{port}/o", flush=True)
    server.serve_forever(poll_interval=0.2)


def main() -> None:
    args = ARGS.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    setup(args)
    serve(args.port)


if __name__ == "__main__":
    main()
