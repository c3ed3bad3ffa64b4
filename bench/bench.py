"""Tollgate benchmark: ONE Envoy, one listener per filter setup, wrk against each, one table.

Run it through bench/run (which installs and builds what is missing). Listeners, all on 127.0.0.1:

    upstream       direct_response 200 (the "real upstream" every other listener routes to)
    upstream-echo  the same answer plus, as response headers x-bench-saw-<name>, the request
                   headers authorization, x-tollgate-jwt and x-tollgate-sub it received (Envoy's
                   %REQ()% in response_headers_to_add): where tg-signed and tg-exchanged send
                   the path prefix /__bench_echo, which only their probes use
    passthrough    router only
    noop           a wasm filter that reads one header (bench/noop: the host's floor)
    tg-warm        Tollgate, inline JWKS, verified-token cache on (one token repeated)
    tg-warm-bare   as tg-warm, without identity headers (the decision's cost alone)
    tg-cold        Tollgate, inline JWKS, cache.max_entries 0 (every request is verified)
    tg-mix         Tollgate, inline JWKS, cache on: the Zipf mix
    tg-opaque      Tollgate, opaque tokens introspected at a real django-oauth-toolkit AS
                   (tests/rig/as_dot, started by the bench) through the Envoy cluster as-dot
    tg-once-<alg>  Tollgate, inline JWKS, cache on: the once-per-token check of each cold set
    jwt-nocache    Envoy's native jwt_authn, same JWKS inline, no JWT cache
    jwt-cache      native jwt_authn with jwt_cache_config (warm rows)
    jwt-cache-claims
                   the same forwarding the identity Tollgate's default identity headers carry:
                   claim_to_headers for sub, client_id, scope and iss, and a fixed fifth header
                   added by the route (as Tollgate's issuer name); the reference ("vs ref") of
                   tollgate warm RS256 (issue 18)
    jwt-mix        native jwt_authn with jwt_cache_config large enough for the whole mix
    base-warm, base-cold, base-dpop
                   with --baseline WASM: tg-warm, tg-cold and tg-dpop running that other module
                   (e.g. the previous commit's), so a change is measured against it in the same run
    tg-dpop        Tollgate, inline JWKS, cache on, DPoP allowed (iat window 60 s, the default)
    tg-dpop-noreplay
                   the same on the bench-only build without the DPoP replay store
                   (scripts/build-wasm --bench-skip-replay-store; not in --quick)
    tg-pdp-cached, tg-pdp-fresh
                   Tollgate, inline JWKS, cache on, one route GET /api/docs/{owner}/{id} with
                   require.authorize: the rig's Cerbos (started by the bench, tests/rig/pdp)
                   through the Envoy cluster cerbos decides whether the token's sub may read the
                   document (decisions kept an hour); each listener its own VM, so its own
                   decision cache
    tg-signed      (issue 17) as tg-warm, plus top-level backend_token (issuer
                   https://gateway.bench.test, one Ed25519 private JWK the bench generates with
                   jwcrypto) and the route's upstream_token {"sign": {"audience": "bench-upstream",
                   "lifetime_s": 3600}}: the upstream gets x-tollgate-jwt, signed by the gateway
    tg-exchanged   (issue 17) Tollgate with the rig's oidc-provider (tests/rig/as_oidc, started by
                   the bench) as its one issuer: keys by OIDC discovery through the Envoy cluster
                   as-oidc (refresh_interval_s a day: nothing is fetched while rows run), and its
                   token_exchange (client tollgate-exchanger, through as-oidc); the route's
                   upstream_token {"exchange": {"resource": "https://next.test/api",
                   "max_ttl_s": 3600}}: the upstream gets Authorization: Bearer <exchanged token>
    tg-as1         (issue 17) tg-exchanged without upstream_token: the same issuer and token
    tls-passthrough, tg-tls
                   TLS listeners that require a client certificate of the bench's test CA
                   (bench/proofs.py test_pki): router only, and Tollgate with mtls allowed and the
                   certificate from Envoy's connection

Rows (each drives one listener with `wrk -t1 -c16` and a Lua script that cycles through a token
file, in interleaved rounds; the table shows each row's median round):

    warm       one token, repeated (RS256, ES256), Tollgate and native with cache
    cold       a set of distinct tokens per algorithm, Tollgate with the cache off and native
               without cache, so every request is verified
    Zipf mix   --mix-tokens (1,000) distinct RS256 tokens in a pre-generated sequence of
               --mix-length (20,000) requests where the token of rank k is drawn with weight
               1/k^s (--zipf, 1.1; --seed; every token at least once), cycled by wrk. Tollgate
               and native jwt_authn, both with a cache, get the very same sequence ("vs
               native" is against native). First uses fall in the warm-up and round 1; after
               that both serve the 1,000 tokens from their caches.
    opaque     opaque `dot_` tokens minted by the real AS (client_credentials, 3600 s), checked
               by RFC 7662 introspection at that AS and then from Tollgate's cache: one token,
               and a set of --opaque-tokens (100). No native counterpart: compare with the no-op
               floor (target >= 0.95x). These rows probe with a token of their own, so their
               tokens are first seen under wrk's 16 connections (single-flight at work).

Issue 15 rows (sender-constrained tokens; "vs ref" compares with another row of the same run):

    dpop-es256-cached
               one DPoP-bound ES256 token (cnf.jkt), verified once and then a cache hit, with a
               fresh ES256 proof per request (unique jti, htm, htu, iat, ath), so each request
               costs one proof verification: vs ref is against tollgate cold ES256 (one token
               verification per request). wrk's Lua cannot sign, so before each wrk run
               bench/proofs.py makes a pool (cryptography, one process per CPU) dated in
               one-second slots, and bench/proofs.lua sends each proof once (a pool that runs
               out fails the row; see bench/proofs.py for why slots, not one date)
    dpop-es256-cached, replay store skipped (bench-only build)
               the same on the build without the replay store: vs ref is the store's cost
    mtls       over a TLS listener requiring a client certificate, driven by ab -k -E (wrk has
               no client certificates; `-c16` connections, HTTP/1.0 keep-alive): passthrough, a
               warm unbound ES256 token, and mtls-cached, a cached ES256 token bound to the
               client certificate (cnf x5t#S256), vs ref against the unbound token

Issue 16 rows (policy decisions; vs ref against tollgate warm RS256, the same token on a route
without a PDP; the table adds PDP calls / authorized requests, and Cerbos' CPU per request from
/proc/<cerbos pid>/stat around the timed run, as for Envoy):

    pdp-cached the warm RS256 token, every request (the probe's too) to one document the token's
               subject owns: one question, asked once, then a decision-cache hit on every request
    pdp-fresh  the same token, each request to a path of its own (tokens.lua's second argument:
               a prefix unique to the wrk run, then the request's number), so each request is
               a question never asked before: one PDP call per request, nothing cached or
               coalesced. The decision cache is still written on every call (4,096 slots).

Issue 17 rows (what the upstream receives; vs ref against tollgate warm RS256, the same kind
of cached RS256 token without upstream_token; target >= 0.9x):

    signed backend token, warm RS256
               the warm RS256 token on tg-signed: verified once, and its backend token signed
               once (per worker) and then reused: a worker keeps it until a quarter of its
               lifetime is left, 45 minutes with lifetime_s 3600, longer than a run
    exchanged token, warm (cached exchange)
               one access token of the rig's oidc-provider (RS256, resource https://api.test/jwt,
               from a user login: it lives 3600 s, so a run must end within the hour) on
               tg-exchanged: verified once, exchanged at the AS once (RFC 8693, for
               https://next.test/api: an ES256 token) and then taken from the shared exchange
               cache on every request
    warm AS-1 token, no exchange (reference of the exchanged token row)
               the exchanged row's token on tg-as1 (no upstream_token): vs ref against tollgate
               warm RS256 too, so the exchange's own cost is the exchanged row against this one
               (AS-1's token is ~770 bytes to the bench token's ~670, with acr and auth_time)
    The signed and exchanged rows' probes go through upstream-echo (path
    /__bench_echo/api/bench), so the bench sees what the upstream received; wrk's requests go
    to the plain upstream, as on tg-warm (past one more prefix in Envoy's route table).
    Signing alone (µs per EdDSA / ES256 signature in V8) is bench/crypto/run's, not this bench's.

Checks (section "Checks" of the report; a FAILED check makes the command exit 1). Before and
after every row the bench reads all of Tollgate's and jwt_authn's counters from the Envoy admin
(after wrk exits, until they stop moving: Envoy may still be answering the last requests wrk
sent), so each row's counts are its own; a row during which another listener's counters moved
fails, as does a Tollgate row whose counters are missing.

    once per token   Tollgate rows with the cache on: verifications (allowed - cache_hit) must
                     equal the distinct tokens the row sent (the probe's, and wrk's: tokens.lua
                     reports how far into its token file it got), counted over all rounds: one
                     verification per token per Envoy process, whatever --concurrency. Opaque
                     rows: introspection calls counted by Tollgate, and introspection requests
                     the AS itself served (its /__rig/stats), must each equal the distinct opaque
                     tokens sent (allowed - cache_hit also counts requests that waited for
                     another request's introspection: "coalesced").
    cold sets x2     after the rounds, every cold set is sent twice over, in order, on 16
                     connections (so a token's second request comes a whole set later) to
                     tg-once-<alg> (cache on): every answer 200, exactly one verification per
                     token.
    cache off        the cold rows must show no cache hit (each request verified).
    PDP calls        per distinct (subject, resource, action), counted by Tollgate
                     (tollgate.route.<route>.authz.call, cache_hit, coalesced) and by Cerbos (the
                     "decision" lines of its audit log): pdp-cached 1 call and 1 decision for the
                     whole run; pdp-fresh as many calls as Cerbos decisions, no cache hit or
                     coalescing, between the requests answered and the paths handed out (a call
                     whose request wrk abandoned as its run ended counts, but is not allowed).
    upstream tokens  signed: tollgate.upstream_token.sign.signed at least 1 and at most one per
                     worker for the whole run, every other allowed request a reuse
                     (sign.reused); every probe's upstream request carried the same
                     x-tollgate-jwt, which jwcrypto verifies against the JWKS Tollgate serves at
                     /.well-known/tollgate/jwks.json (EdDSA; iss, aud, the caller's sub, orig_iss
                     the caller's issuer, lifetime at most 3600 s), and the caller's
                     Authorization unchanged. exchanged: exactly 1 exchange for the whole run,
                     counted by Tollgate (tollgate.upstream_token.exchange.call) and by the AS
                     (/__rig/stats exchanges.requests), every other allowed request an
                     exchange-cache hit (or coalesced behind that call), nothing refused;
                     every probe's upstream request carried the same exchanged token as its
                     Authorization (jwcrypto against the AS's JWKS: ES256, aud
                     https://next.test, the caller's sub, act {"sub": "tollgate-exchanger"}),
                     x-tollgate-sub the caller's, and no x-tollgate-jwt.
    proofs           DPoP rows: every proof sent once, every request allowed, none refused;
                     and, after the rounds, one proof sent twice is refused the second time
                     (accepted twice by the bench-only build), and on the TLS listener a token
                     bound to another certificate is refused.

Replay store memory (not with --quick): an Envoy of its own, heap (admin /memory) and RSS
before and after 10,000 distinct live proofs, next to 10,000 requests that do not touch the
store, and the arithmetic for the buckets the proofs' ids fall in.

With --concurrency > 1 these checks hold too: a new token that reaches two workers at the same
moment is verified (or introspected) by one; the other waits for its answer in the shared cache
(counter verify_coalesced / introspection.coalesced).

How cost grows (issue 18; bench/curves.py, also alone with --curves): after everything else, in
Envoys of their own, curves of Envoy CPU per request and req/s against distinct tokens in a
Zipf mix, configured issuers, routes and Envoy workers, with once-per-token checks per point;
tables in the report, SVG plots (bench/plot.py) in docs/img (target/bench/img with --quick).

Plugin start: after the rows, bench/configure.py starts an Envoy per configuration (10 and 100
issuers, with inline JWKS of 3 keys each or with discovery) and reports how long on_configure
took.

A row whose probe request is not 200, or where wrk saw any 4xx/5xx or socket error, is marked
FAILED and the command exits 1: a benchmark of refusals measures nothing. --quick runs every row
and check briefly (1 s per row, no warm-up, small token sets) as a smoke test.

The cache is direct-mapped (a token hashing to a taken slot replaces it, and is verified again
when it comes back, unless the worker's own memo (up to 1,024 tokens) still has it), so the
listeners whose counts are checked use cache.max_entries 2^32-1: the chance that two of n tokens
share a slot is about n^2 / 2^33 (1,000 tokens: 1e-4; 2,000: 5e-4).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import ssl
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "rig"))

import envoy  # noqa: E402  (tests/rig)
import configure  # noqa: E402  (bench/configure.py)
import fleet  # noqa: E402  (bench/fleet.py)
import hostcalls  # noqa: E402  (bench/hostcalls.py)
import proofs  # noqa: E402  (bench/proofs.py)
import tokens as rig_tokens  # noqa: E402
from procs import VENV_PY, Proc  # noqa: E402
from servers import OIDC_DIR, RIG, CerbosProc, cerbos_binary, node_binary, start_cerbos  # noqa: E402

from jwcrypto import jwk, jwt  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning, module="jwcrypto")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=__name__)

BENCH = ROOT / "bench"
WORK = ROOT / "target" / "bench"
TOLLGATE_WASM = ROOT / "target" / "tollgate.wasm"
NOOP_DIR = BENCH / "noop"
NOOP_TARGET = ROOT / "target" / "bench-noop"
NOOP_WASM = NOOP_TARGET / "wasm32-wasip1" / "release" / "bench_noop.wasm"
LUA = BENCH / "tokens.lua"
PROOFS_LUA = BENCH / "proofs.lua"
# bench/run's measurement build without the DPoP replay store (scripts/build-wasm
# --bench-skip-replay-store): its row isolates what the store costs per request.
NOREPLAY_WASM = ROOT / "target" / "bench-skip-replay-store" / "tollgate.wasm"
PKI = WORK / "pki"
# DPoP proofs' iat window: Tollgate's default. The pool's proofs are dated so that each replay
# entry lives 1-2 s whatever the window (bench/proofs.py), so there is no need to widen it.
DPOP_WINDOW = 60

ISSUER = "https://issuer.bench.test"
AUDIENCE = "https://api.bench.test"
PATH = "/api/bench"
# Issue 18: the no-op filter's extra host calls per request (bench/noop/src/lib.rs), per listener.
PRICE_TIMES = 40
PRICE_CALLS = {
    "noop-pairs": ["pairs"],
    "noop-clock": ["clock"],
    "noop-shared": ["shared"],
    "noop-metric2": ["metric", "metric"],
    "noop-replace5": ["replace"] * 5,
    "noop-warm": ["pairs", "clock", "shared", "metric", "metric"] + ["replace"] * 5,
    # One call is within a round's noise (±5 µs); forty of a kind price one call to a tenth
    # of a microsecond: (row - no-op) / PRICE_TIMES.
    **{f"noop-{kind}-x{PRICE_TIMES}": [kind] * PRICE_TIMES
       for kind in ("pairs", "clock", "shared", "metric", "replace")},
}
PRICE_ROWS = {
    "noop-pairs": "no-op + every header pair read (1 call)",
    "noop-clock": "no-op + the clock (1 call)",
    "noop-shared": "no-op + a shared-data read (1 call)",
    "noop-metric2": "no-op + 2 counter increments",
    "noop-replace5": "no-op + 5 request headers set",
    "noop-warm": "no-op + all of tollgate warm's 10 host calls",
    f"noop-pairs-x{PRICE_TIMES}": f"no-op + {PRICE_TIMES} header pair reads",
    f"noop-clock-x{PRICE_TIMES}": f"no-op + {PRICE_TIMES} clock reads",
    f"noop-shared-x{PRICE_TIMES}": f"no-op + {PRICE_TIMES} shared-data reads",
    f"noop-metric-x{PRICE_TIMES}": f"no-op + {PRICE_TIMES} counter increments",
    f"noop-replace-x{PRICE_TIMES}": f"no-op + {PRICE_TIMES} request headers set (8 names)",
}
JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
KIDS = {"RS256": "rsa-2048", "PS256": "rsa-2048", "ES256": "p256", "EdDSA": "ed25519"}
MIX_ALG = "RS256"
# cache.max_entries where verifications are counted: the largest allowed, so that two tokens
# sharing a slot (which evicts one, and verifies it again) is unlikely (see the docstring).
MAX_SLOTS = 4294967295

# The real AS for opaque tokens: django-oauth-toolkit from tests/rig (README there). Its
# client_credentials tokens for dot-opaque are opaque ("dot_" + 30 characters) and live 3600 s,
# longer than any bench run; rs-client may introspect them.
DOT_CLIENT = ("dot-opaque", "dot-opaque-secret")
DOT_INTROSPECTOR = ("rs-client", "rs-secret")
DOT_INTROSPECT_PATH = "/o/introspect/"

# Issue 16, policy decisions: the rig's Cerbos (tests/rig/servers.start_cerbos; policies
# tests/rig/pdp/policies, where the owner of a document may read it) on 127.0.0.1, reached
# through the Envoy cluster "cerbos". The warm RS256 token's subject owns the documents asked
# about, so every decision is true.
PDP_PREFIX = "/api/docs/"
WARM_SUB = "user-warm-0"  # the sub of mint(keys, alg, 1, "-warm")
PDP_CACHED_PATH = f"{PDP_PREFIX}{WARM_SUB}/bench-doc"
PDP_TTL_S = 3600  # longer than any run: the cached row's one decision lives through all rounds
PDP_TIMEOUT_MS = 1000
PDP_CACHED_ROW = "pdp-cached RS256 (warm JWT, one cached decision)"
PDP_FRESH_ROW = "pdp-fresh RS256 (warm JWT, a new document each request)"

# Issue 17, what the upstream receives. tg-signed: the gateway signs a backend token (Ed25519,
# a private JWK the bench makes) for the warm RS256 token; lifetime_s 3600 (the most), so the
# one signed token is reused through every round (a worker reuses it until a quarter of its
# lifetime is left). tg-exchanged: the caller's token, from the rig's oidc-provider (AS-1), is
# exchanged there (RFC 8693) for one meant for https://next.test/api, cached for the run
# (max_ttl_s 3600; the AS's user access tokens live 3600 s, the exchanged one no longer).
SIGNED_ROW = "signed backend token, warm RS256"
EXCHANGED_ROW = "exchanged token, warm (cached exchange)"
# The exchanged row's token on the same issuer without upstream_token: what the exchange adds,
# apart from the token being another issuer's (its label has "exchanged token", so --only picks it)
AS1_WARM_ROW = "warm AS-1 token, no exchange (reference of the exchanged token row)"
GATEWAY_ISSUER = "https://gateway.bench.test"
SIGN_AUDIENCE = "bench-upstream"
SIGN_LIFETIME_S = 3600
BACKEND_HEADER = "x-tollgate-jwt"
AS1_RESOURCE = "https://api.test/jwt"  # RS256 access tokens, aud https://api.test
AS1_AUDIENCE = "https://api.test"
AS1_LOGIN = "bench-user"
EXCHANGER = ("tollgate-exchanger", "tollgate-exchanger-secret")
EXCHANGE_RESOURCE = "https://next.test/api"  # ES256 tokens, aud https://next.test
EXCHANGE_AUDIENCE = "https://next.test"
EXCHANGE_TTL_S = 3600
# Where the probe of an upstream-token row goes: the listener routes this prefix to the cluster
# upstream-echo, a direct_response like the upstream whose answer repeats, as response headers
# x-bench-saw-<name>, the request headers ECHOED it received; every other request goes to the
# plain upstream, exactly as on tg-warm.
ECHO_PREFIX = "/__bench_echo"
ECHOED = ("authorization", BACKEND_HEADER, "x-tollgate-sub")


# --- keys and tokens ----------------------------------------------------------------------------

def make_keys() -> dict[str, jwk.JWK]:
    return {
        "rsa-2048": jwk.JWK.generate(kty="RSA", size=2048, kid="rsa-2048"),
        "p256": jwk.JWK.generate(kty="EC", crv="P-256", kid="p256"),
        "ed25519": jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="ed25519"),
    }


def public_jwks(keys: dict[str, jwk.JWK]) -> dict:
    # No "alg" on the RSA key: the same key signs RS256 and PS256 tokens.
    return {"keys": [json.loads(k.export_public()) | {"use": "sig"} for k in keys.values()]}


def mint(keys: dict[str, jwk.JWK], alg: str, n: int, tag: str = "", extra: dict | None = None) -> list[str]:
    """n distinct valid access tokens (distinct jti and sub), valid for a day; extra: more claims
    (e.g. a cnf binding the token to a DPoP key or a client certificate)."""
    key = keys[KIDS[alg]]
    now = int(time.time())
    out = []
    for i in range(n):
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": f"user{tag}-{i}", "client_id": "bench-client",
            "scope": "read", "iat": now - 10, "exp": now + 86400,
            "jti": f"{alg}{tag}-{i}-{os.urandom(6).hex()}",
        } | (extra or {})
        token = jwt.JWT(header={"alg": alg, "kid": key.key_id, "typ": "at+jwt"}, claims=claims)
        token.make_signed_token(key)
        out.append(token.serialize())
    return out


def token_sub(token: str) -> str:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]


def zipf_sequence(pool: list[str], length: int, s: float, seed: int) -> list[str]:
    """length requests over pool: the token of rank k (pool order) drawn with weight 1/k^s.
    A token the draw missed replaces one draw of a token drawn more than once, so every token
    of the pool is in the sequence (the mix has exactly len(pool) distinct tokens)."""
    rng = random.Random(seed)
    weights = [1.0 / (k ** s) for k in range(1, len(pool) + 1)]
    idx = rng.choices(range(len(pool)), weights=weights, k=max(length, len(pool)))
    count = Counter(idx)
    for m in sorted(set(range(len(pool))) - count.keys()):
        while True:
            j = rng.randrange(len(idx))
            if count[idx[j]] > 1:
                break
        count[idx[j]] -= 1
        idx[j], count[m] = m, 1
    return [pool[i] for i in idx]


def dot_tokens(base: str, n: int) -> list[str]:
    """n opaque access tokens from the DOT AS (client_credentials, scope read)."""
    return [rig_tokens.client_credentials(f"{base}/o/token/", *DOT_CLIENT, scope="read")["access_token"]
            for _ in range(n)]


# --- Envoy configuration ------------------------------------------------------------------------

def router() -> dict:
    return {"name": "envoy.filters.http.router", "typed_config": {"@type": envoy.ROUTER_TYPE}}


def listener(name: str, port: int, http_filters: list[dict], route: dict, tls: bool = False,
             first: list[dict] | None = None) -> dict:
    """tls: the listener ends TLS and requires a client certificate of the bench's test CA
    (bench/proofs.py test_pki), and takes HTTP/1.0 (ab, the load generator of these rows, sends
    HTTP/1.0 keep-alive requests). first: Envoy routes tried before the catch-all one."""
    hcm = {
        "@type": envoy.HCM_TYPE,
        "stat_prefix": name,
        "codec_type": "AUTO",
        "route_config": {
            "name": name,
            "virtual_hosts": [{"name": "all", "domains": ["*"],
                               "routes": (first or []) + [{"name": name, "match": {"prefix": "/"}, **route}]}],
        },
        "http_filters": http_filters + [router()],
    }
    chain: dict = {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
    if tls:
        hcm["http_protocol_options"] = {"accept_http_10": True}
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": True,
                "common_tls_context": {
                    "tls_certificates": [{"certificate_chain": {"filename": str(PKI / "server.pem")},
                                          "private_key": {"filename": str(PKI / "server.key")}}],
                    "validation_context": {"trusted_ca": {"filename": str(PKI / "ca.pem")}},
                },
            },
        }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [chain],
    }


def tollgate_config(jwks: dict, name: str, cache_entries: int | None, **issuer: dict) -> dict:
    """issuer: more keys of the issuer (dpop, mtls)."""
    cfg: dict = {
        "issuers": [{
            "name": name, "issuer": ISSUER, "jwks": {"inline": jwks}, "audiences": [AUDIENCE],
            "algorithms": sorted(set(KIDS)), **issuer,
        }],
        "routes": [{"name": "api", "match": {"prefix": "/"}, "require": {}}],
    }
    if cache_entries is not None:
        cfg["cache"] = {"max_entries": cache_entries}
    return cfg


def tollgate_opaque_config(dot_port: int) -> dict:
    """Opaque dot_ tokens introspected at the DOT AS through the as-dot cluster. The answer is
    cached until the token's exp (max_ttl_s above DOT's 3600 s lifetime), so a run introspects
    each token once."""
    base = f"http://127.0.0.1:{dot_port}"
    return {
        "issuers": [{
            "name": "dot", "issuer": f"{base}/o",
            "introspection": {
                "endpoint": f"{base}{DOT_INTROSPECT_PATH}", "upstream": "as-dot",
                "client_id": DOT_INTROSPECTOR[0], "client_secret": DOT_INTROSPECTOR[1],
                "timeout_ms": 5000, "max_ttl_s": 7200,
            },
            "opaque_tokens": {"prefixes": ["dot_"]},
        }],
        "routes": [{"name": "api", "match": {"prefix": "/"}, "require": {}}],
        "cache": {"max_entries": MAX_SLOTS},
    }


def tollgate_pdp_config(jwks: dict, name: str, cerbos_port: int) -> dict:
    """Tollgate with the warm rows' issuer and one route, named `name`, whose requests the PDP
    (Cerbos, through the cerbos cluster) must allow: GET /api/docs/{owner}/{id} asks whether
    the token's sub may read document {id} owned by {owner}. A true decision is kept
    PDP_TTL_S (an hour, past the run's end); the cache is Tollgate's default (4,096 slots)."""
    cfg = tollgate_config(jwks, name, None)
    cfg["pdps"] = {"cerbos": {"url": f"http://127.0.0.1:{cerbos_port}/access/v1/evaluation",
                              "upstream": "cerbos", "timeout_ms": PDP_TIMEOUT_MS}}
    cfg["routes"] = [{"name": name, "match": {"prefix": PDP_PREFIX}, "require": {"authorize": {
        "pdp": "cerbos",
        "subject": {"type": "user", "id_claim": "sub"},
        "resource": {"type": "document", "path": PDP_PREFIX + "{owner}/{id}", "id": "{id}",
                     "properties": {"owner": "{owner}"}},
        "actions": {"GET": "read"},
        "context": ["issuer", "scopes"],
        "ttl_s": PDP_TTL_S, "negative_ttl_s": 10,
    }}}]
    return cfg


def tollgate_signed_config(jwks: dict, name: str, backend_key: jwk.JWK) -> dict:
    """tg-warm's issuer and cache, plus the gateway's backend_token (one Ed25519 private JWK,
    so it is the active key) and the route's upstream_token sign: every allowed request's
    upstream gets x-tollgate-jwt, a token the gateway signed for the caller's token, reused
    per worker (lifetime SIGN_LIFETIME_S, so one signature serves the whole run)."""
    cfg = tollgate_config(jwks, name, None)
    cfg["backend_token"] = {"issuer": GATEWAY_ISSUER, "keys": [backend_key.export_private(as_dict=True)]}
    cfg["routes"][0]["require"] = {"upstream_token": {"sign": {"audience": SIGN_AUDIENCE,
                                                                "lifetime_s": SIGN_LIFETIME_S}}}
    return cfg


def tollgate_exchanged_config(name: str, oidc_port: int, exchange: bool = True) -> dict:
    """AS-1, the rig's oidc-provider, as the only issuer (keys by OIDC discovery through the
    Envoy cluster as-oidc, refreshed once a day: nothing fetched while other rows run), with
    its token_exchange (tollgate-exchanger, client_secret_basic); the route exchanges every
    caller token for one meant for EXCHANGE_RESOURCE, cached up to EXCHANGE_TTL_S (exchange
    False: the same issuer, the route without upstream_token)."""
    base = f"http://127.0.0.1:{oidc_port}"
    cfg = {
        "issuers": [{
            "name": name, "issuer": base,
            "jwks": {"discovery": True, "upstream": "as-oidc"},
            "audiences": [AS1_AUDIENCE], "algorithms": ["RS256", "PS256", "ES256", "EdDSA"],
            "require_at_jwt": True, "refresh_interval_s": 86400,
            "token_exchange": {"endpoint": f"{base}/token", "upstream": "as-oidc",
                               "client_id": EXCHANGER[0], "client_secret": EXCHANGER[1], "timeout_ms": 5000},
        }],
        "routes": [{"name": "api", "match": {"prefix": "/"}, "require": {"upstream_token": {
            "exchange": {"resource": EXCHANGE_RESOURCE, "max_ttl_s": EXCHANGE_TTL_S}}}}],
    }
    if not exchange:
        cfg["routes"][0]["require"] = {}
    return cfg


# The identity native jwt_authn forwards in the "claim headers" row: the four claims Tollgate's
# default identity headers carry (Tollgate adds a fifth, its issuer's configured name, which
# the listener's route adds here as a fixed header).
CLAIM_HEADERS = [{"header_name": f"x-jwt-{c.replace('_', '-')}", "claim_name": c}
                 for c in ("sub", "client_id", "scope", "iss")]


def jwt_authn(jwks: dict, cache_size: int | None, claim_headers: bool = False) -> dict:
    provider: dict = {
        "issuer": ISSUER, "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": json.dumps(jwks)}, "forward": True,
    }
    if cache_size:
        provider["jwt_cache_config"] = {"jwt_cache_size": cache_size}
    if claim_headers:
        provider["claim_to_headers"] = CLAIM_HEADERS
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": JWT_AUTHN_TYPE,
            "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def bootstrap(ports: dict[str, int], admin_port: int, jwks: dict, mix_cache: int, dot_port: int | None,
              baseline: Path | None = None, cerbos_port: int | None = None, backend_key: jwk.JWK | None = None,
              oidc_port: int | None = None) -> dict:
    """Listeners for the names in ports (only what the selected rows need)."""
    to_upstream = {"route": {"cluster": "upstream", "timeout": "15s"}}

    def wasm(path: Path, cfg: dict, vm_id: str) -> dict:
        return envoy.wasm_filter(path, cfg, vm_id=vm_id)  # own vm_id: own VM and shared data

    def filters(name: str) -> list[dict]:
        if name == "passthrough":
            return []
        if name == "noop":
            return [wasm(NOOP_WASM, {}, "noop")]
        if name.startswith("noop-"):  # issue 18: the no-op plus host calls (PRICE_ROWS)
            return [wasm(NOOP_WASM, {"calls": PRICE_CALLS[name]}, name)]
        if name == "tg-warm":
            return [wasm(TOLLGATE_WASM, tollgate_config(jwks, "warm", None), "tollgate-warm")]
        if name == "tg-warm-bare":
            cfg = tollgate_config(jwks, "warmbare", None)
            cfg["identity"] = {"headers": {}, "issuer_name_header": None}
            return [wasm(TOLLGATE_WASM, cfg, "tollgate-warm-bare")]
        if name == "tg-cold":
            return [wasm(TOLLGATE_WASM, tollgate_config(jwks, "cold", 0), "tollgate-cold")]
        if name == "base-warm" and baseline is not None:
            return [wasm(baseline, tollgate_config(jwks, "bwarm", None), "baseline-warm")]
        if name == "base-cold" and baseline is not None:
            return [wasm(baseline, tollgate_config(jwks, "bcold", 0), "baseline-cold")]
        if name == "tg-mix":
            return [wasm(TOLLGATE_WASM, tollgate_config(jwks, "mix", MAX_SLOTS), "tollgate-mix")]
        if name.startswith("tg-once-"):
            return [wasm(TOLLGATE_WASM, tollgate_config(jwks, "once", MAX_SLOTS), f"tollgate-{name[3:]}")]
        if name in ("tg-dpop", "tg-dpop-noreplay", "base-dpop"):
            # DPoP allowed (the default) with Tollgate's default window; the token's cnf.jkt
            # makes it required for that token. The cache is on: the token is verified once.
            cfg = tollgate_config(jwks, name.replace("tg-", "").replace("-", ""), None,
                                  dpop={"mode": "allowed", "iat_window_s": DPOP_WINDOW})
            module = {"tg-dpop": TOLLGATE_WASM, "tg-dpop-noreplay": NOREPLAY_WASM, "base-dpop": baseline}[name]
            assert module is not None
            return [wasm(module, cfg, f"tollgate-{name}")]
        if name == "tls-passthrough":
            return []
        if name == "tg-tls":
            # Certificate-bound tokens allowed; the certificate from Envoy's own TLS connection
            # (sender_constraint.client_certificate's default, {"from": "connection"}).
            cfg = tollgate_config(jwks, "tls", None, mtls={"mode": "allowed"})
            cfg["sender_constraint"] = {"client_certificate": {"from": "connection"}}
            return [wasm(TOLLGATE_WASM, cfg, "tollgate-tls")]
        if name == "tg-opaque":
            assert dot_port is not None
            return [wasm(TOLLGATE_WASM, tollgate_opaque_config(dot_port), "tollgate-opaque")]
        if name in ("tg-pdp-cached", "tg-pdp-fresh"):
            assert cerbos_port is not None
            return [wasm(TOLLGATE_WASM, tollgate_pdp_config(jwks, name[3:].replace("-", ""), cerbos_port),
                         f"tollgate-{name[3:]}")]
        if name == "tg-signed":
            assert backend_key is not None
            return [wasm(TOLLGATE_WASM, tollgate_signed_config(jwks, "signed", backend_key), "tollgate-signed")]
        if name == "tg-exchanged":
            assert oidc_port is not None
            return [wasm(TOLLGATE_WASM, tollgate_exchanged_config("exch", oidc_port), "tollgate-exchanged")]
        if name == "tg-as1":
            assert oidc_port is not None
            return [wasm(TOLLGATE_WASM, tollgate_exchanged_config("as1warm", oidc_port, exchange=False), "tollgate-as1")]
        if name == "jwt-nocache":
            return [jwt_authn(jwks, None)]
        if name == "jwt-cache":
            return [jwt_authn(jwks, 1000)]
        if name == "jwt-cache-claims":
            return [jwt_authn(jwks, 1000, claim_headers=True)]
        if name == "jwt-mix":
            return [jwt_authn(jwks, mix_cache)]
        raise ValueError(name)

    ok = {"direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}
    listeners = [listener("upstream", ports["upstream"], [], ok)]
    # The upstream-token rows' probe: the same answer, plus the request headers it received.
    echo_to = [{"name": "echo", "match": {"prefix": ECHO_PREFIX},
                "route": {"cluster": "upstream-echo", "timeout": "15s"}}]
    if "upstream-echo" in ports:
        listeners += [listener("upstream-echo", ports["upstream-echo"], [], ok | {"response_headers_to_add": [
            {"header": {"key": f"x-bench-saw-{h}", "value": f"%REQ({h})%"}} for h in ECHOED]})]
    # The fifth identity header, as Tollgate's issuer-name header: a fixed value the route adds.
    claims_route = {**to_upstream, "request_headers_to_add": [
        {"header": {"key": "x-jwt-issuer", "value": "bench"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}
    listeners += [listener(name, port, filters(name), claims_route if name == "jwt-cache-claims" else to_upstream,
                           tls=name in TLS_LISTENERS,
                           first=echo_to if name in ECHO_LISTENERS else None)
                  for name, port in ports.items() if name not in ("upstream", "upstream-echo")]
    clusters = [envoy._cluster("upstream", ports["upstream"])]
    if "upstream-echo" in ports:
        clusters.append(envoy._cluster("upstream-echo", ports["upstream-echo"]))
    if oidc_port is not None and ("tg-exchanged" in ports or "tg-as1" in ports):
        clusters.append(envoy._cluster("as-oidc", oidc_port))
    if dot_port is not None:
        # The AS is Django's threaded dev server (listen backlog 10): a burst of first-seen tokens
        # on several workers would open more connections at once than it accepts, and dropped SYNs
        # are retried after 1 s, Envoy's default connect timeout here. So, as one would for a
        # real AS: at most 8 connections (more calls wait in Envoy's queue) and a longer timeout.
        as_dot = envoy._cluster("as-dot", dot_port)
        as_dot["connect_timeout"] = "5s"
        as_dot["circuit_breakers"] = {"thresholds": [{"max_connections": 8, "max_pending_requests": 1024}]}
        clusters.append(as_dot)
    if cerbos_port is not None and any(n.startswith("tg-pdp-") for n in ports):
        clusters.append(envoy._cluster("cerbos", cerbos_port))
    return {
        "node": {"id": "tollgate-bench", "cluster": "tollgate-bench"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


# --- scenarios ----------------------------------------------------------------------------------

@dataclass
class Row:
    label: str
    listener: str
    tokens: str  # token set name (file target/bench/tokens-<name>.txt), cycled by wrk
    native: str | None = None  # label of the native row this one is compared with
    baseline: str | None = None  # label of the --baseline module's row this one is compared with
    issuer: str | None = None  # Tollgate issuer whose counters this row moves (None: not Tollgate)
    check: str | None = None  # "once": one verification per distinct token; "every": cache off
    probe: str | None = None  # token set whose first token probes the row (default: tokens)
    opaque: bool = False  # introspected at the AS: also count its introspections
    ref: str | None = None  # label of the row of the same run this one is compared with ("vs ref")
    # "wrk": tokens.lua; "dpop": proofs.lua with a fresh proof pool per wrk run; "ab": ab over
    # the TLS listener with the bench's client certificate (wrk has no client certificates)
    driver: str = "wrk"
    path: str = PATH  # the request path (wrk's URL, the probe's)
    # Issue 16: the route whose authz counters this row moves (tollgate.route.<pdp_route>.authz.*);
    # unique_path: every request (and probe) goes to a path of its own under `path`, so each
    # asks the PDP a new question
    pdp_route: str | None = None
    unique_path: bool = False
    questions: int = 0  # unique_path rows: paths handed out (probes and wrk's request() calls)
    # Issue 17: "sign" or "exchange": the row moves tollgate.upstream_token.* too, and its probes
    # go through ECHO_PREFIX; seen: the ECHOED headers the upstream received, per probe
    upstream: str | None = None
    seen: list[dict] = field(default_factory=list)
    answered: int = 0  # unique_path rows: requests answered (probes and wrk's completed requests)
    per_slot: int = 0  # dpop rows: proofs per second of the next pool
    proofs_sent: int = 0  # dpop rows: proofs handed to wrk, over all runs
    proofs_skipped: int = 0  # dpop rows: proofs of seconds that passed unused
    rounds: list[dict] = field(default_factory=list)
    result: dict | None = None
    error: str | None = None
    issued: int = 0  # the furthest any wrk run of this row got into its token file
    delta: Counter = field(default_factory=Counter)  # counter increments during this row


@dataclass
class OnceCheck:
    """After the rounds: a cold set sent twice over to a cache-on listener."""

    label: str
    listener: str
    tokens: str


@dataclass
class Check:
    label: str
    ok: bool | None  # None: information only
    text: str

    def line(self) -> str:
        mark = {True: "OK", False: "FAILED", None: "info"}[self.ok]
        return f"{mark}: {self.label}: {self.text}"


TLS_LISTENERS = ("tls-passthrough", "tg-tls")
ECHO_LISTENERS = ("tg-signed", "tg-exchanged")  # probed through ECHO_PREFIX (upstream-echo)
DPOP_ROW = "dpop-es256-cached (DPoP-bound ES256, fresh proof each request)"
# The replay store's bucket count, as crates/tollgate-core/src/flow/replay.rs defines it.
REPLAY_BUCKETS = int(re.search(r"pub const BUCKETS: u32 = ([0-9_]+);",
                               (ROOT / "crates/tollgate-core/src/flow/replay.rs").read_text())
                     .group(1).replace("_", ""))
NOREPLAY_ROW = "dpop-es256-cached, replay store skipped (bench-only build)"
NATIVE_CLAIMS_ROW = "native jwt_authn + cache, warm RS256, identity as claim headers"
TLS_FLOOR_ROW = "mtls passthrough (router only, TLS + client cert)"
TLS_WARM_ROW = "mtls warm ES256, unbound token (TLS + client cert)"
MTLS_ROW = "mtls-cached (certificate-bound ES256, cnf x5t#S256)"


def scenarios(algs: list[str], mix_tokens: int, opaque_tokens: int, baseline: bool = False,
              noreplay: bool = True) -> list[Row]:
    native_mix = f"native jwt_authn + cache, Zipf mix {MIX_ALG}"
    rows = [
        Row("passthrough (router only)", "passthrough", "warm-RS256"),
        Row("no-op wasm (reads 1 header)", "noop", "warm-RS256"),
    ]
    rows += [Row(f"native jwt_authn + cache, warm {a}", "jwt-cache", f"warm-{a}") for a in ("RS256", "ES256")]
    # Issue 18: native with the same identity forwarded as Tollgate's default identity headers
    # (four claim_to_headers and a fixed fifth header): the reference of tollgate warm RS256's CPU.
    rows += [Row(NATIVE_CLAIMS_ROW, "jwt-cache-claims", "warm-RS256")]
    rows += [Row(f"native jwt_authn no cache, {a}", "jwt-nocache", f"cold-{a}") for a in algs]
    rows += [Row(native_mix, "jwt-mix", "mix")]
    if baseline:
        rows += [Row(f"baseline .wasm warm {a}", "base-warm", f"warm-{a}", issuer="bwarm", check="once")
                 for a in ("RS256", "ES256")]
        rows += [Row(f"baseline .wasm cold {a}", "base-cold", f"cold-{a}", issuer="bcold", check="every")
                 for a in algs]
    rows += [Row(f"tollgate warm {a}", "tg-warm", f"warm-{a}", native=f"native jwt_authn + cache, warm {a}",
                 baseline=f"baseline .wasm warm {a}" if baseline else None, issuer="warm", check="once",
                 ref=NATIVE_CLAIMS_ROW if a == "RS256" else None)
             for a in ("RS256", "ES256")]
    # The same hit without identity headers: what Tollgate's decision costs, apart from the work
    # of forwarding five more request headers (the upstream parses them too).
    rows += [Row("tollgate warm RS256, no identity headers", "tg-warm-bare", "warm-RS256",
                 native="native jwt_authn + cache, warm RS256", issuer="warmbare", check="once")]
    rows += [Row(f"tollgate cold {a}", "tg-cold", f"cold-{a}", native=f"native jwt_authn no cache, {a}",
                 baseline=f"baseline .wasm cold {a}" if baseline else None, issuer="cold", check="every")
             for a in algs]
    rows += [Row(f"tollgate Zipf mix {MIX_ALG} ({mix_tokens:,} tokens)", "tg-mix", "mix", native=native_mix,
                 issuer="mix", check="once")]
    # Opaque rows probe with a token of their own, so that their tokens are first seen under
    # load (wrk's 16 connections): with one token that is 16 concurrent first requests, which
    # single-flight must turn into one introspection (across workers too).
    # Issue 18: a warm introspected token against the same bound as a warm JWT (native jwt_authn
    # cached, the same identity as claim headers).
    rows += [Row("tollgate opaque (DOT introspection), 1 token", "tg-opaque", "opaque-1", issuer="dot",
                 check="once", probe="opaque-probe-1", opaque=True, ref=NATIVE_CLAIMS_ROW),
             Row(f"tollgate opaque (DOT introspection), {opaque_tokens} tokens", "tg-opaque", "opaque-set",
                 issuer="dot", check="once", probe="opaque-probe-set", opaque=True)]
    # Issue 15, sender-constrained tokens. DPoP: one DPoP-bound token (verified once, then a
    # cache hit) with a fresh proof per request, each proof verified (one ES256 verification):
    # compared with cold ES256 (one verification per request). The same row on the bench-only
    # build without the replay store isolates the store's cost. mTLS: over a TLS listener that
    # requires a client certificate, driven by ab (wrk sends none); the certificate-bound token
    # is compared with an unbound one on the same listener.
    if baseline:
        rows += [Row("baseline .wasm dpop-es256-cached", "base-dpop", "dpop-ES256", issuer="basedpop", check="once",
                     driver="dpop")]
    rows += [Row(DPOP_ROW, "tg-dpop", "dpop-ES256", issuer="dpop", check="once",
                 ref="tollgate cold ES256", driver="dpop",
                 baseline="baseline .wasm dpop-es256-cached" if baseline else None)]
    if noreplay:
        rows += [Row(NOREPLAY_ROW, "tg-dpop-noreplay", "dpop-ES256", issuer="dpopnoreplay", check="once",
                     ref=DPOP_ROW, driver="dpop")]
    # Issue 16, policy decisions (Cerbos): the warm RS256 token on a route whose PDP must allow
    # each request; once with one question, decided once and then from the decision cache
    # (vs ref: tollgate warm RS256, the same token without the PDP), and once with a new
    # document id in every request's path, so every request is a question the PDP answers.
    rows += [Row(PDP_CACHED_ROW, "tg-pdp-cached", "warm-RS256", issuer="pdpcached", check="once",
                 ref="tollgate warm RS256", path=PDP_CACHED_PATH, pdp_route="pdpcached"),
             Row(PDP_FRESH_ROW, "tg-pdp-fresh", "warm-RS256", issuer="pdpfresh", check="once",
                 ref="tollgate warm RS256", path=f"{PDP_PREFIX}{WARM_SUB}/", pdp_route="pdpfresh",
                 unique_path=True)]
    # Issue 17, what the upstream receives: the warm RS256 token with a backend token the
    # gateway signed once and then reuses; and a token of the rig's oidc-provider (RS256, so
    # against the same warm row) exchanged there once, then from the exchange cache.
    rows += [Row(SIGNED_ROW, "tg-signed", "warm-RS256", issuer="signed", check="once",
                 ref="tollgate warm RS256", upstream="sign"),
             Row(AS1_WARM_ROW, "tg-as1", "as1-user", issuer="as1warm", check="once", ref="tollgate warm RS256"),
             Row(EXCHANGED_ROW, "tg-exchanged", "as1-user", issuer="exch", check="once",
                 ref="tollgate warm RS256", upstream="exchange")]
    # Issue 18, the price of each host call in this Envoy: the no-op filter making, on every
    # request, the host calls of Tollgate's warm path (bench/hostcalls.py), one kind per row and
    # then all of them (vs ref: the no-op). Tollgate warm minus "all of them" is what Tollgate's
    # own code costs on a hit.
    rows += [Row(label, listener, "warm-RS256", ref="no-op wasm (reads 1 header)")
             for listener, label in PRICE_ROWS.items()]
    rows += [Row(TLS_FLOOR_ROW, "tls-passthrough", "warm-ES256", driver="ab"),
             Row(TLS_WARM_ROW, "tg-tls", "warm-ES256", issuer="tls", check="once", ref=TLS_FLOOR_ROW, driver="ab"),
             Row(MTLS_ROW, "tg-tls", "mtls-ES256", issuer="tls", check="once", ref=TLS_WARM_ROW, driver="ab")]
    return rows


def once_checks(algs: list[str]) -> list[OnceCheck]:
    return [OnceCheck(f"tollgate cold {a} set x2, cache on", f"tg-once-{a}", f"cold-{a}") for a in algs]


# --- running ------------------------------------------------------------------------------------

_wrk: subprocess.Popen | None = None


def probe(port: int, token: str, *, dpop_key: proofs.ProofKey | None = None, tls: bool = False,
          path: str = PATH) -> int:
    """One request with token (and, for a DPoP row, a fresh proof of its own; for a TLS row,
    over TLS with the bench's client certificate); its status."""
    headers = {"Authorization": f"Bearer {token}"}
    if dpop_key is not None:
        proof = dpop_key.proof(htm="GET", htu=f"http://127.0.0.1:{port}{PATH}", token=token,
                               iat=int(time.time()), jti=f"probe-{os.urandom(8).hex()}")
        headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    return status_of(port, headers, tls=tls, path=path)


def client_tls() -> ssl.SSLContext:
    """TLS as the bench's client: the test CA, the client certificate and its key."""
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.pem"))
    ctx.load_cert_chain(str(PKI / "client.pem"))
    return ctx


def run_wrk(port: int, token_file: Path, seconds: int, connections: int, path: str = PATH,
            unique: str | None = None) -> dict:
    """wrk -t1 -cN -dS with tokens.lua; returns the JSON line the script's done() prints.
    unique: a path prefix; each request then goes to unique + its number (tokens.lua)."""
    global _wrk
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(LUA),
            f"http://127.0.0.1:{port}{path}", "--", str(token_file)] + ([unique] if unique else [])
    _wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = _wrk.communicate()
    rc, _wrk = _wrk.returncode, None
    m = re.search(r"^BENCH (\{.*\})$", out, re.M)
    if rc != 0 or not m:
        raise RuntimeError(f"wrk failed (rc {rc}):\n{out}")
    return json.loads(m.group(1))


