"""DPoP (RFC 9449) at the resource, end to end (issue 15): the real tollgate.wasm in a real Envoy
with two workers, real oidc-provider DPoP-bound tokens (client `dpop-client`: JWTs with
`cnf.jkt`, and opaque tokens whose introspection answer names `cnf.jkt`), and proofs made by a
real client library.

Where the proofs come from
--------------------------
- **The library**: npm openid-client 6.9.1 (on oauth4webapi 3.8.9) through tests/rig/rp/rp.mjs.
  `dpop_fetch` is the library calling the API itself (`fetchProtectedResource` with its DPoP
  handle: proof, `DPoP` scheme, one retry on `use_dpop_nonce`); `dpop_proof` is the same call
  with a `customFetch` that captures the headers instead of sending them, so a test can send
  the library's own proof itself: once, twice (replay), to another URL or with another method,
  with another token, or from a client whose clock is off (the library's `clockSkew` client
  metadata). The DPoP key pair is the library's (`randomDPoPKeyPair`, ES256), kept in a file.
- **Hostile proofs no library makes** (alg `none`, HS256, private members in `jwk`, a wrong
  `typ`, a query in `htu`): PyPI joserfc signs a library proof's own header and claims with
  exactly one thing changed, with the client's real key. A control re-signs them unchanged and
  must pass, so each hostile variant is refused for its one defect.
- Thumbprints the upstream must see are computed by joserfc (RFC 7638) from the client's
  public key, never by code that mirrors Tollgate's checks.

The witness is the upstream's own log (tests/rig/upstream.py: `> METHOD PATH` as soon as a
request's headers reach it): every request carries a path of its own, and every refused one
must never appear there; an allowed one exactly once.

Rig configuration (tests/rig/stack.py): route `dpop` (`/api/dpop`, `require.dpop: required`)
before the generic `/api` routes, where as1's default mode (`allowed`) applies; as2
(django-oauth-toolkit, which cannot mint DPoP-bound tokens) has `dpop.mode: off`. Private
deployments: as1 with `dpop.require_nonce` (server nonce) and `identity.authorization:
"bearer"`.

Request bodies (POST at once, chunked, chunked with trailers, HTTP/2 DATA with and without
trailers) are here and not in tests/e2e/test_request_path.py's matrix: that matrix's cells are
"why Tollgate waits x shape x verdict" with Bearer tokens and one judge for Bearer
challenges, while a DPoP cell needs a proof made for its own path, method and `:authority`,
and a verdict per proof (valid, replayed, other method); they would be a second matrix inside
the first.

Run time: about 100 s (three deployments: the module's, one with the server nonce, one with
identity.authorization "bearer"; each openid-client call is a Node process, ~0.5 s).
"""

from __future__ import annotations

import http.client
import json
import re
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from joserfc import jwk as jose_jwk
from joserfc import jws as jose_jws

import envoy as rig_envoy
import rp_client
import stack as rig_stack
import tokens
import wire
from procs import free_port

DPOP_ROUTE = "/api/dpop"  # require.dpop: required
ANY_ROUTE = "/api/orders"  # as1's default: DPoP allowed, Bearer too
BEARER = 'Bearer realm="tollgate"'
ALGS = 'DPoP algs="ES256 EdDSA"'
SETTLE = 0.3  # before reading the upstream's or Envoy's log
KINDS = ["jwt", "opaque"]


REPLAYED = "the DPoP proof was used before"
WRONG_METHOD = "the DPoP proof is for another method"
WRONG_URI = "the DPoP proof is for another URI"
WRONG_ATH = "the DPoP proof's ath does not match the access token"
STALE = "the DPoP proof's iat is outside the accepted window"
PRIVATE = "the DPoP proof's jwk holds a private key"
ALG = "the DPoP proof's algorithm is not accepted"
NOT_DPOP = "the DPoP proof's typ is not dpop+jwt"
NO_PROOF = "the request carries no DPoP proof"
TWO_PROOFS = "the request carries more than one DPoP header"
WRONG_KEY = "the DPoP proof's key is not the one the token is bound to"
DOWNGRADE = "the token is DPoP-bound: present it with the DPoP scheme"
NOT_BOUND = "the token is not DPoP-bound"
REQUIRED = "this resource requires a DPoP-bound token"
DPOP_OFF = "DPoP-bound tokens are not accepted for this resource"
USE_NONCE = "the DPoP proof must carry the server nonce in DPoP-Nonce"


# --------------------------------------------------------------------------------- deployment


class DpopStack(rig_stack.Stack):
    """The standard stack (tests/rig/stack.py's plugin configuration) with two Envoy workers,
    and request trailers passed by Envoy's HTTP/1 codec (`enable_trailers`; without it the
    codec drops them before any filter)."""

    def start_envoy(self, **kwargs) -> rig_envoy.EnvoyProc:
        config = rig_envoy.render(self.listener_port, free_port(), rig_stack.WASM, self.plugin_config(),
                                  self.clusters(), rig_stack.gateway_routes())
        rig_envoy.enable_trailers(rig_envoy.http_connection_manager(config))
        kwargs.setdefault("concurrency", self.concurrency)
        self.procs["envoy"] = rig_envoy.start_envoy(config=config, log_dir=self.workdir, **kwargs)
        return self.envoy