_proof_speed = [5000.0]  # proofs per second the last pool was made at (a guess at first)


def run_dpop(r: Row, port: int, token_file: Path, token: str, key: proofs.ProofKey, seconds: int,
             connections: int) -> dict:
    """wrk with proofs.lua and a pool made now for this run: r.per_slot proofs for each second
    from now until the run's end (plus the seconds the pool takes to make, and a margin), every
    jti new (bench/proofs.py). The JSON line of proofs.lua; "exhausted" > 0 if the pool ran out."""
    global _wrk
    pool = WORK / f"proofs-{r.listener}.txt"
    htu = f"http://127.0.0.1:{port}{PATH}"
    t0 = time.monotonic()
    # The pool covers the seconds it takes to make (twice the estimate at the speed seen last
    # time, plus 2) and the run's (plus 3); the slots that pass while it is made are skipped by
    # proofs.lua. If making it took longer still, slots are added until the run's are all ahead.
    lead = 2 + int(2 * r.per_slot * (seconds + 3) / _proof_speed[0])
    first = int(time.time())
    made, last = 0, first - 1
    while last < int(time.time()) + seconds + 3:
        if made and time.monotonic() - t0 > 120:
            raise RuntimeError(f"proof pool: {r.per_slot:,} proofs per second cannot be made in time")
        n = lead + seconds + 3 if made == 0 else int(time.time()) + seconds + 3 - last + lead
        made += proofs.pool_in_subprocess(pool, key, htm="GET", htu=htu, token=token, window=DPOP_WINDOW,
                                          first_slot=last + 1, seconds=n, per_slot=r.per_slot, append=made > 0)
        last += n
    made_s = time.monotonic() - t0
    _proof_speed[0] = max(2000.0, made / made_s)
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(PROOFS_LUA),
            f"http://127.0.0.1:{port}{PATH}", "--", str(token_file), str(pool)]
    _wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = _wrk.communicate()
    rc, _wrk = _wrk.returncode, None
    m = re.search(r"^BENCH (\{.*\})$", out, re.M)
    if rc != 0 or not m:
        raise RuntimeError(f"wrk failed (rc {rc}):\n{out}")
    x = json.loads(m.group(1))
    x["pool"], x["pool_s"] = made, made_s
    return x


def run_ab(port: int, token: str, seconds: int, connections: int) -> dict:
    """ab -k over TLS with the bench's client certificate (-E) for `seconds`; the same keys as
    tokens.lua's JSON line. ab ends early once it has sent -n requests; its own time is used."""
    global _wrk
    argv = ["ab", "-k", "-q", "-c", str(connections), "-t", str(seconds), "-n", str(max(50000, 20000 * seconds)),
            "-s", "5", "-E", str(PKI / "client.pem"), "-H", f"Authorization: Bearer {token}",
            f"https://127.0.0.1:{port}{PATH}"]
    _wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = _wrk.communicate()
    rc, _wrk = _wrk.returncode, None

    def num(pattern: str, default: float | None = None) -> float:
        m = re.search(pattern, out, re.M)
        if m:
            return float(m.group(1))
        if default is None:
            raise RuntimeError(f"ab (rc {rc}): no match for {pattern!r}:\n{out}")
        return default

    if rc != 0:
        raise RuntimeError(f"ab failed (rc {rc}):\n{out}")
    complete = int(num(r"^Complete requests:\s+(\d+)"))
    failed = int(num(r"^Failed requests:\s+(\d+)"))
    keepalive = int(num(r"^Keep-Alive requests:\s+(\d+)", 0))
    return {
        "requests": complete,
        "duration_us": int(num(r"^Time taken for tests:\s+([\d.]+) seconds") * 1e6),
        "p50_us": int(num(r"^\s+50%\s+(\d+)") * 1000), "p99_us": int(num(r"^\s+99%\s+(\d+)") * 1000),
        "status_errors": int(num(r"^Non-2xx responses:\s+(\d+)", 0)),
        "connect": int(num(r"Connect: (\d+)", 0)), "read": int(num(r"Receive: (\d+)", 0)),
        "write": int(num(r"^Write errors:\s+(\d+)", 0)) + int(num(r"Length: (\d+)", 0)),
        "timeout": int(num(r"Exceptions: (\d+)", 0)), "failed": failed,
        "issued": complete, "reconnects": complete - keepalive,
    }