@pytest.fixture(scope="module")
def st(wasm, tmp_path_factory):
    s = DpopStack(tmp_path_factory.mktemp("dpop"), concurrency=2)
    s.start()
    yield s
    s.stop()


# --------------------------------------------------------------------------------- the client


@dataclass
class DpopClient:
    """openid-client as `dpop-client` with one DPoP key pair (the library's, kept in key_file)."""

    st: rig_stack.Stack
    key_file: Path

    def run(self, op: str, **args) -> dict:
        out = rp_client.run(op, server=f"{self.st.as1_issuer}/.well-known/openid-configuration",
                            client_id="dpop-client", client_secret="dpop-secret", auth="basic",
                            key_file=str(self.key_file), **args)
        return out

    def tokens(self, kind: str, n: int, scope: str = "read write") -> list[str]:
        """n DPoP-bound access tokens: JWTs (resource indicator) or opaque."""
        args = {"resource": "https://api.test/jwt"} if kind == "jwt" else {}
        out = self.run("dpop_client_credentials", scope=scope, count=n, **args)
        assert "error" not in out, out
        for r in out["responses"]:
            assert r["token_type"] == "dpop", r  # (oauth4webapi lower-cases token_type)
        return [r["access_token"] for r in out["responses"]]

    def proof(self, path: str, token: str, method: str = "GET", **kw) -> str:
        """The library's DPoP header for `method` on this stack's `path` with `token`."""
        out = self.run("dpop_proof", url=self.st.url + path, method=method, access_token=token, **kw)
        assert "error" not in out, out
        assert out["authorization"] == f"DPoP {token}", out
        return out["dpop"]

    def proofs(self, wanted: list[tuple[str, str, str]]) -> list[str]:
        """One library proof per (path, method, token), from one handle."""
        out = self.run("dpop_proof", requests=[{"url": self.st.url + p, "method": m, "access_token": t}
                                               for p, m, t in wanted])
        assert "error" not in out, out
        return [p["dpop"] for p in out["proofs"]]

    def fetch(self, path: str, token: str, method: str = "GET", body: str | None = None,
              headers: dict | None = None) -> dict:
        """The library calls the API itself: {status, headers, body}, or {"error": ...}."""
        return self.run("dpop_fetch", url=self.st.url + path, method=method, access_token=token,
                        body=body, headers=headers)

    def private_jwk(self) -> dict:
        jwk = json.loads(self.key_file.read_text())
        return {k: jwk[k] for k in ("kty", "crv", "x", "y", "d")}

    def key(self) -> jose_jwk.ECKey:
        return jose_jwk.ECKey.import_key(self.private_jwk())

    @property
    def thumbprint(self) -> str:
        """RFC 7638 thumbprint of the public key, by joserfc."""
        public = {k: v for k, v in self.private_jwk().items() if k != "d"}
        return jose_jwk.ECKey.import_key(public).thumbprint()


@pytest.fixture(scope="module")
def alice(st, tmp_path_factory) -> DpopClient:
    return DpopClient(st, tmp_path_factory.mktemp("alice") / "dpop-key.json")


@pytest.fixture(scope="module")
def mallory(st, tmp_path_factory) -> DpopClient:
    """Another DPoP key pair (the library's too), holding none of alice's tokens."""
    return DpopClient(st, tmp_path_factory.mktemp("mallory") / "dpop-key.json")


@pytest.fixture(scope="module")
def bound(alice) -> dict[str, list[str]]:
    """Two of alice's DPoP-bound tokens of each kind (scope read write)."""
    return {kind: alice.tokens(kind, 2) for kind in KINDS}


# --------------------------------------------------------------------------------- helpers


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


def arrivals(st: rig_stack.Stack) -> Counter:
    """Paths (without query) the upstream received: its `> METHOD PATH` lines."""
    text = st.procs["upstream"].log_text()
    return Counter(line.split(" ", 2)[2] for line in text.splitlines()
                   if line.startswith("> ") and line.count(" ") >= 2)


def never_reached(st: rig_stack.Stack, *paths: str) -> None:
    time.sleep(SETTLE)
    seen = arrivals(st)
    reached = {p: seen[p.split("?")[0]] for p in paths if seen[p.split("?")[0]]}
    assert not reached, f"refused, but the upstream saw: {reached}"


def reached_once(st: rig_stack.Stack, *paths: str) -> None:
    time.sleep(SETTLE)
    seen = arrivals(st)
    wrong = {p: seen[p.split("?")[0]] for p in paths if seen[p.split("?")[0]] != 1}
    assert not wrong, f"allowed, and the upstream saw them this many times: {wrong}"