def drive(port: int, seq: list[str], connections: int, headers=None) -> Counter:
    """Sends seq in order over `connections` keep-alive connections (each takes the next token
    when its previous request is answered); returns the count of each status (0: no answer).
    headers: the request headers for an item of seq (default: it is a Bearer token)."""
    headers = headers or (lambda token: {"Authorization": f"Bearer {token}"})
    lock = threading.Lock()
    statuses: Counter = Counter()
    it = iter(seq)

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            while True:
                with lock:
                    token = next(it, None)
                if token is None:
                    return
                try:
                    conn.request("GET", PATH, headers=headers(token))
                    resp = conn.getresponse()
                    resp.read()
                    status = resp.status
                except (OSError, http.client.HTTPException):
                    conn.close()
                    status = 0
                with lock:
                    statuses[status] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(timeout=0.2)  # stays interruptible (Ctrl-C / SIGTERM)
    return statuses


def counters(admin_port: int, regex: str) -> dict[str, int]:
    """Counters whose full Envoy name matches regex, keyed like envoy.stats() (no wasmcustom.)."""
    q = urllib.parse.urlencode({"format": "json", "filter": regex})
    status, body = envoy.admin_get(admin_port, f"/stats?{q}", timeout=5)
    if status != 200:
        raise RuntimeError(f"admin /stats answered {status}")
    out = {}
    for s in json.loads(body).get("stats", []):
        if "value" in s:
            name = s["name"]
            out[name[len(envoy.WASM_CUSTOM):] if name.startswith(envoy.WASM_CUSTOM) else name] = int(s["value"])
    return out


def as_introspections(dot_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{dot_port}/__rig/stats", timeout=5) as r:
        return int(json.load(r)["requests"].get(DOT_INTROSPECT_PATH, 0))


def as_exchanges(oidc_port: int) -> int:
    """Token exchange requests oidc-provider served (its /__rig/stats exchanges.requests)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{oidc_port}/__rig/stats", timeout=5) as r:
        return int(json.load(r)["exchanges"]["requests"])


class AuditCount:
    """The decisions in a Cerbos audit log so far (its `"log.kind":"decision"` lines, one per
    evaluation Cerbos made: the PDP's own count), read on from where the last call stopped."""

    def __init__(self, path: Path):
        self.path, self.offset, self.count = path, 0, 0

    def __call__(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.count
        end = data.rfind(b"\n") + 1  # whole lines only: the last may be being written
        self.count += data[:end].count(b'"log.kind":"decision"')
        self.offset += end
        return self.count


def snapshot(admin_port: int, dot_port: int | None, audit: AuditCount | None = None,
             oidc_port: int | None = None) -> dict[str, int]:
    """All of Tollgate's and native jwt_authn's counters, for opaque rows (dot_port given)
    the AS's own count of introspection requests (key "as.introspections"), for PDP rows
    (audit given) the decisions Cerbos logged (key "pdp.decisions"), and for the exchange row
    (oidc_port given) the token exchanges oidc-provider served (key "as.exchanges")."""
    snap = counters(admin_port, r"^(wasmcustom\.tollgate\.|http\.[^.]+\.jwt_authn\.)")
    if dot_port is not None:
        snap["as.introspections"] = as_introspections(dot_port)
    if audit is not None:
        snap["pdp.decisions"] = audit()
    if oidc_port is not None:
        snap["as.exchanges"] = as_exchanges(oidc_port)
    return snap


def settled_snapshot(admin_port: int, dot_port: int | None, audit: AuditCount | None = None,
                     timeout: float = 5.0, oidc_port: int | None = None) -> dict[str, int]:
    """A snapshot once the counters stopped moving: when wrk exits, Envoy may still be working
    through the last requests it sent, and they belong to this row, not the next one (Cerbos'
    audit log may lag its answers by a few ms, so PDP rows wait for a longer quiet spell)."""
    snap = snapshot(admin_port, dot_port, audit, oidc_port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05 if audit is None else 0.25)
        again = snapshot(admin_port, dot_port, audit, oidc_port)
        if again == snap:
            break
        snap = again
    return snap


def add_delta(total: Counter, before: dict[str, int], after: dict[str, int]) -> None:
    for k, v in after.items():
        total[k] += v - before.get(k, 0)
    for k in before.keys() - after.keys():
        total[k] -= before[k]  # cannot happen with counters; shows up as a missing counter


def distinct_sent(seq: list[str], issued: int, probe_token: str) -> int:
    """Distinct tokens among the probe and what wrk sent of seq: wrk reports `issued`, how many
    times its thread called request() (each takes the next entry of seq, cycling). wrk 4 calls it
    once more than it sends (a check before connecting), so it sent seq[1:issued], plus seq[0]
    again once it wrapped around; seq[:issued] counts seq[0] as sent either way, which it is
    (the probe of a JWT row is seq[0]; opaque sets are cycled through many times)."""
    return len((set(seq[:issued]) if issued < len(seq) else set(seq)) | {probe_token})


def strays(d: Counter, own: str | tuple[str, ...]) -> dict[str, int]:
    """Counters outside the row's own prefix(es) that moved while it ran: nothing else runs
    then, so any would mean the counts are not attributed as the checks assume."""
    return {k: v for k, v in d.items()
            if v and k not in ("as.introspections", "pdp.decisions", "as.exchanges") and not k.startswith(own)}


def row_checks(r: Row, seq: list[str], probe_token: str, workers: int) -> list[Check]:
    d = r.delta
    own = f"tollgate.issuer.{r.issuer}." if r.issuer else f"http.{r.listener}.jwt_authn."
    needed = [own + "allowed", own + "cache_hit"] if r.issuer else []
    needed += [own + "introspection.calls"] if r.opaque else []
    if missing := [k for k in needed if k not in d]:
        return [Check(r.label, False, "counters missing from Envoy's /stats: " + ", ".join(missing))]
    owned = (own,) + ((f"tollgate.route.{r.pdp_route}.authz.",) if r.pdp_route else ()) \
        + (("tollgate.upstream_token.",) if r.upstream else ())
    if moved := strays(d, owned):
        return [Check(r.label, False, f"other counters moved during this row: {moved}")]
    if r.issuer is None:
        if denied := d.get(own + "denied", 0):  # e.g. answered after wrk stopped waiting
            return [Check(r.label, False, f"jwt_authn denied {denied:,} requests")]
        if r.listener == "jwt-mix" and "http.jwt-mix.jwt_authn.jwt_cache_miss" in d:
            miss = d["http.jwt-mix.jwt_authn.jwt_cache_miss"]
            hit = d.get("http.jwt-mix.jwt_authn.jwt_cache_hit", 0)
            return [Check(r.label, None, f"{miss:,} cache misses, {hit:,} hits for "
                          f"{distinct_sent(seq, r.issued, probe_token):,} distinct tokens sent "
                          f"(jwt_authn's cache is per worker; {workers} worker(s))")]
        return []
    p = own
    allowed, hits = d[p + "allowed"], d[p + "cache_hit"]
    verified = allowed - hits
    denied = sum(v for k, v in d.items() if k.startswith(p + "denied."))
    failed = sum(v for k, v in d.items() if k.startswith(p + "introspection.failed."))
    extra = f"; {denied:,} denied" if denied else ""
    extra += f"; {failed:,} failed introspections" if failed else ""
    if r.check == "every":
        ok = hits == 0 and allowed > 0 and not denied
        return [Check(r.label, ok, f"{verified:,} verifications, {hits:,} cache hits (cache off: every request "
                                   f"is verified){extra}")]
    want = distinct_sent(seq, r.issued, probe_token)
    if not r.opaque:
        ok = verified == want and allowed > 0 and not denied
        if verified > want:
            extra += f"; {verified - want:,} " + (
                f"verified again: with {workers} workers, a new token reaching several of them at once is "
                "verified by each (Tollgate single-flights introspection across workers, not JWT verification)"
                if workers > 1 else "verified again (two tokens sharing a cache slot would do that)")
        return [Check(r.label, ok, f"{verified:,} verifications for {want:,} distinct tokens sent "
                                   f"({allowed:,} allowed, {hits:,} cache hits){extra}")]
    calls, seen = d[p + "introspection.calls"], d["as.introspections"]
    coalesced = d.get(p + "introspection.coalesced", 0)
    ok = calls == want and seen == want and allowed > 0 and not denied and not failed
    return [Check(r.label, ok, f"{calls:,} introspection calls by Tollgate, {seen:,} served by the AS, for "
                               f"{want:,} distinct tokens sent ({allowed:,} allowed, {hits:,} cache hits, "
                               f"{coalesced:,} coalesced){extra}")]


def pdp_calls(r: Row) -> tuple[int, int]:
    """(PDP calls, requests the PDP rule allowed) of a PDP row, over the whole run."""
    p = f"tollgate.route.{r.pdp_route}.authz."
    return r.delta.get(p + "call", 0), r.delta.get(p + "allow", 0)


def pdp_check(r: Row) -> Check:
    """PDP calls per distinct (subject, resource, action), from Tollgate's counters and from
    Cerbos' audit log. The cached row asks one question (the probe's and wrk's requests all go
    to one document): one call and one decision over the whole run, every other request a
    decision-cache hit. The fresh row asks a new question with every request: one call per
    request, no cache hit, nothing coalesced, and Cerbos decided each."""
    p = f"tollgate.route.{r.pdp_route}.authz."
    d = r.delta
    if missing := [k for k in (p + "call", p + "allow", p + "cache_hit") if k not in d]:
        return Check(r.label + ", PDP calls", False, "counters missing from Envoy's /stats: " + ", ".join(missing))
    calls, allow = pdp_calls(r)
    hits, coalesced = d[p + "cache_hit"], d.get(p + "coalesced", 0)
    deny, error, seen = d.get(p + "deny", 0), d.get(p + "error", 0), d.get("pdp.decisions", 0)
    extra = f"; {deny:,} denied, {error:,} without a decision (503)" if deny or error else ""
    if not r.unique_path:
        ok = calls == 1 and seen == 1 and hits == allow - 1 and allow > 1 and not deny and not error
        return Check(r.label + ", PDP calls", ok,
                     f"1 distinct (subject, resource, action) in {allow:,} authorized requests: {calls:,} PDP "
                     f"call(s) by Tollgate, {seen:,} decision(s) in Cerbos' audit log, {hits:,} decision-cache "
                     f"hits, {coalesced:,} coalesced{extra}")
    # A call whose request wrk gave up on when its run ended (the connection closed while the
    # PDP was deciding) is a call without an allowed request: calls may exceed allow by that.
    ok = (calls == seen and hits == 0 and coalesced == 0 and not deny and not error
          and r.answered <= allow <= calls <= r.questions)
    gone = f" and {calls - allow:,} for requests wrk had stopped waiting for at the end of a run" if calls > allow else ""
    return Check(r.label + ", PDP calls", ok,
                 f"each request a new (subject, resource, action), so 1 call per question: {calls:,} PDP calls by "
                 f"Tollgate, {seen:,} decisions in Cerbos' audit log; {allow:,} for authorized requests{gone} "
                 f"({r.answered:,} answers to the bench, {r.questions:,} paths handed out); {hits:,} decision-cache "
                 f"hits, {coalesced:,} coalesced{extra}")


def echo_probe(port: int, token: str) -> tuple[int, dict[str, str]]:
    """An upstream-token row's probe: GET ECHO_PREFIX + PATH with the token; its status and the
    ECHOED request headers the upstream (upstream-echo) received, "" for one it did not."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", ECHO_PREFIX + PATH, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        resp.read()
        seen = {h: resp.getheader(f"x-bench-saw-{h}") or "" for h in ECHOED}
        # Envoy's %REQ()% writes "-" for a header that is not there
        return resp.status, {h: "" if v == "-" else v for h, v in seen.items()}
    finally:
        conn.close()


def verified_jwt(token: str, jwks_url: str, alg: str) -> dict:
    """The claims of token, its signature checked by jwcrypto against the JWKS at jwks_url (the
    kid in its header picks the key) and alg the only one allowed; raises if it does not hold."""
    with urllib.request.urlopen(jwks_url, timeout=5) as resp:
        keyset = jwk.JWKSet.from_json(resp.read())
    return json.loads(jwt.JWT(jwt=token, key=keyset, algs=[alg]).claims)


def upstream_checks(r: Row, caller: str, workers: int, jwks_url: str) -> list[Check]:
    """Issue 17 rows. sign: the backend token was signed once per worker for the whole run
    (tollgate.upstream_token.sign.signed; every other allowed request reused it: sign.reused),
    and every probe's upstream request carried the same x-tollgate-jwt, which verifies against
    the JWKS Tollgate serves, with the caller's sub, aud SIGN_AUDIENCE and orig_iss the caller's
    issuer; Authorization reached it unchanged. exchange: one token exchange for the whole run,
    counted by Tollgate (exchange.call) and by the AS (/__rig/stats exchanges.requests), every
    other allowed request served from the exchange cache (cache_hit, or coalesced behind that
    one call); every probe's upstream request carried the same exchanged token as its
    Authorization, verified against the AS's JWKS, aud EXCHANGE_AUDIENCE, the caller's sub and
    act {sub: the exchanger}; the identity headers are still the caller's."""
    d, p = r.delta, "tollgate.upstream_token."
    allowed = d.get(f"tollgate.issuer.{r.issuer}.allowed", 0)
    label = r.label + (", signed once" if r.upstream == "sign" else ", exchanged once")
    names = ("sign.signed", "sign.reused") if r.upstream == "sign" else ("exchange.call", "exchange.cache_hit")
    if missing := [p + n for n in names if p + n not in d]:
        return [Check(label, False, "counters missing from Envoy's /stats: " + ", ".join(missing))]
    out = []
    _, caller_claims = rig_tokens.decode_unverified(caller)
    if r.upstream == "sign":
        signed, reused = d[p + "sign.signed"], d[p + "sign.reused"]
        ok = 1 <= signed <= workers and signed + reused == allowed
        out.append(Check(label, ok, f"{signed:,} backend token(s) signed and {reused:,} reused for {allowed:,} "
                                    f"allowed requests (at most one signature per worker; {workers} worker(s))"))
        jwts = [x[BACKEND_HEADER] for x in r.seen]
        what = f"{len(r.seen)} probe(s): the upstream received {BACKEND_HEADER}"
        try:
            # each worker signs its own (a probe may reach any worker), and reuses it
            if not all(jwts) or len(set(jwts)) > workers:
                raise ValueError(f"not one token per worker: {len(set(jwts))} distinct, "
                                 f"{jwts.count('')} missing")
            want = {"iss": GATEWAY_ISSUER, "aud": SIGN_AUDIENCE, "sub": caller_claims["sub"], "orig_iss": ISSUER}
            for one in sorted(set(jwts)):
                claims = verified_jwt(one, jwks_url, "EdDSA")
                if wrong := {k: claims.get(k) for k, v in want.items() if claims.get(k) != v}:
                    raise ValueError(f"claims {wrong}, want {want}")
                if not claims["exp"] - claims["iat"] <= SIGN_LIFETIME_S:
                    raise ValueError(f"lives {claims['exp'] - claims['iat']} s")
            if any(x["authorization"] != f"Bearer {caller}" for x in r.seen):
                raise ValueError("Authorization did not reach the upstream unchanged")
            out.append(Check(r.label + ", upstream saw", True,
                             f"{what}, {len(set(jwts))} distinct (reused; at most one per worker), verified by "
                             f"jwcrypto against the gateway's "
                             f"JWKS ({jwks_url.split('/', 3)[3]}): EdDSA, iss {claims['iss']}, aud {claims['aud']}, "
                             f"sub {claims['sub']}, orig_iss {claims['orig_iss']}, lifetime "
                             f"{claims['exp'] - claims['iat']} s; Authorization unchanged"))
        except Exception as e:  # noqa: BLE001  (any failure is the check's)
            out.append(Check(r.label + ", upstream saw", False, f"{what}: {e}"))
        return out
    calls, hits, seen = d[p + "exchange.call"], d[p + "exchange.cache_hit"], d.get("as.exchanges", 0)
    coalesced = d.get(p + "exchange.coalesced", 0)
    bad = d.get(p + "exchange.refused", 0) + d.get(p + "exchange.error", 0)
    ok = calls == 1 and seen == 1 and hits + coalesced == allowed - 1 and allowed > 1 and not bad
    out.append(Check(label, ok, f"{calls:,} exchange call(s) by Tollgate, {seen:,} exchange request(s) served by "
                                f"the AS, for {allowed:,} allowed requests ({hits:,} exchange-cache hits, "
                                f"{coalesced:,} coalesced, {bad:,} refused or unanswered)"))
    auths = [x["authorization"] for x in r.seen]
    what = f"{len(r.seen)} probe(s): the upstream received Authorization"
    try:
        if not all(a.startswith("Bearer ") for a in auths) or len(set(auths)) != 1:
            raise ValueError(f"not one bearer token in every probe: {len(set(auths))} distinct")
        exchanged = auths[0].removeprefix("Bearer ")
        if exchanged == caller:
            raise ValueError("the caller's own token")
        claims = verified_jwt(exchanged, jwks_url, "ES256")
        want = {"aud": EXCHANGE_AUDIENCE, "sub": caller_claims["sub"], "act": {"sub": EXCHANGER[0]},
                "iss": caller_claims["iss"]}
        if wrong := {k: claims.get(k) for k, v in want.items() if claims.get(k) != v}:
            raise ValueError(f"claims {wrong}, want {want}")
        if subs := {x["x-tollgate-sub"] for x in r.seen} - {caller_claims["sub"]}:
            raise ValueError(f"x-tollgate-sub {subs}, not the caller's {caller_claims['sub']}")
        if any(x[BACKEND_HEADER] for x in r.seen):
            raise ValueError(f"{BACKEND_HEADER} reached the upstream")
        out.append(Check(r.label + ", upstream saw", True,
                         f"{what}: the same exchanged token in each (cached), verified by jwcrypto against the "
                         f"AS's JWKS: ES256, aud {claims['aud']}, sub {claims['sub']}, act {claims['act']}; "
                         f"x-tollgate-sub the caller's"))
    except Exception as e:  # noqa: BLE001  (any failure is the check's)
        out.append(Check(r.label + ", upstream saw", False, f"{what}: {e}"))
    return out


def sanity_checks(rows: list[Row], ports: dict[str, int], token_sets: dict[str, list[str]],
                  dpop_key: proofs.ProofKey, keys: dict[str, jwk.JWK]) -> list[Check]:
    """That the rows measure the checks they claim: a DPoP proof sent twice is refused the second
    time (and accepted twice by the bench-only build without the replay store), and a token
    bound to another client certificate is refused on the TLS listener."""
    out = []
    listeners = {r.listener for r in rows if r.rounds}
    for name in ("tg-dpop", "tg-dpop-noreplay", "base-dpop"):
        if name not in listeners:
            continue
        port, token = ports[name], token_sets["dpop-ES256"][0]
        proof = dpop_key.proof(htm="GET", htu=f"http://127.0.0.1:{port}{PATH}", token=token, iat=int(time.time()),
                               jti=f"twice-{os.urandom(8).hex()}")
        got = [status_of(port, {"Authorization": f"DPoP {token}", "DPoP": proof}) for _ in range(2)]
        want = [200, 200] if name == "tg-dpop-noreplay" else [200, 401]
        what = "accepted again: this build has no replay store" if name == "tg-dpop-noreplay" else "refused as a replay"
        out.append(Check(f"{name}: one proof sent twice", got == want,
                         f"answers {got[0]}, {got[1]} (the second {what})"))
    if "tg-tls" in listeners:
        other = mint(keys, "ES256", 1, "-other-cert", {"cnf": {"x5t#S256": proofs.b64(os.urandom(32))}})[0]
        status = probe(ports["tg-tls"], other, tls=True)
        out.append(Check("tg-tls: a token bound to another certificate", status == 401, f"answered {status} (want 401)"))
    return out


def status_of(port: int, headers: dict, *, tls: bool = False, path: str = PATH) -> int:
    """The status of one GET of path with headers (over TLS with the bench's client certificate)."""
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=client_tls()) if tls
            else http.client.HTTPConnection("127.0.0.1", port, timeout=10))
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def replay_memory(concurrency: int, keys: dict[str, jwk.JWK], jwks: dict, live: int = 10_000) -> list[str]:
    """The replay store's memory with `live` proofs in it, in an Envoy of its own: Envoy's heap
    (admin /memory "allocated", tcmalloc) and RSS before and after `live` distinct proofs are
    accepted, all still inside their window (dated 50 s ahead, so they live ~111 s), next to the
    same number of requests that do not touch the store (an unbound Bearer token on the same
    listener: what serving requests alone moves), and the arithmetic for the buckets the
    proofs' ids fall in (computed here exactly as the store does)."""
    key = proofs.ProofKey()
    bound = mint(keys, "ES256", 1, "-mem", {"cnf": {"jkt": key.jkt}})[0]
    unbound = mint(keys, "ES256", 1, "-mem-bearer")[0]
    upstream_port, port, admin_port = free_ports(3)
    cfg = bootstrap({"upstream": upstream_port, "tg-dpop": port}, admin_port, jwks, 1000, None)
    cfg_path = WORK / "envoy-replay-memory.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    argv = [str(envoy.envoy_binary()), "-c", str(cfg_path), "--concurrency", str(concurrency),
            "--base-id", str((os.getpid() + 1) % 100000), "--disable-hot-restart", "-l", "warning"]
    proc = envoy.EnvoyProc(name="envoy-replay-memory", argv=argv, port=upstream_port,
                           log_path=WORK / "envoy-replay-memory.log", admin_port=admin_port, config_path=cfg_path)
    htu = f"http://127.0.0.1:{port}{PATH}"
    tag = os.urandom(4).hex()

    def jtis(prefix: str, n: int) -> list[str]:
        return [f"{tag}-{prefix}-{i}" for i in range(n)]

    def send(items: list[str], iat: int | None) -> Counter:
        if iat is None:  # the unbound token, as Bearer: no proof, no store
            return drive(port, [unbound] * len(items), 16)
        made = {j: key.proof(htm="GET", htu=htu, token=bound, iat=iat, jti=j) for j in items}
        return drive(port, items, 16, lambda j: {"Authorization": f"DPoP {bound}", "DPoP": made[j]})

    def memory() -> tuple[int, int]:
        status, body = envoy.admin_get(admin_port, "/memory", timeout=5)
        rss = next(int(ln.split()[1]) * 1024 for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                   if ln.startswith("VmRSS:"))
        return int(json.loads(body)["allocated"]), rss

    def settle() -> tuple[int, int]:
        time.sleep(1.0)
        return memory()

    proc.start(timeout=60)
    try:
        # Warm-up: the code paths, V8's tiers, the connections. These proofs are dated 50 s
        # back, so their entries die 11 s after they are sent (their buckets stay: shared data
        # has no delete); the measurement starts once they are dead.
        warm = jtis("warm", 300)
        warm_iat = int(time.time()) - DPOP_WINDOW + 10
        w1 = send(warm, warm_iat)
        w2 = send(["x"] * 2000, None)
        time.sleep(max(0.0, warm_iat + DPOP_WINDOW + 2 - time.time()))
        m0 = settle()
        control = send(["x"] * live, None)
        m1 = settle()
        t0 = time.monotonic()
        measured = jtis("live", live)
        st = send(measured, int(time.time()) + 50)
        took = time.monotonic() - t0
        m2 = settle()
    finally:
        proc.stop()

    # The store's layout for these ids (flow/replay.rs): bucket = first 8 bytes of the id, little
    # endian, mod BUCKETS (read from the source); one shared-data key per bucket, its value 24
    # bytes per live entry.
    def bucket(j: str) -> int:
        digest = hashlib.sha256(key.jkt.encode() + b"\0" + j.encode()).digest()
        return int.from_bytes(digest[:8], "little") % REPLAY_BUCKETS

    before = {bucket(j) for j in warm}
    per = Counter(bucket(j) for j in measured)
    new_keys = len(per.keys() - before)
    full = sum(n - 8 for n in per.values() if n > 8)
    # libc++ std::string: a value of n > 22 bytes is a heap block of n + 1 rounded up to 16;
    # each unordered_map node (next, hash, key string, value string, cas) is 72 bytes, an
    # 80-byte tcmalloc block; the bucket array is 8 bytes per bucket, at least one per key.
    values = sum(-(-(24 * min(n, 8) + 1) // 16) * 16 for n in per.values())
    nodes = 80 * new_keys
    table = 8 * len(per.keys() | before)
    heap = m2[0] - m1[0]
    return [
        f"- {live:,} distinct proofs accepted in {took:.1f}s ({dict(st)} by status; warm-up {dict(w1 + w2)}), "
        f"Envoy --concurrency {concurrency}",
        f"- Envoy heap (admin /memory allocated): {m0[0]:,} → {m1[0]:,} after {live:,} requests that do not touch "
        f"the store ({m1[0] - m0[0]:+,} bytes; {dict(control)} by status) → {m2[0]:,} after the {live:,} proofs "
        f"(**{heap:+,} bytes**, {heap / live:.0f} bytes per live proof)",
        f"- RSS: {m0[1]:,} → {m1[1]:,} ({m1[1] - m0[1]:+,}) → {m2[1]:,} ({m2[1] - m1[1]:+,} bytes)",
        f"- the ids fall in {len(per):,} buckets ({new_keys:,} of them new keys; the largest holds {max(per.values())}"
        f" ids{f', {full} over 8: refused as full' if full else ''}); arithmetic: {live:,} entries x 24 bytes = "
        f"{24 * live:,} bytes of entries, {values:,} bytes as libc++ strings, + {nodes:,} bytes of map nodes "
        f"({new_keys:,} x 80) + ~{table:,} bytes of bucket array = ~{values + nodes + table:,} bytes",
    ]


def token_cache_memory(concurrency: int, keys: dict[str, jwk.JWK], jwks: dict, live: int = 10_000) -> list[str]:
    """Issue 18: the token cache's memory with `live` distinct verified tokens in it, in an Envoy
    of its own (the Zipf-mix listener: a cache with a slot per token). Envoy's heap (admin
    /memory "allocated": the shared data, one key per slot) and RSS (which also has the workers'
    wasm memory: each worker's memo of the tokens it saw) before and after `live` distinct ES256
    tokens are each verified once, next to the same number of requests with one warm token (what
    serving requests alone moves)."""
    tokens = mint(keys, "ES256", live, "-cachemem")
    warm = mint(keys, "ES256", 1, "-cachemem-warm")[0]
    upstream_port, port, admin_port = free_ports(3)
    cfg = bootstrap({"upstream": upstream_port, "tg-mix": port}, admin_port, jwks, MAX_SLOTS, None)
    cfg_path = WORK / "envoy-cache-memory.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    argv = [str(envoy.envoy_binary()), "-c", str(cfg_path), "--concurrency", str(concurrency),
            "--base-id", str((os.getpid() + 2) % 100000), "--disable-hot-restart", "-l", "warning"]
    proc = envoy.EnvoyProc(name="envoy-cache-memory", argv=argv, port=upstream_port,
                           log_path=WORK / "envoy-cache-memory.log", admin_port=admin_port, config_path=cfg_path)

    def memory() -> tuple[int, int]:
        time.sleep(1.0)
        status, body = envoy.admin_get(admin_port, "/memory", timeout=5)
        rss = next(int(ln.split()[1]) * 1024 for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                   if ln.startswith("VmRSS:"))
        return int(json.loads(body)["allocated"]), rss

    proc.start(timeout=60)
    try:
        warmup = drive(port, [warm] * 2000, 16)
        m0 = memory()
        control = drive(port, [warm] * live, 16)
        m1 = memory()
        t0 = time.monotonic()
        st = drive(port, tokens, 16)
        took = time.monotonic() - t0
        m2 = memory()
        verified = counters(admin_port, r"tollgate\.issuer\.mix\.allowed")
    finally:
        proc.stop()
    heap, rss = m2[0] - m1[0], m2[1] - m1[1]
    return [
        f"- {live:,} distinct ES256 tokens verified and cached in {took:.1f}s ({dict(st)} by status; warm-up "
        f"{dict(warmup)}), Envoy --concurrency {concurrency}, counters {verified}",
        f"- Envoy heap (admin /memory allocated): {m0[0]:,} → {m1[0]:,} after {live:,} requests with one warm "
        f"token ({m1[0] - m0[0]:+,} bytes; {dict(control)} by status) → {m2[0]:,} after the {live:,} tokens "
        f"(**{heap:+,} bytes**, {heap / live:.0f} bytes per cached token)",
        f"- RSS: {m0[1]:,} → {m1[1]:,} ({m1[1] - m0[1]:+,}) → {m2[1]:,} (**{rss:+,} bytes**, {rss / live:.0f} per "
        "token: the heap above and the workers' wasm memory, whose memo keeps up to 1,024 tokens each)",
    ]


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system, all threads) the process has used so far, from /proc: Envoy's
    cost of a row, which moves less than req/s when wrk and other processes share the cores."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def start_perf(directory: Path | None, pid: int, listener: str, rnd: int) -> subprocess.Popen | None:
    """`--perf DIR`: samples Envoy (all threads, call graphs, the kernel's cpu-clock timer, as
    these VMs have no hardware counters) while one row's timed run lasts, into
    DIR/<listener>-<round>.data; read with `perf report -i FILE --no-children --sort dso,sym`.
    The sampling costs Envoy a little CPU: numbers of a profiled run are for the profile only."""
    if directory is None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2000", "-g", "-p", str(pid),
                             "-o", str(directory / f"{listener}-{rnd}.data")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_perf(perf: subprocess.Popen | None) -> None:
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)