def call(st: rig_stack.Stack, path: str, token: str | None, proof: str | list[str] | None = None,
         scheme: str = "DPoP", method: str = "GET", headers: dict | None = None) -> requests.Response:
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = f"{scheme} {token}"
    if isinstance(proof, str):
        h["DPoP"] = proof
    return requests.request(method, st.url + path, headers=h, timeout=15)


def challenge(error: str | None = None, description: str | None = None, bearer: bool = True) -> str:
    """The WWW-Authenticate value (requests joins the two headers with ", "): a route that takes
    both schemes sends Bearer's and DPoP's, a DPoP-required route DPoP's only; a DPoP error is
    in the DPoP challenge."""
    dpop = ALGS if error is None else f'{ALGS}, error="{error}", error_description="{description}"'
    return f"{BEARER}, {dpop}" if bearer else dpop


def answer_of(r) -> tuple[int, dict[str, str], str]:
    """(status, lower-case headers, body) of a requests.Response, an Answer or a wire.Reply."""
    status = r.status_code if hasattr(r, "status_code") else r.status
    headers = {k.lower(): v for k, v in r.headers.items()}
    body = r.text if hasattr(r, "text") else r.body.decode()
    return status, headers, body


def assert_refused(r, error: str, description: str, route: str, status: int = 401) -> None:
    """Status, JSON body and the exact challenge(s) of the route."""
    status_code, headers, body = answer_of(r)
    assert status_code == status, (status_code, headers, body)
    assert headers.get("www-authenticate") == challenge(error, description, bearer=route != DPOP_ROUTE), headers
    assert json.loads(body) == {"error": error, "error_description": description}


def echo_of(r) -> dict:
    """The upstream's echo of an allowed request."""
    status, headers, body = answer_of(r)
    assert status == 200, (status, headers, body)
    return json.loads(body)


def fetched(out: dict) -> dict:
    """The upstream's echo, from what dpop_fetch printed (the library's own call; a refusal
    shows as the library's error, with the challenges it parsed)."""
    assert out.get("status") == 200, out
    return json.loads(out["body"])


def stat(st: rig_stack.Stack, name: str) -> int:
    return st.stats(name).get(name, 0)


# --- hostile proofs, made with joserfc from a library proof -------------------------------