def fmt_ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def table(rows: list[Row]) -> str:
    by_label = {r.label: r for r in rows}

    def rps(label: str | None, key: str = "rps") -> float | None:
        r = by_label.get(label) if label else None
        return r.result[key] if r and r.result else None

    base, floor = rps("passthrough (router only)"), rps("no-op wasm (reads 1 header)")
    compared = any(r.baseline for r in rows)
    referred = any(r.ref for r in rows)
    decided = any(r.pdp_route for r in rows)
    head = "| scenario | req/s | spread | p50 ms | p99 ms | Envoy CPU µs/req | vs passthrough | vs no-op floor | vs native |"
    rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if compared:  # req/s, and CPU per request (above 1.00x: this build costs more)
        head, rule = head + " vs baseline | CPU vs baseline |", rule + "---:|---:|"
    if referred:  # the row named in Row.ref: req/s, and CPU per request (above 1.00x: costs more)
        head, rule = head + " vs ref | CPU vs ref |", rule + "---:|---:|"
    if decided:  # PDP rows: calls per authorized request (whole run), Cerbos' CPU per request
        head, rule = head + " PDP calls / authorized | Cerbos CPU µs/req |", rule + "---:|---:|"
    lines = [head, rule]
    for r in rows:
        if not r.result:
            lines.append(f"| {r.label} | FAILED: {r.error or 'did not run'} | | | | | | | |" + (" | |" if compared else "")
                         + (" | |" if referred else "") + (" | |" if decided else ""))
            continue
        x = r.result
        line = (
            f"| {r.label} | {x['rps']:,.0f} | {x['spread']:.0%} | {x['p50_us'] / 1000:.2f} | {x['p99_us'] / 1000:.2f} | "
            f"{x['cpu_us']:.0f} | "
            f"{fmt_ratio(x['rps'], base)} | {fmt_ratio(x['rps'], floor)} | {fmt_ratio(x['rps'], rps(r.native))} |"
        )
        if compared:
            line += f" {fmt_ratio(x['rps'], rps(r.baseline))} | {fmt_ratio(x['cpu_us'], rps(r.baseline, 'cpu_us'))} |"
        if referred:
            line += f" {fmt_ratio(x['rps'], rps(r.ref))} | {fmt_ratio(x['cpu_us'], rps(r.ref, 'cpu_us'))} |"
        if decided:
            if r.pdp_route:
                calls, allow = pdp_calls(r)
                line += f" {calls:,} / {allow:,} | {x['pdp_cpu_us']:.0f} |"
            else:
                line += " | |"
        lines.append(line)
    if refs := [r for r in rows if r.ref and r.result]:
        lines += ["", "vs ref / CPU vs ref (req/s, and Envoy CPU per request, against another row of this run): "
                  + "; ".join(f"{r.label} against {r.ref}" for r in refs) + "."]
    floor_cpu = rps("no-op wasm (reads 1 header)", "cpu_us")
    priced = [(r.label, (r.result["cpu_us"] - floor_cpu) / PRICE_TIMES) for r in rows
              if r.listener.endswith(f"-x{PRICE_TIMES}") and r.result and floor_cpu is not None]
    if priced:
        lines += ["", f"Price of one host call in this Envoy, (row - no-op) / {PRICE_TIMES}, Envoy CPU: "
                  + "; ".join(f"{label.removeprefix('no-op + ')}: {price:.2f} µs" for label, price in priced) + "."]
    return "\n".join(lines)


class Background:
    """Starts a procs.Proc on a thread (the AS takes seconds to start; the bench mints JWTs and
    starts Envoy meanwhile). stop() waits for the start to finish first, so nothing is left."""

    def __init__(self, proc: Proc):
        self.proc = proc
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._start, daemon=True)
        self.thread.start()

    def _start(self) -> None:
        try:
            self.proc.start(timeout=60)
        except BaseException as e:  # noqa: BLE001  (reported by wait())
            self.error = e

    def wait(self) -> Proc:
        while self.thread.is_alive():
            self.thread.join(timeout=0.2)
        if self.error:
            raise RuntimeError(f"{self.proc.name} did not start: {self.error}")
        return self.proc

    def stop(self) -> None:
        self.thread.join(timeout=65)
        self.proc.stop()


def free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (all bound at once, so the OS cannot hand out one
    twice, as separate procs.free_port() calls may)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_oidc(port: int) -> Background:
    """The rig's oidc-provider (as tests/rig/servers.start_oidc, without its retry), fresh state."""
    state = WORK / "as-oidc-state"
    shutil.rmtree(state, ignore_errors=True)
    log = WORK / "as-oidc.log"
    log.unlink(missing_ok=True)
    argv = [node_binary(), str(OIDC_DIR / "server.mjs"), "--port", str(port), "--state-dir", str(state)]
    return Background(Proc("as-oidc", argv, port, log, cwd=OIDC_DIR))


def start_dot(port: int) -> Background:
    """The rig's django-oauth-toolkit AS (as tests/rig/servers.start_dot), fresh state."""
    state = WORK / "as-dot-state"
    shutil.rmtree(state, ignore_errors=True)
    log = WORK / "as-dot.log"
    log.unlink(missing_ok=True)
    argv = [str(VENV_PY), str(RIG / "as_dot" / "server.py"), "--port", str(port), "--state-dir", str(state)]
    return Background(Proc("as-dot", argv, port, log, env={"PYTHONUNBUFFERED": "1"}))


def main() -> int:
    # bench/curves.py (issue 18, how cost grows) uses this module's helpers as `bench`: imported
    # here, once this module is whole, and under that name even when it runs as __main__.
    sys.modules.setdefault("bench", sys.modules[__name__])
    import curves  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--concurrency", type=int, default=1, help="Envoy worker threads (default 1)")
    ap.add_argument("--duration", type=int, default=10, help="whole seconds per row and round (default 10)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows the median (default 3)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: every row and check, 1 s per row, no warm-up, small token sets")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    ap.add_argument("--tokens", type=int, default=2000, help="distinct tokens per cold set (default 2000)")
    ap.add_argument("--algs", default="RS256,ES256,PS256,EdDSA", help="algorithms of the cold rows")
    ap.add_argument("--mix-tokens", type=int, default=1000, help="distinct tokens of the Zipf mix (default 1000)")
    ap.add_argument("--mix-length", type=int, default=20000, help="requests in the mix sequence (default 20000)")
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent s of the mix (default 1.1)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the mix sequence (default 1)")
    ap.add_argument("--opaque-tokens", type=int, default=100, help="opaque tokens of the second opaque row (default 100)")
    ap.add_argument("--dpop-rate", type=int, default=2500,
                    help="DPoP rows: proofs per second in the first pool (then 1.5 times the rate seen; default 2500)")
    ap.add_argument("--only", action="append",
                    help="run only rows and checks whose label contains this text (plus passthrough, no-op and the "
                    "rows they are compared with); may be given several times (any of them)")
    ap.add_argument("--perf", type=Path, metavar="DIR",
                    help="profile Envoy with `perf record` during each row's timed run, into DIR (see start_perf)")
    ap.add_argument("--baseline", type=Path, help="another tollgate.wasm (e.g. the previous commit's): its warm and "
                    "cold rows run in the same Envoy, and the table compares this build's with them")
    ap.add_argument("--curves", action="store_true",
                    help="run only the curves (issue 18, how cost grows: bench/curves.py; a run without --only "
                    "runs them too, --quick with tiny sizes); plots to docs/img/curves-*.svg")
    ap.add_argument("--curve-duration", type=int, default=5, help="curves: seconds per point and round (default 5)")
    ap.add_argument("--curve-tokens", default="1,1000,10000,100000,1000000",
                    help="curves: the Zipf pools (distinct tokens) of the tokens curve")
    ap.add_argument("--curve-length", type=int, default=50000, help="curves: draws per Zipf sequence (default 50000)")
    ap.add_argument("--curve-slots", type=int, default=8192,
                    help="curves: the smaller cache.max_entries of the tokens curve (default 8192, Tollgate's default)")
    ap.add_argument("--out", help="where to write the table (default bench/last-run.md; "
                    "target/bench/quick-run.md with --quick, so a smoke run leaves the tree clean)")
    ap.add_argument("--fleet", action="store_true",
                    help="only the fleet measurement (bench/fleet.py: AS load with 1 and 3 Envoy processes; written to "
                    "bench/last-fleet.md); with --quick, its small sizes. A run without --only runs it after the rows "
                    "(small with --quick)")
    args = ap.parse_args()
    if args.fleet:
        return fleet.standalone(args.quick, args.concurrency, args.out)
    if args.out is None:
        args.out = str(WORK / "quick-run.md") if args.quick else str(BENCH / "last-run.md")
    if args.quick:
        args.duration, args.rounds = 1, 1
        args.tokens = min(args.tokens, 200)
        args.mix_tokens, args.mix_length = min(args.mix_tokens, 200), min(args.mix_length, 2000)
        args.opaque_tokens = min(args.opaque_tokens, 10)
    warmup = 0 if args.quick else min(2, max(1, args.duration // 5))
    algs = [a for a in args.algs.split(",") if a]
    if unknown := set(algs) - set(KIDS):
        ap.error(f"unknown algorithms: {sorted(unknown)}")

    # SIGTERM ends the run like Ctrl-C does: through the finally blocks that stop what we started.
    # (SIGINT explicitly too: a shell starting us in the background leaves SIGINT ignored.)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    if args.curves:
        return curves.main(args)
    if args.baseline is not None and not args.baseline.is_file():
        ap.error(f"--baseline {args.baseline}: no such file")
    # --quick leaves out the row of the bench-only build without the replay store (a second
    # full build of the module, minutes in CI, for a measurement a smoke run does not make).
    rows = scenarios(algs, args.mix_tokens, args.opaque_tokens, args.baseline is not None, noreplay=not args.quick)
    checks_todo = once_checks(algs)
    def only(label: str) -> bool:
        return any(o in label for o in args.only)

    if args.only:
        picked = {r.label for r in rows if only(r.label)}
        while True:  # and the rows they are compared with ("vs ref", "vs native"), and theirs
            more = picked | {x for r in rows if r.label in picked for x in (r.ref, r.native) if x}
            if more == picked:
                break
            picked = more
        rows = [r for r in rows if r.listener in ("passthrough", "noop") or r.label in picked
                or any(only(t.label) and t.baseline == r.label for t in rows)]
        checks_todo = [c for c in checks_todo if only(c.label)]
    for r in rows:
        if r.driver == "dpop":
            r.per_slot = args.dpop_rate
    if any(r.listener == "tg-dpop-noreplay" for r in rows):
        print("bench: building the measurement module without the replay store "
              "(scripts/build-wasm --bench-skip-replay-store)", flush=True)
        subprocess.run([str(ROOT / "scripts" / "build-wasm"), "--bench-skip-replay-store"], check=True,
                       stdout=subprocess.DEVNULL)
    sets_needed = {r.tokens for r in rows} | {r.probe for r in rows if r.probe} | {c.tokens for c in checks_todo}
    need_dot = any(r.opaque for r in rows)
    need_oidc = any(r.tokens == "as1-user" for r in rows)

    WORK.mkdir(parents=True, exist_ok=True)
    names = ["upstream"] + (["upstream-echo"] if any(r.upstream for r in rows) else []) \
        + list(dict.fromkeys([r.listener for r in rows] + [c.listener for c in checks_todo]))
    *listener_ports, admin_port, dot_port, cerbos_port, oidc_port = free_ports(len(names) + 4)
    ports = dict(zip(names, listener_ports))
    if not need_dot:
        dot_port = None
    oidc: Background | None = None
    exchanges_total: int | None = None  # the AS's token exchanges over the whole run
    need_pdp = any(r.pdp_route for r in rows)
    cerbos: CerbosProc | None = None
    audit: AuditCount | None = None
    cerbos_cluster: dict[str, int] = {}  # Envoy's counters of its cluster cerbos, at the end
    dot: Background | None = None
    proc: envoy.EnvoyProc | None = None
    failed = False
    t_start = time.monotonic()
    try:
        if dot_port is not None:
            dot = start_dot(dot_port)  # starts while the JWTs are minted and Envoy starts
        if need_oidc:
            oidc = start_oidc(oidc_port)  # starts while the JWTs are minted; up before Envoy
        if need_pdp:
            # Cerbos as the rig runs it (audit log of every call and decision, info log), with
            # a fresh copy of the rig's policies; about 0.2 s.
            pdp_dir = WORK / "cerbos"
            shutil.rmtree(pdp_dir, ignore_errors=True)
            try:
                cerbos = start_cerbos(cerbos_port, pdp_dir / "policies", pdp_dir)
            except (RuntimeError, OSError, TimeoutError) as e:  # the other rows still run
                failed = True
                for r in rows:
                    if r.pdp_route:
                        r.error = f"Cerbos did not start ({str(e).splitlines()[0]}; see {pdp_dir})"
                print(f"bench: Cerbos did not start: {e}", flush=True)
            else:
                audit = AuditCount(cerbos.audit_path)
                print(f"bench: Cerbos pid {cerbos.pid} on :{cerbos_port}", flush=True)

        t0 = time.monotonic()
        keys = make_keys()
        jwks = public_jwks(keys)
        token_sets: dict[str, list[str]] = {}
        for a in ("RS256", "ES256"):
            if f"warm-{a}" in sets_needed:
                token_sets[f"warm-{a}"] = mint(keys, a, 1, "-warm")
                assert token_sub(token_sets[f"warm-{a}"][0]) == WARM_SUB  # the PDP rows' document owner
        dpop_key = proofs.ProofKey()  # the DPoP client's key
        if "dpop-ES256" in sets_needed:
            token_sets["dpop-ES256"] = mint(keys, "ES256", 1, "-dpop", {"cnf": {"jkt": dpop_key.jkt}})
        if any(r.driver == "ab" for r in rows):
            proofs.test_pki(PKI)
            token_sets["mtls-ES256"] = mint(keys, "ES256", 1, "-mtls",
                                            {"cnf": {"x5t#S256": proofs.client_x5t(PKI / "client-cert.pem")}})
        for a in algs:
            if f"cold-{a}" in sets_needed:
                token_sets[f"cold-{a}"] = mint(keys, a, args.tokens, "-cold")
        if "mix" in sets_needed:
            pool = mint(keys, MIX_ALG, args.mix_tokens, "-mix")
            token_sets["mix"] = zipf_sequence(pool, args.mix_length, args.zipf, args.seed)
        # Issue 17: the gateway's signing key (a private JWK in backend_token)
        backend_key = jwk.JWK.generate(kty="OKP", crv="Ed25519", kid="bench-gateway")
        for name, toks in token_sets.items():
            (WORK / f"tokens-{name}.txt").write_text("\n".join(toks) + "\n")
        print(f"bench: keys and {sum(len(set(t)) for t in token_sets.values())} JWTs minted in "
              f"{time.monotonic() - t0:.1f}s", flush=True)
        if oidc is not None:
            # AS-1 must be up before Envoy starts: Tollgate fetches its keys at start, and a
            # failed fetch would be retried (and counted) while other rows run. One user's
            # access token (authorization code flow: it lives 3600 s) is the row's token.
            t0 = time.monotonic()
            try:
                oidc.wait()
                base = f"http://127.0.0.1:{oidc_port}"
                token_sets["as1-user"] = [rig_tokens.oidc_id_token(
                    base, "demo-client", "demo-secret", "http://127.0.0.1/cb", scope="openid read",
                    resource=AS1_RESOURCE, login=AS1_LOGIN)["access_token"]]
            except (RuntimeError, OSError, rig_tokens.TokenError) as e:  # the other rows still run
                failed = True
                for r in rows:
                    if r.tokens == "as1-user":
                        r.error = f"no token from oidc-provider ({str(e).splitlines()[0]}; see {WORK}/as-oidc.log)"
                        ports.pop(r.listener, None)
                print(f"bench: {next(r.error for r in rows if r.tokens == 'as1-user')}", flush=True)
            else:
                (WORK / "tokens-as1-user.txt").write_text(token_sets["as1-user"][0] + "\n")
                print(f"bench: AS oidc-provider pid {oidc.proc.pid} on :{oidc_port}; a user's access token "
                      f"in {time.monotonic() - t0:.1f}s", flush=True)

        cfg = bootstrap(ports, admin_port, jwks, max(1000, 4 * args.mix_tokens), dot_port, args.baseline,
                        cerbos_port if need_pdp else None, backend_key, oidc_port if need_oidc else None)
        cfg_path = WORK / "envoy.json"
        cfg_path.write_text(json.dumps(cfg, indent=2))
        argv = [str(envoy.envoy_binary()), "-c", str(cfg_path), "--concurrency", str(args.concurrency),
                "--base-id", str(os.getpid() % 100000), "--disable-hot-restart", "-l", "warning"]
        (WORK / "envoy.log").unlink(missing_ok=True)
        proc = envoy.EnvoyProc(name="envoy-bench", argv=argv, port=ports["upstream"], log_path=WORK / "envoy.log",
                               admin_port=admin_port, config_path=cfg_path)
        proc.start(timeout=60)
        print(f"bench: envoy pid {proc.pid} up (concurrency {args.concurrency}, {len(ports)} listeners); "
              f"{args.rounds} round(s) of {args.duration}s per row, {warmup}s warm-up, wrk -t1 -c{args.connections}",
              flush=True)
        # Tollgate fetches AS-1's discovery document and keys in the background at start: done
        # before the first row, so that no row's counters see it.
        fetches = [f"tollgate.issuer.{r.issuer}.jwks.fetch_ok" for r in rows
                   if r.tokens == "as1-user" and r.listener in ports]
        deadline = time.monotonic() + 30
        while fetches:
            got = counters(admin_port, r"^wasmcustom\.tollgate\.issuer\.[^.]+\.jwks\.fetch_ok$")
            if all(got.get(f, 0) >= 1 for f in fetches):
                settled_snapshot(admin_port, None)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Tollgate did not fetch AS-1's keys in 30 s (see {WORK}/envoy.log)")
            time.sleep(0.1)

        if dot is not None and dot_port is not None:
            t0 = time.monotonic()
            try:
                dot.wait()
                fresh = dot_tokens(f"http://127.0.0.1:{dot_port}", 3 + args.opaque_tokens)
            except (RuntimeError, OSError, rig_tokens.TokenError) as e:  # the other rows still run
                failed = True
                for r in rows:
                    if r.opaque:
                        r.error = f"no opaque tokens from the AS ({str(e).splitlines()[0]}; see {WORK}/as-dot.log)"
                print(f"bench: {next(r.error for r in rows if r.opaque)}", flush=True)
            else:
                token_sets["opaque-probe-1"], token_sets["opaque-probe-set"] = [fresh[0]], [fresh[1]]
                token_sets["opaque-1"], token_sets["opaque-set"] = [fresh[2]], fresh[3:]
                for name in ("opaque-probe-1", "opaque-probe-set", "opaque-1", "opaque-set"):
                    (WORK / f"tokens-{name}.txt").write_text("\n".join(token_sets[name]) + "\n")
                print(f"bench: AS django-oauth-toolkit pid {dot.proc.pid} on :{dot_port}; {len(fresh)} opaque "
                      f"tokens in {time.monotonic() - t0:.1f}s", flush=True)

        # Rounds: every row runs once per round, rows interleaved, and the table shows each row's
        # median round. On a shared or throttled machine the throughput drifts over minutes; this
        # spreads the drift over all rows instead of charging it to whichever row ran then.
        for rnd in range(1, args.rounds + 1):
            print(f"round {rnd}/{args.rounds}", flush=True)
            for r in rows:
                if r.error:
                    continue
                port = ports[r.listener]
                token_file = WORK / f"tokens-{r.tokens}.txt"
                as_port = dot_port if r.opaque else None
                row_audit = audit if r.pdp_route else None
                ex_port = oidc_port if r.upstream == "exchange" else None
                before = snapshot(admin_port, as_port, row_audit, ex_port)
                # unique_path rows: a prefix of this run's own, so no path repeats across runs
                run_prefix = lambda: f"{r.path}{os.urandom(4).hex()}-"  # noqa: E731
                if r.upstream:  # through upstream-echo: what the upstream received
                    status, seen = echo_probe(port, token_sets[r.tokens][0])
                    r.seen.append(seen)
                else:
                    status = probe(port, token_sets[r.probe or r.tokens][0],
                                   dpop_key=dpop_key if r.driver == "dpop" else None, tls=r.driver == "ab",
                                   path=run_prefix() + "probe" if r.unique_path else r.path)
                if r.unique_path:
                    r.questions += 1
                    r.answered += 1
                if status != 200:
                    r.error, failed = f"probe answered {status}", True
                    print(f"  {r.label:<52} {r.error}", flush=True)
                    continue
                def load(seconds: int) -> dict:
                    if r.driver == "dpop":
                        return run_dpop(r, port, token_file, token_sets[r.tokens][0], dpop_key, seconds,
                                        args.connections)
                    if r.driver == "ab":
                        return run_ab(port, token_sets[r.tokens][0], seconds, args.connections)
                    return run_wrk(port, token_file, seconds, args.connections, r.path,
                                   run_prefix() if r.unique_path else None)

                runs = []
                if rnd == 1 and warmup:  # V8 tiers up the module and caches fill: once per listener is enough
                    runs.append(load(warmup))
                pdp_pid = cerbos.pid if cerbos is not None and r.pdp_route else None
                cpu0, pdp_cpu0 = cpu_seconds(proc.pid), cpu_seconds(pdp_pid)
                perf = start_perf(args.perf, proc.pid, r.listener, rnd)
                runs.append(x := load(args.duration))
                stop_perf(perf)
                x["cpu_us"] = (cpu_seconds(proc.pid) - cpu0) * 1e6 / max(x["requests"], 1)
                x["pdp_cpu_us"] = (cpu_seconds(pdp_pid) - pdp_cpu0) * 1e6 / max(x["requests"], 1)
                add_delta(r.delta, before, settled_snapshot(admin_port, as_port, row_audit, oidc_port=ex_port))
                if r.unique_path:
                    r.questions += sum(w["issued"] for w in runs)
                    r.answered += sum(w["requests"] for w in runs)
                r.issued = max([r.issued] + [w["issued"] for w in runs])
                if r.driver == "dpop":
                    r.proofs_sent += sum(w["issued"] for w in runs)
                    r.proofs_skipped += sum(w["skipped"] for w in runs)
                    # The next pool: 1.5 times the rate seen (a second whose proofs are used up
                    # borrows the next second's, whose entries then live a second longer; only a
                    # pool used up whole fails the row).
                    r.per_slot = max(200, int(1.5 * max(w["requests"] / (w["duration_us"] / 1e6) for w in runs)))
                bad = sum(w["status_errors"] + w["connect"] + w["read"] + w["write"] + w["timeout"] for w in runs)
                exhausted = sum(w.get("exhausted", 0) for w in runs)
                if exhausted:
                    r.error, failed = (f"the proof pool ran out ({exhausted} request(s) found it empty; "
                                       f"{sum(w['pool'] for w in runs):,} proofs made): raise --dpop-rate"), True
                    print(f"  {r.label:<52} {r.error}", flush=True)
                    continue
                if bad or x["requests"] == 0:
                    non2xx = sum(w["status_errors"] for w in runs)
                    r.error, failed = f"{non2xx} non-2xx, {bad - non2xx} socket errors", True
                    print(f"  {r.label:<52} {r.error}", flush=True)
                    continue
                if reconnects := sum(w.get("reconnects", 0) for w in runs):
                    print(f"  {r.label:<52} note: {reconnects} request(s) without keep-alive (new TLS connections)",
                          flush=True)
                x["rps"] = x["requests"] / (x["duration_us"] / 1e6)
                r.rounds.append(x)
                print(f"  {r.label:<52} {x['rps']:>9,.0f} req/s  p50 {x['p50_us'] / 1000:.2f} ms  "
                      f"p99 {x['p99_us'] / 1000:.2f} ms  CPU {x['cpu_us']:.0f} µs/req"
                      + (f"  Cerbos CPU {x['pdp_cpu_us']:.0f} µs/req" if r.pdp_route else ""), flush=True)
        for r in rows:
            if r.rounds and not r.error:
                r.result = {k: statistics.median(x[k] for x in r.rounds)
                            for k in ("rps", "p50_us", "p99_us", "cpu_us", "pdp_cpu_us")}
                r.result["spread"] = (max(x["rps"] for x in r.rounds) - min(x["rps"] for x in r.rounds)) / r.result["rps"]

        # Once per token: each cold set twice over, to a listener with the cache on.
        checks: list[Check] = []
        if checks_todo:
            print("checks: each cold set sent twice to Tollgate with the cache on", flush=True)
        for c in checks_todo:
            seq = token_sets[c.tokens]
            before = snapshot(admin_port, None)
            t0 = time.monotonic()
            statuses = drive(ports[c.listener], seq + seq, args.connections)
            d: Counter = Counter()
            add_delta(d, before, snapshot(admin_port, None))
            allowed, hits = d.get("tollgate.issuer.once.allowed"), d.get("tollgate.issuer.once.cache_hit")
            if moved := strays(d, "tollgate.issuer.once."):
                checks.append(Check(c.label, False, f"other counters moved during this check: {moved}"))
            elif allowed is None or hits is None:
                checks.append(Check(c.label, False, "tollgate.issuer.once.{allowed,cache_hit} missing from /stats"))
            else:
                others = {s: n for s, n in statuses.items() if s != 200}
                ok = not others and allowed - hits == len(seq) and allowed == 2 * len(seq)
                checks.append(Check(c.label, ok, f"{allowed - hits:,} verifications for {len(seq):,} distinct tokens "
                                                 f"each sent twice ({allowed:,} allowed, {hits:,} cache hits"
                                                 + (f"; non-200 answers: {others}" if others else "")
                                                 + f"; {time.monotonic() - t0:.1f}s)"))
            print(f"  {checks[-1].line()}", flush=True)
        for r in rows:
            if r.rounds and not r.error:
                probe_token = token_sets[r.probe or r.tokens][0]
                checks += row_checks(r, token_sets[r.tokens], probe_token, args.concurrency)
                if r.pdp_route:
                    checks.append(pdp_check(r))
                if r.upstream:
                    jwks_url = (f"http://127.0.0.1:{oidc_port}/jwks" if r.upstream == "exchange" else
                                f"http://127.0.0.1:{ports[r.listener]}/.well-known/tollgate/jwks.json")
                    checks += upstream_checks(r, probe_token, args.concurrency, jwks_url)
                if r.driver == "dpop":
                    # Every proof sent once (the pool never repeats one) and every one accepted:
                    # one allowed request per proof, the probe's included, and nothing refused.
                    p = f"tollgate.issuer.{r.issuer}."
                    allowed = r.delta.get(p + "allowed", 0)
                    denied = sum(v for k, v in r.delta.items() if k.startswith(p + "denied."))
                    sent = sum(x["requests"] for x in r.rounds)
                    checks.append(Check(r.label + ", proofs", denied == 0 and allowed >= sent,
                                        f"{r.proofs_sent:,} proofs handed to wrk, each once ({r.proofs_skipped:,} of "
                                        f"seconds that passed skipped unused); {allowed:,} requests allowed "
                                        f"(timed rounds: {sent:,}), {denied:,} refused"))
        checks += sanity_checks(rows, ports, token_sets, dpop_key, keys)
        for c in checks[-3:]:
            if c.label.startswith("tg-"):
                print(f"  {c.line()}", flush=True)
        counters_after = counters(admin_port, r"^(wasmcustom\.tollgate\.|http\.[^.]+\.jwt_authn\.)")
        as_total = as_introspections(dot_port) if any(r.opaque and not r.error for r in rows) else None
        # Envoy's connections to Cerbos over the run: the PDP calls reuse a few keep-alive ones
        if cerbos is not None:
            cerbos_cluster = counters(admin_port, r"^cluster\.cerbos\.upstream_(cx|rq)_total$")
        if oidc is not None and any(r.upstream == "exchange" and not r.error for r in rows):
            exchanges_total = as_exchanges(oidc_port)
    finally:
        if _wrk is not None and _wrk.poll() is None:
            _wrk.kill()
            _wrk.wait()
        if proc is not None:
            proc.stop()
        if dot is not None:
            dot.stop()
        if cerbos is not None:
            cerbos.stop()
        if oidc is not None:
            oidc.stop()

    # The replay store's memory with 10,000 live proofs, in an Envoy of its own (not in --quick:
    # 10,000 DPoP requests).
    replay_lines = []
    if not args.quick and any(r.label == DPOP_ROW for r in rows):
        print("replay store: memory with 10,000 live proofs (an Envoy of its own)", flush=True)
        try:
            replay_lines = replay_memory(args.concurrency, keys, jwks)
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            replay_lines, failed = [f"- FAILED: {e}"], True
        print("\n".join(replay_lines), flush=True)

    # The token cache's memory with 10,000 cached tokens, in an Envoy of its own (not in --quick).
    cache_memory_lines = []
    if not args.quick and (not args.only or any("memory" in o for o in args.only)):
        print("token cache: memory with 10,000 cached tokens (an Envoy of its own)", flush=True)
        try:
            cache_memory_lines = token_cache_memory(args.concurrency, keys, jwks)
        except (RuntimeError, OSError, KeyError, ValueError) as e:
            cache_memory_lines, failed = [f"- FAILED: {e}"], True
        print("\n".join(cache_memory_lines), flush=True)

    # Plugin start: on_configure with 10 and 100 issuers (bench/configure.py), in Envoys of their own.
    configure_lines = []
    if not args.only or any("configure" in o for o in args.only):
        try:
            for count in configure.COUNTS:
                for label, inline in ((f"inline JWKS, {3 * count} keys", True), ("discovery", False)):
                    ms = configure.measure(f"{label.split(',')[0].replace(' ', '-')}-{count}",
                                           configure.config(inline, count), concurrency=args.concurrency + 1)
                    configure_lines.append(f"- configure, {count} issuers ({label}): median "
                                           f"{statistics.median(ms):.2f} ms, max {max(ms):.2f} ms over {len(ms)} "
                                           "on_configure calls")
        except (SystemExit, RuntimeError) as e:
            configure_lines.append(f"- configure: FAILED ({e})")
            failed = True
        print("\n".join(configure_lines), flush=True)

    # The fleet (bench/fleet.py): the AS's load with 1 and 3 Envoy processes (small with --quick),
    # so that one `bench/run` produces every part of issue 18's report.
    fleet_lines = []
    if not args.only:
        try:
            fleet_lines, fleet_ok = fleet.run(quick=args.quick, concurrency=args.concurrency)
            failed = failed or not fleet_ok
        except (RuntimeError, OSError, KeyError, ValueError, rig_tokens.TokenError) as e:
            fleet_lines, failed = [f"- FAILED: {e}"], True
        print("\n".join(fleet_lines), flush=True)

    # Host calls per warm request, by call name (bench/hostcalls.py: the same .wasm in
    # tests/minihost, as Envoy runs it and as APISIX does): what no req/s figure shows.
    hostcall_lines = []
    if not args.only or any("host" in o for o in args.only):
        try:
            hostcall_lines = [hostcalls.table(hostcalls.measure(TOLLGATE_WASM, 3))]
        except (SystemExit, RuntimeError, OSError) as e:
            hostcall_lines, failed = [f"- FAILED: {e}"], True
        print("\n".join(hostcall_lines), flush=True)

    # Issue 18, how cost grows (bench/curves.py): Envoys of their own, after everything else.
    curve_lines: list[str] = []
    if not args.only or any("curve" in o for o in args.only):
        curve_lines, curves_ok = curves.run(args)
        failed = failed or not curves_ok

    if any(c.ok is False for c in checks):
        failed = True
    version = subprocess.run([str(envoy.envoy_binary()), "--version"], capture_output=True, text=True).stdout
    version = (re.search(r"version: (\S+)", version) or re.search(r"(.*)", version)).group(1)
    cerbos_version = ""
    if audit is not None:
        audit()
        out = subprocess.run([str(cerbos_binary()), "--version"], capture_output=True, text=True).stdout
        cerbos_version = (re.search(r"(\d+\.\d+\.\d+)", out) or re.search(r"(.*)", out)).group(1)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    interesting = {k: v for k, v in counters_after.items()
                   if v and re.search(r"(tollgate\.issuer\.[^.]+\.(allowed|cache_hit|denied\..*|introspection\.(calls|coalesced|failed\..*))"
                                      r"|tollgate\.route\.[^.]+\.authz\.[a-z_]+|tollgate\.upstream_token\.[a-z_.]+"
                                      r"|tollgate\.denied\..*|jwt_authn\.(allowed|denied|jwt_cache_(hit|miss)))$", k)}
    mix = token_sets.get("mix")
    report = "\n".join([
        f"# Tollgate bench, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "",
        "- command: `" + " ".join(["bench/run"] + [shlex.quote(a) for a in sys.argv[1:]]) + "`",
        f"- Envoy {version}, --concurrency {args.concurrency}; wrk -t1 -c{args.connections}, "
        f"{args.rounds} interleaved round(s) of {args.duration}s per row (median shown)"
        + (f" after a {warmup}s warm-up" if warmup else ", no warm-up")
        + f"; cold sets: {args.tokens:,} distinct tokens per alg",
        *([f"- Zipf mix: {len(set(mix)):,} distinct {MIX_ALG} tokens in a sequence of {len(mix):,} requests "
           f"(weight of rank k: 1/k^{args.zipf}, seed {args.seed}; the most popular token is "
           f"{mix.count(mix[0]) / len(mix):.0%} of requests) cycled by wrk; native jwt_cache_size "
           f"{max(1000, 4 * args.mix_tokens):,}"] if mix else []),
        *([f"- opaque: django-oauth-toolkit 3.4.1 (tests/rig/as_dot) on 127.0.0.1, dot_ tokens "
           f"(client_credentials) introspected by Tollgate through the Envoy cluster as-dot; "
           f"the AS served {as_total:,} introspection requests in all"] if as_total is not None else []),
        *([f"- policy decisions: Cerbos {cerbos_version} (tests/rig/pdp, the rig's policies and configuration: "
           f"audit log of every call and decision, info log) on 127.0.0.1, through the Envoy cluster cerbos; "
           f"it logged {audit.count:,} decisions in all; Envoy sent it "
           f"{cerbos_cluster.get('cluster.cerbos.upstream_rq_total', 0):,} requests over "
           f"{cerbos_cluster.get('cluster.cerbos.upstream_cx_total', 0):,} connections"] if audit is not None else []),
        *([f"- upstream tokens: the rig's oidc-provider (tests/rig/as_oidc) on 127.0.0.1 as AS-1, its keys and its "
           f"RFC 8693 token exchange reached through the Envoy cluster as-oidc; it served {exchanges_total:,} "
           f"token exchange requests in all"] if exchanges_total is not None else []),
        f"- machine: {os.cpu_count()} CPUs, {cpu}",
        f"- tollgate.wasm: {TOLLGATE_WASM.stat().st_size:,} bytes",
        *([f"- baseline: {args.baseline} ({args.baseline.stat().st_size:,} bytes); vs baseline: this "
           f"build's row against the same row of that module, in the same Envoy"] if args.baseline else []),
        "",
        table(rows),
        "",
        "req/s, p50, p99: median over the rounds; spread: (max - min) / median req/s over the rounds. "
        "vs native: warm rows against native jwt_authn with jwt_cache_config, cold rows against native "
        "jwt_authn without cache, same algorithm; the Zipf mix against native jwt_authn with a cache on "
        "the same sequence. Opaque rows have no native counterpart: compare with the no-op floor.",
        "",
        "## Checks",
        "",
        f"Counted over the whole run (all rounds, warm-up and probe included) with {args.concurrency} Envoy "
        "worker(s); the target is one verification or introspection per distinct token per Envoy process.",
        "",
        *[f"- {c.line()}" for c in checks],
        "",
        *(["## Replay store memory", "", *replay_lines, ""] if replay_lines else []),
        *(["## Token cache memory", "", *cache_memory_lines, ""] if cache_memory_lines else []),
        *(["## Plugin start", "", *configure_lines, ""] if configure_lines else []),
        *(["## The fleet", "", *fleet_lines, ""] if fleet_lines else []),
        *(["## Host calls per warm request", "",
           "Counted in tests/minihost (bench/hostcalls.py) on this .wasm: \"envoy\" with shared data, "
           "a tick, the clock and metrics as Envoy has them; \"apisix\" without them. Inline JWKS; "
           "the first request verifies, a warm one is counted (every warm request makes the same calls).",
           "", *hostcall_lines, ""] if hostcall_lines else []),
        *(["## How cost grows", "", *curve_lines, ""] if curve_lines else []),
        "Counters after the run: " + ", ".join(f"`{k}` {v:,}" for k, v in sorted(interesting.items())),
        "",
        f"Run time {time.monotonic() - t_start:.0f}s (bench.py); result: {'FAILED' if failed else 'ok'}.",
        "",
    ])
    print()
    print(report)
    Path(args.out).write_text(report)
    print(f"bench: written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        sys.exit(130)