def resign(library_proof: str, key, header: dict | None = None, claims: dict | None = None,
           alg: str | None = None) -> str:
    """The library proof's header and claims, with `header` / `claims` members replaced (None
    removes one), signed by joserfc with `key` under `alg` (default: the header's)."""
    h, c = tokens.decode_unverified(library_proof)
    for target, changes in ((h, header or {}), (c, claims or {})):
        for k, v in changes.items():
            if v is None:
                target.pop(k, None)
            else:
                target[k] = v
    alg = alg or h["alg"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns about "none"
        return jose_jws.serialize_compact(h, json.dumps(c, separators=(",", ":")), key, algorithms=[alg])


def hostile(case: str, library_proof: str, client: DpopClient, st: rig_stack.Stack, path: str) -> str:
    key = client.key()
    public = {k: v for k, v in client.private_jwk().items() if k != "d"}
    if case == "control-resigned":
        return resign(library_proof, key)
    if case == "alg-none":
        # The client's own public key in `jwk` (its thumbprint is the token's cnf.jkt), no signature.
        return resign(library_proof, None, header={"alg": "none"})
    if case == "alg-hs256":
        # Key confusion: HMAC keyed with the public key the header names.
        secret = jose_jwk.OctKey.import_key(json.dumps(public, sort_keys=True).encode())
        return resign(library_proof, secret, header={"alg": "HS256"})
    if case == "private-jwk":
        return resign(library_proof, key, header={"jwk": client.private_jwk()})
    if case == "typ-jwt":
        return resign(library_proof, key, header={"typ": "JWT"})
    if case == "htu-query-trick":
        # htu names another path and puts this one in its query: the query is not part of htu.
        return resign(library_proof, key, claims={"htu": f"{st.url}/api/other?{path}"})
    raise ValueError(case)


# --------------------------------------------------------------------------------- the rig


def test_the_as_binds_tokens_to_the_clients_key(st, alice, bound):
    """oidc-provider binds dpop-client's tokens to the library's key: the JWT's cnf.jkt, and the
    opaque token's introspection answer, name the thumbprint joserfc computes from the public
    key in the client's key file (which the library itself also reports)."""
    jkt = alice.thumbprint
    assert tokens.decode_unverified(bound["jwt"][0])[1]["cnf"] == {"jkt": jkt}
    answer = tokens.introspect(f"{st.as1_issuer}/token/introspection", bound["opaque"][0], "rs-client", "rs-secret")
    assert answer["active"] is True and answer["cnf"] == {"jkt": jkt}
    assert answer["token_type"] == "DPoP"
    out = alice.run("dpop_proof", url=st.url + "/x", method="GET", access_token=bound["jwt"][0])
    assert out["thumbprint"] == jkt


# --------------------------------------------------------------------------------- what passes


@pytest.mark.parametrize("route", [DPOP_ROUTE, ANY_ROUTE], ids=["required", "allowed"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_library_calls_the_api(st, alice, kind, route):
    """openid-client's fetchProtectedResource: 200; the upstream sees the binding header with
    the client key's thumbprint and the request's Authorization and DPoP as sent. A second
    call (a fresh proof; the token is cached now) passes too, from the cache."""
    token = alice.tokens(kind, 1)[0]
    paths = [unique(route), unique(route)]
    hits, calls = stat(st, "tollgate.issuer.as1.cache_hit"), stat(st, "tollgate.issuer.as1.introspection.calls")
    proofs = []
    for path in paths:
        echo = fetched(alice.fetch(path, token))
        assert echo["path"] == path
        seen = echo["headers"]
        assert seen["x-tollgate-cnf"] == f"dpop;jkt={alice.thumbprint}"
        assert seen["authorization"] == f"DPoP {token}"  # identity.authorization: unchanged
        header, claims = tokens.decode_unverified(seen["dpop"])
        assert header["typ"] == "dpop+jwt" and claims["htu"] == st.url + path and claims["htm"] == "GET"
        assert seen["x-tollgate-client-id"] == "dpop-client" and seen["x-tollgate-issuer"] == "as1"
        proofs.append(claims["jti"])
    assert proofs[0] != proofs[1]
    assert stat(st, "tollgate.issuer.as1.cache_hit") >= hits + 1  # the second call
    if kind == "opaque":
        assert stat(st, "tollgate.issuer.as1.introspection.calls") == calls + 1
    reached_once(st, *paths)


def test_a_query_string_is_not_part_of_the_proof(st, alice, bound):
    """RFC 9449 §4.3: htu has no query; the library leaves it out, and the request with a
    query passes, the query reaching the upstream."""
    path = unique(DPOP_ROUTE) + "?page=2&next=/api/other"
    echo = fetched(alice.fetch(path, bound["jwt"][0]))
    assert echo["path"] == path
    assert tokens.decode_unverified(echo["headers"]["dpop"])[1]["htu"] == st.url + path.split("?")[0]
    reached_once(st, path)


def test_a_post_with_a_json_body_from_the_library(st, alice, bound):
    """fetchProtectedResource POSTs a JSON body (htm POST): the upstream gets it whole."""
    body = json.dumps({"order": uuid.uuid4().hex, "qty": 1000})
    for route in (DPOP_ROUTE, ANY_ROUTE):
        path = unique(route)
        echo = fetched(alice.fetch(path, bound["jwt"][0], method="POST", body=body,
                                   headers={"content-type": "application/json"}))
        assert echo["method"] == "POST" and echo["body_len"] == len(body)
        assert tokens.decode_unverified(echo["headers"]["dpop"])[1]["htm"] == "POST"
        reached_once(st, path)


@pytest.fixture(scope="module")
def bearer_st(wasm, tmp_path_factory):
    """A private deployment with identity.authorization "bearer"."""
    s = rig_stack.Stack(tmp_path_factory.mktemp("dpop-bearer"), config_overrides={
        "identity": {"payload_header": "x-tollgate-claims", "authorization": "bearer"}})
    s.start()
    yield s
    s.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_identity_authorization_bearer(bearer_st, kind):
    """identity.authorization "bearer": the upstream gets `Authorization: Bearer <token>` and no
    DPoP header (the proof was checked and is removed), plus the binding header."""
    st = bearer_st
    client = DpopClient(st, st.workdir / "dpop-key.json")
    token = client.tokens(kind, 1)[0]
    for route in (DPOP_ROUTE, ANY_ROUTE):
        path = unique(route)
        seen = echo_of(call(st, path, token, client.proof(path, token)))["headers"]
        assert seen["authorization"] == f"Bearer {token}"
        assert "dpop" not in seen
        assert seen["x-tollgate-cnf"] == f"dpop;jkt={client.thumbprint}"
        reached_once(st, path)
    # An unbound Bearer token on a route that allows DPoP is forwarded as it came.
    unbound = st.as1_token()
    seen = echo_of(call(st, unique(ANY_ROUTE), unbound, scheme="Bearer"))["headers"]
    assert seen["authorization"] == f"Bearer {unbound}" and "x-tollgate-cnf" not in seen


def test_a_spoofed_binding_header_never_reaches_the_upstream(st, alice, bound):
    """x-tollgate-cnf is Tollgate's: a client's copy is removed (an unbound token gets none, a
    bound one gets Tollgate's value only)."""
    spoof = {"X-Tollgate-Cnf": "dpop;jkt=forged", "x_tollgate_cnf": "dpop;jkt=forged"}
    seen = echo_of(call(st, unique(ANY_ROUTE), st.as1_token(), scheme="Bearer", headers=spoof))["headers"]
    assert not {k for k in seen if "cnf" in k}, seen
    path = unique(DPOP_ROUTE)
    token = bound["jwt"][0]
    seen = echo_of(call(st, path, token, alice.proof(path, token), headers=spoof))["headers"]
    assert seen["x-tollgate-cnf"] == f"dpop;jkt={alice.thumbprint}"
    assert "x_tollgate_cnf" not in seen


# --------------------------------------------------------------------------------- replay


def accepted_by_worker(st: rig_stack.Stack) -> dict[str, int]:
    """Envoy's per-worker listener counter: connections each worker accepted
    (`listener.<address>.worker_<n>.downstream_cx_total`)."""
    out = {}
    for name, value in st.stats(f"listener.127.0.0.1_{st.listener_port}.").items():
        m = re.search(r"\.(worker_\d+)\.downstream_cx_total$", name)
        if m:
            out[m.group(1)] = value
    return out


def worker_of_new_connection(st: rig_stack.Stack, before: dict[str, int]) -> str | None:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        now = accepted_by_worker(st)
        moved = [w for w, n in now.items() if n > before.get(w, 0)]
        if moved:
            return moved[0] if len(moved) == 1 else None
        time.sleep(0.01)
    return None


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self):
        return json.loads(self.body)


def send_on(conn: http.client.HTTPConnection, path: str, headers: dict) -> Answer:
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    body = r.read()
    return Answer(r.status, {k.lower(): r.getheader(k) for k in set(r.headers.keys())}, body)


def pinned_connections(st: rig_stack.Stack, tries: int = 40) -> dict[str, http.client.HTTPConnection]:
    """One open keep-alive connection per Envoy worker. Envoy serves a connection on the worker
    that accepted it, and which worker accepted it shows in that worker's listener counter,
    read right after connecting (nothing else connects to the listener meanwhile)."""
    pinned: dict[str, http.client.HTTPConnection] = {}
    for _ in range(tries):
        before = accepted_by_worker(st)
        conn = http.client.HTTPConnection("127.0.0.1", st.listener_port, timeout=15)
        conn.connect()
        worker = worker_of_new_connection(st, before)
        if worker and worker not in pinned:
            pinned[worker] = conn
        else:
            conn.close()
        if len(pinned) == st.concurrency:
            return pinned
    pytest.fail(f"could not get a connection on each of {st.concurrency} workers: {sorted(pinned)}")


@pytest.mark.parametrize("kind", KINDS)
def test_a_proof_replayed_on_the_same_connection(st, alice, bound, kind):
    """The same proof twice on one keep-alive connection (so on one worker): the second is
    refused, and never reaches the upstream (its path is the first's: seen exactly once)."""
    token = bound[kind][0]
    path = unique(DPOP_ROUTE)
    proof = alice.proof(path, token)
    headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
    conn = http.client.HTTPConnection("127.0.0.1", st.listener_port, timeout=15)
    try:
        before = accepted_by_worker(st)
        echo_of(send_on(conn, path, headers))
        denied = stat(st, "tollgate.issuer.as1.denied.invalid_dpop_proof")
        assert_refused(send_on(conn, path, headers), "invalid_dpop_proof", REPLAYED, DPOP_ROUTE)
        assert stat(st, "tollgate.issuer.as1.denied.invalid_dpop_proof") == denied + 1
        assert sum(accepted_by_worker(st).values()) == sum(before.values()) + 1, "one connection"
    finally:
        conn.close()
    reached_once(st, path)


@pytest.mark.parametrize("kind", KINDS)
def test_a_proof_replayed_on_the_other_worker(st, alice, bound, kind):
    """Envoy runs 2 workers (each its own wasm VM); the replay store is in the process's
    shared data. How we know both workers are exercised: one keep-alive connection pinned to
    each worker (which worker accepted a connection is read from Envoy's per-worker listener
    counter right after connecting); a proof used on worker_0 is replayed on worker_1 and the
    other way round. Then the same proofs are replayed on fresh connections until each worker
    has refused at least two of them (again counted per worker). The pinned connections must
    not have reconnected meanwhile (the per-worker totals moved only by the fresh ones)."""
    token = bound[kind][0]
    pinned = pinned_connections(st)
    w0, w1 = sorted(pinned)
    paths = {w0: unique(DPOP_ROUTE), w1: unique(DPOP_ROUTE)}
    proofs = dict(zip(paths, alice.proofs([(paths[w], "GET", token) for w in paths])))
    try:
        before = accepted_by_worker(st)
        for used_on, replayed_on in ((w0, w1), (w1, w0)):
            headers = {"Authorization": f"DPoP {token}", "DPoP": proofs[used_on]}
            echo_of(send_on(pinned[used_on], paths[used_on], headers))
            assert_refused(send_on(pinned[replayed_on], paths[used_on], headers),
                           "invalid_dpop_proof", REPLAYED, DPOP_ROUTE)
        assert accepted_by_worker(st) == before, "a pinned connection was replaced"
        refused_on: Counter = Counter()
        for i in range(40):
            if min(refused_on[w0], refused_on[w1]) >= 2:
                break
            worker = [w0, w1][i % 2]
            headers = {"Authorization": f"DPoP {token}", "DPoP": proofs[worker]}
            conn = http.client.HTTPConnection("127.0.0.1", st.listener_port, timeout=15)
            try:
                ahead = accepted_by_worker(st)
                conn.connect()
                on = worker_of_new_connection(st, ahead)
                assert_refused(send_on(conn, paths[worker], headers), "invalid_dpop_proof", REPLAYED, DPOP_ROUTE)
                refused_on[on] += 1
            finally:
                conn.close()
        assert min(refused_on[w0], refused_on[w1]) >= 2, refused_on
    finally:
        for conn in pinned.values():
            conn.close()
    reached_once(st, *paths.values())


@pytest.mark.parametrize("kind", KINDS)
def test_one_proof_sent_at_once_on_several_connections(st, alice, kind):
    """The same proof (and a token not seen before, so for an opaque one every request waits
    for one introspection answer) on 4 connections at the same instant: exactly one passes."""
    token = alice.tokens(kind, 1)[0]
    path = unique(DPOP_ROUTE)
    proof = alice.proof(path, token)
    headers = [("Authorization", f"DPoP {token}"), ("DPoP", proof)]
    host = f"127.0.0.1:{st.listener_port}"
    reqs = [wire.request("get", "GET", path, headers, host=host) for _ in range(4)]
    conns = [(wire.Conn(st.listener_port, False), r) for r in reqs]
    replies = wire.run_all(conns)
    for r in replies:
        answer_of(r)
    assert sorted(r.status for r in replies) == [200, 401, 401, 401], replies
    for r in replies:
        if r.status == 401:
            assert_refused(r, "invalid_dpop_proof", REPLAYED, DPOP_ROUTE)
    reached_once(st, path)


# --------------------------------------------------------------------------------- refused proofs


# case -> (how the proof is made, error, description); "other-key" is a binding error.
PROOF_CASES = {
    "control-library": ("the library's proof for this request", None, None),
    "control-resigned": ("the library's header and claims, re-signed by joserfc", None, None),
    "control-iat-30s-old": ("the library, clock 30 s behind (inside the 60 s window)", None, None),
    "other-method": ("the library's proof for POST", "invalid_dpop_proof", WRONG_METHOD),
    "other-url": ("the library's proof for another path", "invalid_dpop_proof", WRONG_URI),
    "htu-query-trick": ("htu .../api/other?<this path> (joserfc)", "invalid_dpop_proof", WRONG_URI),
    "request-query-trick": ("the request is /api/orders/x?<the proof's path>", "invalid_dpop_proof", WRONG_URI),
    "other-key": ("the library's proof with another key pair", "invalid_token", WRONG_KEY),
    "ath-other-token": ("the library's proof for another of the client's tokens", "invalid_dpop_proof", WRONG_ATH),
    "iat-old": ("the library, clock 120 s behind", "invalid_dpop_proof", STALE),
    "iat-future": ("the library, clock 120 s ahead", "invalid_dpop_proof", STALE),
    "private-jwk": ("jwk with the private key's d (joserfc)", "invalid_dpop_proof", PRIVATE),
    "alg-none": ("alg none, no signature (joserfc)", "invalid_dpop_proof", ALG),
    "alg-hs256": ("alg HS256 keyed with the public JWK (joserfc)", "invalid_dpop_proof", ALG),
    "typ-jwt": ("typ JWT (joserfc)", "invalid_dpop_proof", NOT_DPOP),
    "no-proof": ("Authorization: DPoP and no DPoP header", "invalid_dpop_proof", NO_PROOF),
    "two-proofs": ("two DPoP headers, each a valid library proof", "invalid_dpop_proof", TWO_PROOFS),
}


def two_dpop_headers(st: rig_stack.Stack, path: str, token: str, proofs: list[str]) -> wire.Reply:
    headers = [("Authorization", f"DPoP {token}")] + [("DPoP", p) for p in proofs]
    return wire.send(st.listener_port, wire.request("get", "GET", path, headers,
                                                    host=f"127.0.0.1:{st.listener_port}"))


@pytest.mark.parametrize("case", list(PROOF_CASES))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("route", [DPOP_ROUTE, ANY_ROUTE], ids=["required", "allowed"])
def test_proof(st, alice, mallory, bound, route, kind, case):
    """One thing wrong with the proof (or nothing, for the controls): status, body, the route's
    exact challenge(s), and the upstream never sees a refused request."""
    _, error, description = PROOF_CASES[case]
    token, other_token = bound[kind]
    path = unique(route)
    sent_to = path
    if case == "control-library":
        proof = alice.proof(path, token)
    elif case in ("control-resigned", "alg-none", "alg-hs256", "private-jwk", "typ-jwt", "htu-query-trick"):
        proof = hostile(case, alice.proof(path, token), alice, st, path)
    elif case == "control-iat-30s-old":
        proof = alice.proof(path, token, clock_skew=-30)
    elif case == "other-method":
        proof = alice.proof(path, token, method="POST")
    elif case == "other-url":
        proof = alice.proof(unique(route), token)
    elif case == "request-query-trick":
        sent_to = unique("/api/orders/other") + "?" + path
        proof = alice.proof(path, token)
    elif case == "other-key":
        proof = mallory.proof(path, token)
    elif case == "ath-other-token":
        proof = alice.proof(path, other_token)
    elif case in ("iat-old", "iat-future"):
        proof = alice.proof(path, token, clock_skew=-120 if case == "iat-old" else 120)
    elif case == "no-proof":
        proof = None
    elif case == "two-proofs":
        r = two_dpop_headers(st, path, token, alice.proofs([(path, "GET", token)] * 2))
        assert_refused(r, error, description, route)
        never_reached(st, path)
        return
    else:
        raise AssertionError(case)
    r = call(st, sent_to, token, proof)
    if error is None:
        assert echo_of(r)["headers"]["x-tollgate-cnf"] == f"dpop;jkt={alice.thumbprint}"
        reached_once(st, sent_to)
        return
    refused_on = DPOP_ROUTE if sent_to.startswith(DPOP_ROUTE) else ANY_ROUTE
    assert_refused(r, error, description, refused_on)
    never_reached(st, sent_to)


# --------------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("route", [DPOP_ROUTE, ANY_ROUTE], ids=["required", "allowed"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_bound_token_sent_as_bearer(st, bound, kind, route):
    """A downgrade: refused as invalid_token, the error in the DPoP challenge."""
    path = unique(route)
    assert_refused(call(st, path, bound[kind][0], scheme="Bearer"), "invalid_token", DOWNGRADE, route)
    never_reached(st, path)


@pytest.mark.parametrize("route", [DPOP_ROUTE, ANY_ROUTE], ids=["required", "allowed"])
@pytest.mark.parametrize("kind", KINDS)
def test_an_unbound_token_with_the_dpop_scheme(st, alice, kind, route):
    """demo-client's token (no cnf) with the DPoP scheme and a valid library proof for it."""
    token = st.as1_token() if kind == "jwt" else st.as1_opaque_token()
    path = unique(route)
    assert_refused(call(st, path, token, alice.proof(path, token)), "invalid_token", NOT_BOUND, route)
    never_reached(st, path)


@pytest.mark.parametrize("kind", KINDS)
def test_an_unbound_bearer_token_where_dpop_is_required(st, kind):
    """Only the DPoP challenge, carrying invalid_token; the same token passes on /api/orders."""
    token = st.as1_token() if kind == "jwt" else st.as1_opaque_token()
    path = unique(DPOP_ROUTE)
    r = call(st, path, token, scheme="Bearer")
    assert_refused(r, "invalid_token", REQUIRED, DPOP_ROUTE)
    assert r.headers["www-authenticate"] == (
        f'DPoP algs="ES256 EdDSA", error="invalid_token", error_description="{REQUIRED}"')
    never_reached(st, path)
    echo_of(call(st, unique(ANY_ROUTE), token, scheme="Bearer"))


def test_no_token_where_dpop_is_required(st):
    r = call(st, unique(DPOP_ROUTE), None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == ALGS


def test_as2_has_dpop_off(st, alice):
    """as2 (django-oauth-toolkit, no DPoP) has dpop.mode off: its tokens pass as Bearer, are
    refused with the DPoP scheme (even with a valid proof), and a route only as2 serves does
    not advertise DPoP."""
    token = st.as2_token()
    echo_of(call(st, unique(ANY_ROUTE), token, scheme="Bearer"))
    path = unique(ANY_ROUTE)
    assert_refused(call(st, path, token, alice.proof(path, token)), "invalid_token", DPOP_OFF, ANY_ROUTE)
    never_reached(st, path)
    r = call(st, unique("/api/hinted"), None)
    assert r.status_code == 401 and r.headers["www-authenticate"] == BEARER


# --------------------------------------------------------------------------------- server nonce


def access_log(st: rig_stack.Stack, path: str) -> list[str]:
    return [ln for ln in st.envoy.log_text().splitlines() if "[access]" in ln and f" {path} " in ln]


@pytest.fixture(scope="module")
def nonce_st(wasm, tmp_path_factory):
    """A private deployment where as1 requires the server nonce (dpop.require_nonce)."""
    s = rig_stack.Stack(tmp_path_factory.mktemp("dpop-nonce"),
                        issuer_overrides={"as1": {"dpop": {"require_nonce": True}}})
    s.start()
    yield s
    s.stop()


def needs_nonce(st: rig_stack.Stack, r, path: str, route: str = DPOP_ROUTE) -> str:
    """401 use_dpop_nonce with a DPoP-Nonce, never upstream; returns the nonce."""
    assert_refused(r, "use_dpop_nonce", USE_NONCE, route)
    nonce = r.headers.get("DPoP-Nonce")
    assert nonce, r.headers
    never_reached(st, path)
    return nonce


@pytest.mark.parametrize("kind", KINDS)
def test_a_proof_without_the_server_nonce(nonce_st, kind):
    """as1 with dpop.require_nonce: a proof without a nonce gets 401 use_dpop_nonce (the error in
    the DPoP challenge) and a DPoP-Nonce header; openid-client, calling the API itself, retries
    once with that nonce and passes (Envoy's access log shows the 401, then the 200)."""
    st = nonce_st
    client = DpopClient(st, st.workdir / "dpop-key.json")
    token = client.tokens(kind, 1)[0]
    for route in (DPOP_ROUTE, ANY_ROUTE):
        path = unique(route)
        needs_nonce(st, call(st, path, token, client.proof(path, token)), path, route)
        path = unique(route)
        fetched(client.fetch(path, token))
        reached_once(st, path)
        statuses = [ln[ln.index("[access]"):].split()[3] for ln in access_log(st, path)]
        assert statuses == ["401", "200"], access_log(st, path)


def test_the_server_nonce_when_wrong_or_stale(nonce_st):
    """A proof with the nonce Tollgate handed out passes (once: replay still applies); a nonce
    Tollgate never issued, and one from before Envoy restarted (the nonce key is per process),
    get use_dpop_nonce again, with a new nonce, which then works. (With a JWT: the nonce is
    checked after the token, whatever its kind; the test above has both kinds.)"""
    st = nonce_st
    client = DpopClient(st, st.workdir / "dpop-key.json")
    jwt = client.tokens("jwt", 1)[0]
    path = unique(DPOP_ROUTE)
    nonce = needs_nonce(st, call(st, path, jwt, client.proof(path, jwt)), path)

    # The nonce as the library uses it after a server's DPoP-Nonce: passes, once.
    path = unique(DPOP_ROUTE)
    proof = client.proof(path, jwt, nonce=nonce)
    assert tokens.decode_unverified(proof)[1]["nonce"] == nonce
    echo_of(call(st, path, jwt, proof))
    assert_refused(call(st, path, jwt, proof), "invalid_dpop_proof", REPLAYED, DPOP_ROUTE)
    reached_once(st, path)

    # A nonce Tollgate never issued.
    path = unique(DPOP_ROUTE)
    needs_nonce(st, call(st, path, jwt, client.proof(path, jwt, nonce="bm90LWEtdG9sbGdhdGUtbm9uY2U")), path)

    # A nonce from before Envoy restarted: stale; the answer names a new one, which works.
    st.envoy.stop()
    st.start_envoy()
    path = unique(DPOP_ROUTE)
    fresh = needs_nonce(st, call(st, path, jwt, client.proof(path, jwt, nonce=nonce)), path)
    assert fresh != nonce
    path = unique(DPOP_ROUTE)
    echo_of(call(st, path, jwt, client.proof(path, jwt, nonce=fresh)))
    reached_once(st, path)


# --------------------------------------------------------------------------------- bodies


BODY_SHAPES = ["first-packet", "chunked", "chunked-trailers", "h2", "h2-trailers"]


@pytest.fixture(scope="module")
def body_tokens(alice) -> dict[str, list[str]]:
    """Per kind, two tokens per shape that no request used before (for an opaque one,
    Tollgate holds the request while it introspects: the body arrives meanwhile)."""
    return {kind: alice.tokens(kind, 2 * len(BODY_SHAPES)) for kind in KINDS}


@pytest.mark.parametrize("shape", BODY_SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_request_with_a_body(st, alice, body_tokens, kind, shape):
    """POST with a JSON body in each shape: a valid proof (htm POST) passes and the upstream
    gets the whole body; the same proof again, and a GET proof (with a token not seen before),
    are refused and never reach the upstream."""
    i = BODY_SHAPES.index(shape)
    token, token_b = body_tokens[kind][2 * i], body_tokens[kind][2 * i + 1]
    host = f"127.0.0.1:{st.listener_port}"
    ok_path, get_path = unique(DPOP_ROUTE), unique(DPOP_ROUTE)
    post_proof, get_proof = alice.proofs([(ok_path, "POST", token), (get_path, "GET", token_b)])
    body = json.dumps({"order": uuid.uuid4().hex, "qty": 1000}).encode()

    def send(path, tok, proof) -> wire.Reply:
        headers = [("Authorization", f"DPoP {tok}"), ("DPoP", proof), ("Content-Type", "application/json")]
        return wire.send(st.listener_port, wire.request(shape, "POST", path, headers, body, host=host))

    echo = echo_of(send(ok_path, token, post_proof))
    assert echo["body_len"] == len(body) and echo["method"] == "POST"
    assert echo["headers"]["x-tollgate-cnf"] == f"dpop;jkt={alice.thumbprint}"
    assert_refused(send(ok_path, token, post_proof), "invalid_dpop_proof", REPLAYED, DPOP_ROUTE)
    assert_refused(send(get_path, token_b, get_proof), "invalid_dpop_proof", WRONG_METHOD, DPOP_ROUTE)
    reached_once(st, ok_path)
    never_reached(st, get_path)
