"""The request path while Tollgate holds a request (issue 12): whatever the request looks like on
the wire, the upstream sees it only if Tollgate allowed it, then exactly once, whole, and with
Tollgate's identity headers.

Envoy runs the wasm filter with `allow_on_headers_stop_iteration: true`, so a request that
`on_http_request_headers` paused is resumed by ANY later filter callback that answers Continue:
a body chunk or request trailers arriving while Tollgate waits for keys or an introspection
answer would send the request upstream before the decision. This file is the matrix that
catches that class of hole, in the real Envoy with both real authorization servers.

**The witness is the upstream's own log** (tests/rig/upstream.py logs `> METHOD PATH` as soon as
a request's headers reach it, before its body): every request carries a unique path
(`/api/orders/<uuid>`), and a cell passes only if that path appears in the upstream log exactly
once when allowed and never otherwise. Envoy's answer is checked too, but never trusted alone.

Dimensions
----------
Why the request waits (the group; one burst of concurrent requests per group, all shapes and
verdicts at once, unless said otherwise):

- `intro`: an opaque token's introspection is under way (AS-2 slowed with `/__rig/delay`, so
  its answer takes ~0.7 s; for 503 AS-1 slowed to 3 s, past its 800 ms introspection timeout).
- `kid`: a JWT naming AS-1 with a `kid` Tollgate does not hold triggers the unknown-kid refetch
  (AS-1 slowed: ~0.7 s for the JWKS). Allowed: real tokens signed by a key AS-1 made
  (`/__rig/rotate`) after Tollgate's last fetch; denied: a forged `kid`.
- `cold`: keys not fetched yet: Envoy just restarted while AS-1 is slow (~1 s for the first
  fetch); 503: AS-2's first JWKS fetch outlasts its 1 s `fetch_timeout_ms`.
- `peer`: another worker is verifying the same new JWT (Envoy with 2 workers; the same token
  sent at the same instant on 4 connections). Each peer cell has an issuer of its own (inline
  keys: 24 decoy P-256 keys before the signing key, tokens without `kid`, so a verification
  tries every key and takes a few ms, not ~0.2), so its own
  `tollgate.issuer.<n>.verify_coalesced` counter shows the wait happened; cells whose counter
  did not move are sent again with a new token, up to PEER_ATTEMPTS times (a cell never
  exercised is skipped, after its requests were judged all the same).
- `down`: the AS is stopped: introspection (503) and the unknown-kid refetch (401) to a stopped
  AS-1, then the first key fetch of a restarted Envoy (503). A refused connection fails in
  about a millisecond, so only shapes whose body is in the first packet can race it.
- `pr-intro`, `pr-cold`: the same rules with `"callouts": "per_request"` (every waiting request
  makes its own callouts; README "callouts") in a second Envoy.

Request shape (tests/rig/wire.py; HTTP/1.1 on raw sockets, HTTP/2 as h2c with the `h2`
library): `get`; `first-packet` (headers and body in one write); `later` (body 200 ms after the
headers); `chunked` (3 chunks 100 ms apart); `chunked-trailers` (the same plus trailers: the
test's Envoy sets `http_protocol_options.enable_trailers`, without which Envoy's HTTP/1 codec
drops request trailers before any filter); `expect` (`Expect: 100-continue`; Envoy answers 100
itself, then the body follows); `large` (HTTP/1.1, a 256 KiB body, 4x the buffer limit);
`h2-large` (HTTP/2, the same); `h2` (HEADERS then 3 DATA frames 100 ms apart); `h2-trailers`
(DATA frames then trailers); `h2-trailers-only` (HEADERS, then trailers and no DATA).

Verdict: `allowed` (200 from the upstream, seen once, body whole, identity headers set, the
client's spoofed identity headers gone), `denied` (401/403 from Tollgate, never upstream),
`unavailable` (503 with Retry-After from Tollgate, never upstream).

A body larger than the buffer limit while the request is held: Envoy buffers the body of a
paused request and, past the limit, answers **413** itself (`Payload Too Large`, response code
details `request_payload_too_large`) without the upstream ever seeing the request. So the
`large` / `h2-large` cells expect 413 in the groups whose wait outlasts the upload, whatever the
verdict, and 413 or the verdict's own answer where the wait is ~1 ms (`peer`, `down`). The limit
(measured on Envoy 1.40): HTTP/1.1 streams use the listener's
`per_connection_buffer_limit_bytes` (default 1 MiB); HTTP/2 streams use the HCM's
`http2_protocol_options.initial_stream_window_size` (default 256 MiB; the listener limit does
not apply to them). A route's `request_body_buffer_limit` or `per_request_buffer_limit_bytes`
can raise the limit for that route (listener 64 KiB + route 4 MiB: a held 256 KiB body passes)
but not lower it (listener 1 MiB + route 64 KiB: it passes too). The test's Envoy sets both
connection-level limits to 64 KiB. A request that is NOT held (its token cached) streams its
body through whatever its size (`cached` cells: 4x the limit reaches the upstream whole).

Cells that cannot happen (not faked):

- `kid` x unavailable: the refetch happens only while keys are held and usable; if it fails
  the held keys still answer, and the token's `kid` is still unknown: 401, never 503 (the
  `down` group's denied cell is exactly that case).
- `peer` x unavailable: a request waits for a peer only when its worker holds the issuer's keys,
  and verifies the token itself if the peer's entry does not land: no 503 path.
- `down` x allowed: a callout to a stopped AS never allows (fail closed); `down` x denied for
  introspection and first fetch: a failed callout is 503, never a token verdict.
- `pr-*` x `kid`/`peer`: per-request callouts have no cross-worker coalescing (nothing waits for
  a peer), and the unknown-kid refetch is the same key fetch `pr-cold` covers.

Gateway calls (`gateway` cells): POST /oauth2/token, /oauth2/introspect, /oauth2/revoke,
/oauth2/as1/register, /oauth2/par, /oauth2/device_authorization,
/oauth2/backchannel_authentication and /oauth2/as1/end_session, and PUT
/oauth2/as1/register/<id>, whose bodies the gateway reads to route or forward them, sent as
HTTP/2 DATA frames and as HTTP/1.1 chunked bodies, each with and without trailers, and in one
packet: each must be routed to the authorization server that owns it (the AS's own request
counter moves and it answers), redirected (the logout POST's 307, which reaches no server), or
refused with a local reply, and must never reach the API upstream (upstream log).

Run time: about 2 minutes (two private deployments; groups run their shapes concurrently).
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

import envoy as rig_envoy
import stack as rig_stack
import tokens
import wire
from procs import free_port

BUFFER_LIMIT = 64 * 1024
LARGE = 4 * BUFFER_LIMIT
SPOOF = [("X-Tollgate-Sub", "spoofed-admin"), ("X-Tollgate-Issuer", "spoofed"),
         ("X-Tollgate-Client-Id", "spoofed"), ("X-Tollgate-Scope", "admin")]
SHAPES = wire.SHAPES
LARGE_SHAPES = {"large", "h2-large"}
SETTLE = 0.4  # after a burst, before reading the upstream log
PEER_CONNECTIONS = 4
PEER_ATTEMPTS = 12

# AS delays (ms): long enough that every shape has sent everything before the decision.
INTRO_DELAY = 700  # AS-2 introspection answer
SLOW_TIMEOUT_DELAY = 3000  # past the timeouts below: the 503 cells
KID_DELAY = 700  # AS-1 JWKS refetch (the discovery document is held): ~0.7 s
COLD_DELAY = 500  # AS-1 first fetch: ~1 s

ISSUER_OVERRIDES = {
    "as1": {"refetch_min_interval_s": 1, "introspection": {"timeout_ms": 800}},
    "as2": {"fetch_timeout_ms": 1000},
}


# --------------------------------------------------------------------------------- deployment


class PathStack(rig_stack.Stack):
    """The standard stack with an Envoy that makes holds observable: 64 KiB buffer limits
    (HTTP/1.1 and HTTP/2), request trailers passed by the HTTP/1 codec."""

    per_request = False

    def plugin_config(self) -> dict:
        cfg = super().plugin_config()
        if not self.per_request:
            cfg["issuers"] += [peer_issuer_config(n) for n in PEER_ISSUERS.values()]
        if self.per_request:
            cfg["callouts"] = "per_request"
            cfg.pop("gateway", None)
            for issuer in cfg["issuers"]:
                issuer.pop("gateway", None)
        return cfg

    def start_envoy(self, **kwargs) -> rig_envoy.EnvoyProc:
        routes = rig_envoy.DEFAULT_ROUTES if self.per_request else rig_stack.gateway_routes()
        config = rig_envoy.render(free_port(), free_port(), rig_stack.WASM, self.plugin_config(),
                                  self.clusters(), routes)
        listener = config["static_resources"]["listeners"][0]
        listener["per_connection_buffer_limit_bytes"] = BUFFER_LIMIT
        hcm = rig_envoy.http_connection_manager(config)
        rig_envoy.enable_trailers(hcm)
        hcm["http2_protocol_options"] = {"initial_stream_window_size": BUFFER_LIMIT,
                                         "initial_connection_window_size": BUFFER_LIMIT}
        kwargs.setdefault("concurrency", self.concurrency)
        self.procs["envoy"] = rig_envoy.start_envoy(config=config, log_dir=self.workdir, **kwargs)
        return self.envoy

    def start(self) -> "PathStack":
        if not self.per_request:
            super().start()
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.procs["upstream"] = rig_stack.servers.start_upstream(self.upstream_port, self.workdir)
            self.start_as1()
            self.start_as2()
            self.start_envoy()
        except BaseException:
            self.stop()
            raise
        return self

    def restart_envoy(self) -> None:
        self.envoy.stop()
        self.start_envoy()

    # --- the rig's controls ------------------------------------------------------------------

    def as_base(self, which: str) -> str:
        return self.as1_issuer if which == "as1" else f"http://127.0.0.1:{self.as2_port}"

    def delay(self, which: str, ms: int) -> None:
        r = requests.post(f"{self.as_base(which)}/__rig/delay?ms={ms}", timeout=10)
        assert r.status_code == 200, r.text

    def undelay(self) -> None:
        for which in ("as1", "as2"):
            proc = self.procs.get(which)
            if proc and proc.popen and proc.popen.poll() is None:
                self.delay(which, 0)

    def served(self, which: str) -> dict[str, int]:
        r = requests.get(f"{self.as_base(which)}/__rig/stats", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["requests"]

    def arrivals(self) -> Counter:
        """Request paths the upstream received (its `> METHOD PATH` lines)."""
        text = self.procs["upstream"].log_text()
        return Counter(line.split(" ", 2)[2] for line in text.splitlines()
                       if line.startswith("> ") and line.count(" ") >= 2)


# --------------------------------------------------------------------------------- tokens


def forged_kid_token(issuer: str) -> str:
    """A JWT naming a configured issuer and a `kid` it never published, signed by a stranger."""
    key = rsa.generate_private_key(65537, 2048)
    now = int(time.time())
    header = {"alg": "RS256", "typ": "at+jwt", "kid": f"forged-{secrets.token_hex(6)}"}
    claims = {"iss": issuer, "sub": "forger", "aud": rig_stack.API_AUDIENCE, "client_id": "forger",
              "scope": "read write admin", "iat": now, "exp": now + 600, "jti": secrets.token_hex(8)}
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(sig)}"


def b64(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


def made_up_dot() -> str:
    alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "dot_" + "".join(secrets.choice(alnum) for _ in range(30))


def made_up_as1_opaque() -> str:
    return secrets.token_urlsafe(32)  # 43 characters of [A-Za-z0-9_-]: AS-1's opaque rule


# --------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    group: str
    verdict: str  # allowed | denied | unavailable
    shape: str

    @property
    def id(self) -> str:
        return f"{self.group}-{self.verdict}-{self.shape}"


GROUP_VERDICTS = {
    "intro": ["allowed", "denied", "unavailable"],
    "kid": ["allowed", "denied"],
    "cold": ["allowed", "denied", "unavailable"],
    "peer": ["allowed", "denied"],
    "down-intro": ["unavailable"],
    "down-kid": ["denied"],
    "down-cold": ["unavailable"],
    "pr-intro": ["allowed", "denied", "unavailable"],
    "pr-cold": ["allowed", "denied", "unavailable"],
}
# Groups whose wait lasts longer than any shape takes to send (a large body is over the limit
# while still held: 413). In the others the wait can end before the limit is reached.
SLOW_GROUPS = {"intro", "kid", "cold", "pr-intro", "pr-cold"}
CELLS = [Cell(g, v, s) for g, vs in GROUP_VERDICTS.items() for v in vs for s in SHAPES]


@dataclass
class Sent:
    """One request of a cell, what came back, and what the upstream must have seen."""

    path: str
    body: bytes
    expect_client: str | None = None  # the identity Tollgate must forward, when allowed
    expect_issuer: str | None = None
    reply: wire.Reply | None = None
    coalesced: bool | None = None  # peer cells: whether the attempt showed a wait for a peer


@dataclass
class GroupResult:
    sent: dict[str, list[Sent]] = field(default_factory=dict)  # cell id -> its requests
    arrivals: Counter = field(default_factory=Counter)
    checks: dict[str, bool] = field(default_factory=dict)  # the wait really happened
    notes: dict[str, str] = field(default_factory=dict)
    too_large: int = 0  # Envoy's downstream_rq_too_large counter moved by this much
    access_log: list[str] = field(default_factory=list)  # Envoy's access log lines, right after


def api_path(verdict_path: str) -> str:
    return f"{verdict_path}/{uuid.uuid4().hex}"


def make_request(shape: str, path: str, token: str, extra_headers=()) -> tuple[wire.Request, bytes]:
    marker = path.rsplit("/", 1)[-1]
    body = f"qty=1000&marker={marker}".encode()
    if shape in LARGE_SHAPES:
        body += b"&pad=" + b"p" * (LARGE - len(body) - 5)
    headers = [("Authorization", f"Bearer {token}"),
               ("Content-Type", "application/x-www-form-urlencoded")] + SPOOF + list(extra_headers)
    req = wire.request(shape, "POST", path, headers, body)
    return req, (b"" if shape in ("get", "h2-trailers-only") else body)


def burst(port: int, reqs: list[wire.Request], timeout: float = 15.0) -> list[wire.Reply]:
    """Opens every connection first (HTTP/2: handshake done), then starts all the requests at the
    same instant and runs them on their own schedules (tests/rig/wire.py `run_all`)."""
    pairs, replies = [], {}
    for i, req in enumerate(reqs):
        try:
            pairs.append((i, wire.Conn(port, req.http2, timeout=timeout), req))
        except OSError as e:
            replies[i] = wire.Reply(error=f"connect: {e}")
    for (i, _, _), reply in zip(pairs, wire.run_all([(c, r) for _, c, r in pairs])):
        replies[i] = reply
    return [replies[i] for i in range(len(reqs))]


def run_cells(st: PathStack, plan: list[tuple[Cell, str, str, str | None, str | None]],
              result: GroupResult) -> None:
    """plan: (cell, path prefix, token, expected client id, expected issuer name) -> one burst."""
    reqs, sents = [], []
    for cell, prefix, token, client, issuer in plan:
        path = api_path(prefix)
        req, body = make_request(cell.shape, path, token)
        s = Sent(path, body, client, issuer)
        result.sent.setdefault(cell.id, []).append(s)
        reqs.append(req)
        sents.append(s)
    for s, reply in zip(sents, burst(st.envoy.listener_port, reqs)):
        s.reply = reply


def finish(st: PathStack, result: GroupResult) -> GroupResult:
    time.sleep(SETTLE)
    result.arrivals = st.arrivals()
    return result


# --------------------------------------------------------------------------------- groups


def group_intro(st: PathStack, prefix: str = "") -> GroupResult:
    result = GroupResult()
    g = f"{prefix}intro"
    # Per-request callouts: a worker learns an issuer's introspection endpoint (its metadata)
    # from the first request that needs it; that request is made here, so the burst below
    # waits for introspection answers only.
    for token in (st.as1_opaque_token(), st.as2_opaque_token()):
        r = st.call("/api/orders/warm-up", token)
        assert r.status_code == 200, r.text
    before = st.stats("tollgate.issuer.")
    allowed = [st.as2_opaque_token(scope="read write") for _ in SHAPES]
    plan = []
    for i, shape in enumerate(SHAPES):
        plan.append((Cell(g, "allowed", shape), "/api/orders", allowed[i], "dot-opaque", "as2"))
        plan.append((Cell(g, "denied", shape), "/api/orders", made_up_dot(), None, None))
        plan.append((Cell(g, "unavailable", shape), "/api/orders", made_up_as1_opaque(), None, None))
    too_large = "http.ingress_http.downstream_rq_too_large"
    too_large_before = st.stats(too_large).get(too_large, 0)
    try:
        st.delay("as2", INTRO_DELAY)
        st.delay("as1", SLOW_TIMEOUT_DELAY)
        run_cells(st, plan, result)
    finally:
        st.undelay()
    result.too_large = st.stats(too_large).get(too_large, 0) - too_large_before
    after = st.stats("tollgate.issuer.")
    d = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    result.checks["as2 introspected every allowed and denied token"] = (
        d.get("tollgate.issuer.as2.introspection.calls", 0) >= 2 * len(SHAPES))
    result.checks["as1 introspections failed (timeout)"] = sum(
        v for k, v in d.items() if k.startswith("tollgate.issuer.as1.introspection.failed.")) >= 1
    result.notes["counters"] = json.dumps({k: v for k, v in d.items() if v and "introspection" in k})
    finish(st, result)  # (waits SETTLE: Envoy has flushed its access log)
    result.access_log = [ln for ln in st.envoy.log_text().splitlines() if "[access]" in ln]
    return result


def group_kid(st: PathStack) -> GroupResult:
    result = GroupResult()
    wait_refetch_interval(st)
    old_kid = tokens.decode_unverified(st.as1_token())[0]["kid"]
    r = requests.post(f"{st.as1_issuer}/__rig/rotate", timeout=10)
    assert r.status_code == 200, r.text
    allowed = [st.as1_token(scope="read write") for _ in SHAPES]
    new_kid = tokens.decode_unverified(allowed[0])[0]["kid"]
    result.checks["the tokens name a kid Tollgate does not hold yet"] = new_kid != old_kid
    jwks_before = st.served("as1").get("/jwks", 0)
    plan = []
    for i, shape in enumerate(SHAPES):
        plan.append((Cell("kid", "allowed", shape), "/api/orders", allowed[i], "demo-client", "as1"))
        plan.append((Cell("kid", "denied", shape), "/api/orders", forged_kid_token(st.as1_issuer), None, None))
    try:
        st.delay("as1", KID_DELAY)
        run_cells(st, plan, result)
    finally:
        st.undelay()
        st.last_refetch = time.monotonic()
    result.checks["as1 keys were refetched"] = st.served("as1").get("/jwks", 0) > jwks_before
    return finish(st, result)


def wait_refetch_interval(st: PathStack) -> None:
    """The unknown-kid refetch happens at most once per refetch_min_interval_s (1 s here)."""
    last = getattr(st, "last_refetch", 0.0)
    gap = time.monotonic() - last
    if gap < 1.5:
        time.sleep(1.5 - gap)


def group_cold(st: PathStack, prefix: str = "") -> GroupResult:
    result = GroupResult()
    g = f"{prefix}cold"
    allowed = [st.as1_token(scope="read write") for _ in SHAPES]
    denied = [st.as1_token(scope="read") for _ in SHAPES]  # on /api/admin: 403
    unavailable = [st.as2_token(scope="read write") for _ in SHAPES]  # AS-2's keys never arrive
    plan = []
    for i, shape in enumerate(SHAPES):
        plan.append((Cell(g, "allowed", shape), "/api/orders", allowed[i], "demo-client", "as1"))
        plan.append((Cell(g, "denied", shape), "/api/admin", denied[i], None, None))
        plan.append((Cell(g, "unavailable", shape), "/api/orders", unavailable[i], None, None))
    try:
        st.delay("as1", COLD_DELAY)
        st.delay("as2", SLOW_TIMEOUT_DELAY)
        st.envoy.stop()
        st.start_envoy()
        t0 = time.monotonic()
        run_cells(st, plan, result)
        result.notes["burst"] = f"{time.monotonic() - t0:.2f} s after Envoy was ready"
    finally:
        st.undelay()
    stats = st.stats("tollgate.issuer.")
    result.checks["as1 keys fetched once Envoy started"] = stats.get("tollgate.issuer.as1.jwks.fetch_ok", 0) >= 1
    result.checks["as2 first fetch failed"] = stats.get("tollgate.issuer.as2.jwks.fetch_failed", 0) >= 1
    finish(st, result)
    if not st.per_request:
        st.wait_gateway_ready(timeout=15)
    return result


# One issuer per `peer` cell (inline keys, so always held): each cell's own
# `verify_coalesced` counter tells whether its requests really waited for the other worker.
# Their key set holds PEER_DECOYS other P-256 keys before the signing key, and the tokens carry
# no `kid`, so a verification tries every key (README "Signature": without a kid, among the
# keys of the right type): a few ms instead of ~0.2, a window wide enough for the other
# worker to find the claim on a loaded machine.
PEER_KEY = ec.generate_private_key(ec.SECP256R1())
PEER_DECOYS = 24
PEER_ISSUERS = {(v, shape): f"peer-{v[0]}{i}" for v in ("allowed", "denied") for i, shape in enumerate(SHAPES)}


def _p256_jwk(key) -> dict:
    public = key.public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64(public.x.to_bytes(32, "big")),
            "y": b64(public.y.to_bytes(32, "big"))}


PEER_JWKS = {"keys": [_p256_jwk(ec.generate_private_key(ec.SECP256R1())) for _ in range(PEER_DECOYS)]
             + [_p256_jwk(PEER_KEY)]}


def peer_issuer_config(name: str) -> dict:
    return {"name": name, "issuer": f"https://{name}.matrix.test", "jwks": {"inline": PEER_JWKS},
            "audiences": [rig_stack.API_AUDIENCE], "algorithms": ["ES256"], "require_at_jwt": True}


def peer_token(name: str, scope: str) -> str:
    now = int(time.time())
    header = {"alg": "ES256", "typ": "at+jwt"}
    claims = {"iss": f"https://{name}.matrix.test", "sub": "peer-test", "aud": rig_stack.API_AUDIENCE,
              "client_id": "matrix-client", "scope": scope, "iat": now, "exp": now + 600,
              "jti": secrets.token_hex(8)}
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    r, s_ = decode_dss_signature(PEER_KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64(r.to_bytes(32, 'big') + s_.to_bytes(32, 'big'))}"


def group_peer(st: PathStack) -> GroupResult:
    """Every peer cell at once, each with a new token of its own issuer sent at the same instant
    on PEER_CONNECTIONS connections (spread over the two workers by the kernel); repeated for
    the cells whose issuer's verify_coalesced counter did not move, up to PEER_ATTEMPTS times.
    Whether two workers verify the same token at the same moment is up to the scheduler (on a
    loaded 2-core machine, one attempt in a few), hence the attempts."""
    result = GroupResult()
    pending = dict(PEER_ISSUERS)
    attempts_used: dict[str, int] = {}
    for attempt in range(PEER_ATTEMPTS):
        if not pending:
            break
        before = st.stats("tollgate.issuer.peer-")
        plan = []
        for (verdict, shape), name in pending.items():
            token = peer_token(name, "read write" if verdict == "allowed" else "read")
            prefix = "/api/orders" if verdict == "allowed" else "/api/admin"
            client, issuer = ("matrix-client", name) if verdict == "allowed" else (None, None)
            plan += [(Cell("peer", verdict, shape), prefix, token, client, issuer)] * PEER_CONNECTIONS
        counts = {k: len(result.sent.get(Cell("peer", *k).id, [])) for k in pending}
        run_cells(st, plan, result)
        after = st.stats("tollgate.issuer.peer-")
        for key, name in list(pending.items()):
            counter = f"tollgate.issuer.{name}.verify_coalesced"
            moved = after.get(counter, 0) > before.get(counter, 0)
            for s in result.sent[Cell("peer", *key).id][counts[key]:]:
                s.coalesced = moved
            if moved:
                attempts_used[Cell("peer", *key).id] = attempt + 1
                del pending[key]
    result.notes["attempts"] = json.dumps(attempts_used)
    result.notes["never exercised"] = json.dumps(sorted(Cell("peer", *k).id for k in pending))
    result.checks["some peer cells were exercised (verify_coalesced moved)"] = bool(attempts_used)
    return finish(st, result)


def group_down(st: PathStack) -> dict[str, GroupResult]:
    """AS-1 stopped: introspection 503 and unknown-kid 401 in one burst; then Envoy restarted
    while AS-1 is still down: the first key fetch fails (503). AS-1 and Envoy are restored."""
    out = {"down-intro": GroupResult(), "down-kid": GroupResult(), "down-cold": GroupResult()}
    jwts = [st.as1_token(scope="read write") for _ in SHAPES]
    wait_refetch_interval(st)
    st.procs["as1"].stop()
    try:
        plan_intro = [(Cell("down-intro", "unavailable", s), "/api/orders", made_up_as1_opaque(), None, None)
                      for s in SHAPES]
        plan_kid = [(Cell("down-kid", "denied", s), "/api/orders", forged_kid_token(st.as1_issuer), None, None)
                    for s in SHAPES]
        merged = GroupResult()
        run_cells(st, plan_intro + plan_kid, merged)
        st.last_refetch = time.monotonic()
        st.restart_envoy()
        plan_cold = [(Cell("down-cold", "unavailable", s), "/api/orders", jwts[i], None, None)
                     for i, s in enumerate(SHAPES)]
        run_cells(st, plan_cold, merged)
        finish(st, merged)
        stats = st.stats("tollgate.issuer.as1.")
    finally:
        st.start_as1()
        st.restart_envoy()
        if not st.per_request:
            st.wait_gateway_ready(timeout=15)
    for name, res in out.items():
        res.sent = {k: v for k, v in merged.sent.items() if k.startswith(name + "-")}
        res.arrivals = merged.arrivals
    out["down-cold"].checks["as1 first fetch failed"] = stats.get("tollgate.issuer.as1.jwks.fetch_failed", 0) >= 1
    return out


def group_cached(st: PathStack) -> GroupResult:
    """Tokens already verified: the request is not held, so a body 4x the buffer limit streams
    through to the upstream whole."""
    result = GroupResult()
    plan = []
    for shape in ("large", "h2-large", "chunked", "h2-trailers"):
        token = st.as1_token(scope="read write")
        warm = st.call("/api/orders/warm", token)
        assert warm.status_code == 200, warm.text
        plan.append((Cell("cached", "allowed", shape), "/api/orders", token, "demo-client", "as1"))
    reqs, sents = [], []
    for cell, prefix, token, client, issuer in plan:
        path = api_path(prefix)
        marker = path.rsplit("/", 1)[-1]
        body = (f"qty=1000&marker={marker}&pad=".encode()).ljust(LARGE, b"p")
        headers = [("Authorization", f"Bearer {token}"),
                   ("Content-Type", "application/x-www-form-urlencoded")] + SPOOF
        reqs.append(wire.request(cell.shape, "POST", path, headers, body))
        s = Sent(path, body, client, issuer)
        result.sent.setdefault(cell.id, []).append(s)
        sents.append(s)
    for s, reply in zip(sents, burst(st.envoy.listener_port, reqs)):
        s.reply = reply
    return finish(st, result)


# --------------------------------------------------------------------------------- fixtures


class Matrix:
    """The two private deployments (started when first needed) and each group's result (run
    when its first cell is checked)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.stacks: dict[str, PathStack] = {}
        self.results: dict[str, GroupResult] = {}
        self.errors: dict[str, BaseException] = {}

    def stack(self, kind: str) -> PathStack:
        if kind not in self.stacks:
            st = PathStack(self.workdir / kind, concurrency=1 if kind == "pr" else 2,
                           issuer_overrides=ISSUER_OVERRIDES)
            st.per_request = kind == "pr"
            self.stacks[kind] = st
            st.start()
        return self.stacks[kind]

    def group(self, name: str) -> GroupResult:
        if name in self.errors:
            raise self.errors[name]
        if name not in self.results:
            try:
                if name.startswith("down-"):
                    self.results.update(group_down(self.stack("auto")))
                elif name.startswith("pr-"):
                    fn = group_intro if name == "pr-intro" else group_cold
                    self.results[name] = fn(self.stack("pr"), prefix="pr-")
                else:
                    fn = {"intro": group_intro, "kid": group_kid, "cold": group_cold,
                          "peer": group_peer, "cached": group_cached, "gateway": group_gateway}[name]
                    self.results[name] = fn(self.stack("auto"))
            except BaseException as e:
                self.errors[name] = e
                raise
        return self.results[name]

    def close(self) -> None:
        for st in self.stacks.values():
            st.stop()


@pytest.fixture(scope="module")
def matrix(wasm, tmp_path_factory):
    m = Matrix(tmp_path_factory.mktemp("request-path"))
    yield m
    m.close()


# --------------------------------------------------------------------------------- judging


def expected(cell: Cell, reply: wire.Reply) -> str:
    if cell.shape in LARGE_SHAPES:
        if cell.group in SLOW_GROUPS:
            return "too-large"
        if reply.status == 413:
            return "too-large"  # the ~1 ms wait outlasted the upload: also right
    return cell.verdict


def judge(cell: Cell, s: Sent, arrivals: Counter) -> list[str]:
    """What is wrong with one request of a cell (empty: nothing)."""
    r = s.reply
    seen = arrivals.get(s.path, 0)
    want = expected(cell, r)
    problems = []
    if want != "allowed":
        if seen:
            problems.append(f"the upstream saw it {seen}x (expected never: {want})")
        if want == "too-large":
            if r.status != 413 or r.body != b"Payload Too Large":
                problems.append(f"expected Envoy's 413 for a body over the buffer limit, got {r.status}")
        elif want == "denied":
            if r.status not in (401, 403):
                problems.append(f"expected 401/403 from Tollgate, got {r.status}")
            elif not r.headers.get("www-authenticate", "").startswith('Bearer realm="tollgate"'):
                problems.append("refusal without Tollgate's Bearer challenge")
        elif want == "unavailable":
            if r.status != 503:
                problems.append(f"expected 503 from Tollgate, got {r.status}")
            elif not r.headers.get("retry-after"):
                problems.append("503 without Retry-After")
            elif b"temporarily_unavailable" not in r.body:
                problems.append("503 that is not Tollgate's temporarily_unavailable")
        return problems
    if seen != 1:
        problems.append(f"the upstream saw it {seen}x (expected exactly once)")
    if r.status != 200:
        return problems + [f"expected 200, got {r.status}"]
    try:
        echo = r.json()
    except ValueError:
        return problems + ["200 that is not the upstream's echo"]
    h = echo.get("headers", {})
    if echo.get("path") != s.path:
        problems.append(f"echo path {echo.get('path')} != {s.path}")
    if echo.get("body_len") != len(s.body):
        problems.append(f"the upstream got {echo.get('body_len')} body bytes of {len(s.body)}")
    if h.get("x-tollgate-issuer") != s.expect_issuer:
        problems.append(f"x-tollgate-issuer {h.get('x-tollgate-issuer')!r}, expected {s.expect_issuer!r}")
    if h.get("x-tollgate-client-id") != s.expect_client:
        problems.append(f"x-tollgate-client-id {h.get('x-tollgate-client-id')!r}, expected {s.expect_client!r}")
    spoofed = {k: v for k, v in h.items() if k.startswith("x-tollgate-") and ("spoofed" in v or v == "admin")}
    if spoofed:
        problems.append(f"spoofed identity reached the upstream: {spoofed}")
    return problems


def check_cell(matrix: Matrix, cell: Cell) -> None:
    result = matrix.group(cell.group)
    sent = result.sent.get(cell.id)
    assert sent, f"{cell.id}: nothing was sent"
    failures = []
    for s in sent:
        problems = judge(cell, s, result.arrivals)
        if problems:
            failures.append(f"{s.path}: {'; '.join(problems)}\n    {s.reply!r}")
    assert not failures, f"{cell.id}:\n" + "\n".join(failures)
    if cell.group == "peer" and not any(s.coalesced for s in sent):
        pytest.skip(f"{cell.id}: no request waited for the other worker in {PEER_ATTEMPTS} attempts "
                    "(verify_coalesced did not move); every request was still judged")


# --------------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
def test_held_request(matrix, cell):
    """The upstream sees the request only if Tollgate allowed it (then once, whole, with the
    identity headers); see the module docstring for the cell's reason, shape and verdict."""
    check_cell(matrix, cell)


# How long a headers-only request of a group must have been held (s): the AS delays and
# timeouts above, with a margin.
MIN_HOLD = {"intro": 0.5, "kid": 0.5, "cold": 0.5, "pr-intro": 0.5, "pr-cold": 0.5}


@pytest.mark.parametrize("group", list(GROUP_VERDICTS))
def test_the_wait_happened(matrix, group):
    """Each group really made requests wait for what it says (counters, AS logs, and how long
    its GET cells took), so the cells above are not passing for the wrong reason."""
    result = matrix.group(group)
    checks = dict(result.checks)
    if group in MIN_HOLD:
        for verdict in GROUP_VERDICTS[group]:
            replies = [s.reply for s in result.sent.get(f"{group}-{verdict}-get", [])]
            held = min((r.elapsed for r in replies), default=0.0)
            checks[f"{verdict} GET held >= {MIN_HOLD[group]} s (took {held:.2f} s)"] = held >= MIN_HOLD[group]
    failed = {k: v for k, v in checks.items() if not v}
    assert not failed, (failed, result.notes)


def test_a_held_body_over_the_buffer_limit_is_envoys_413(matrix):
    """Pins what Envoy 1.40 does with the body of a request Tollgate holds once it passes the
    buffer limit (64 KiB here: the listener's per_connection_buffer_limit_bytes for HTTP/1.1,
    http2_protocol_options.initial_stream_window_size for HTTP/2): its own 413 `Payload Too
    Large` (text/plain), response code details `request_payload_too_large`, counted as
    http.<stat_prefix>.downstream_rq_too_large, and nothing upstream (the `large` cells)."""
    result = matrix.group("intro")
    large = [s for c in CELLS if c.group == "intro" and c.shape in LARGE_SHAPES for s in result.sent[c.id]]
    assert len(large) == 6
    assert result.too_large == len(large), (result.too_large, [s.reply for s in large])
    for s in large:
        line = next((ln for ln in result.access_log if s.path in ln), "")
        assert " 413 " in line and "details=request_payload_too_large" in line, line


CACHED = [Cell("cached", "allowed", s) for s in ("large", "h2-large", "chunked", "h2-trailers")]


@pytest.mark.parametrize("cell", CACHED, ids=[c.id for c in CACHED])
def test_a_request_that_is_not_held_streams_its_body(matrix, cell):
    """A cached token: nothing to wait for, so a body 4x the buffer limit is not buffered and
    reaches the upstream whole (no 413)."""
    check_cell(matrix, cell)


# --------------------------------------------------------------------------------- gateway


GATEWAY_SHAPES = ["first-packet", "chunked", "chunked-trailers", "h2", "h2-trailers"]
GATEWAY_ENDPOINTS = {
    # endpoint: (gateway path, AS, the AS's own path, expected status)
    "token": ("/oauth2/token", "as1", "/token", 200),
    "introspect": ("/oauth2/introspect", "as1", "/token/introspection", 200),
    # At AS-1: DOT (AS-2) runs on Django's development server, which cannot read a chunked
    # request body (what Envoy sends upstream for HTTP/2 or chunked requests).
    "revoke": ("/oauth2/revoke", "as1", "/token/revocation", 200),
    "register": ("/oauth2/as1/register", "as1", "/reg", 201),
    # Issue 14's endpoints that read their body: PAR, device authorization and CIBA (forms,
    # routed by their client), a client update (RFC 7592 PUT, JSON; its path is the client's,
    # filled in per request), and a logout form POST, which the gateway answers itself with a
    # 307 to the AS (never forwarded: the browser posts the form to the AS again).
    "par": ("/oauth2/par", "as1", "/request", 201),
    "device": ("/oauth2/device_authorization", "as1", "/device/auth", 200),
    "ciba": ("/oauth2/backchannel_authentication", "as1", "/backchannel", 200),
    "client_update": ("/oauth2/as1/register/{id}", "as1", "/reg/{id}", 200),
    "end_session": ("/oauth2/as1/end_session", "as1", "/session/end", 307),
}


@dataclass
class GatewaySent:
    endpoint: str
    reply: wire.Reply | None = None
    arrived: int = 0  # at the API upstream
    as_hits: int = 0  # at the AS that owns the endpoint


FORM = "application/x-www-form-urlencoded"


def registered_at_as1(st: PathStack, name: str) -> dict:
    """A client registered at AS-1 directly (RFC 7591), for an update through the gateway."""
    r = requests.post(f"{st.as_base('as1')}/reg", timeout=10, json={
        "client_name": name, "grant_types": ["client_credentials"], "redirect_uris": [],
        "response_types": [], "token_endpoint_auth_method": "client_secret_basic"})
    assert r.status_code == 201, r.text
    return r.json()


def gateway_request(st: PathStack, endpoint: str, shape: str) -> tuple[wire.Request, str, str]:
    """The request, the gateway path it is sent to and the AS path it must reach."""
    path, _, as_path, _ = GATEWAY_ENDPOINTS[endpoint]
    method = "POST"
    if endpoint == "token":
        auth, ctype = tokens.basic_auth("demo-client", "demo-secret"), "application/x-www-form-urlencoded"
        body = b"grant_type=client_credentials&scope=read"
    elif endpoint == "introspect":
        auth, ctype = tokens.basic_auth("rs-client", "rs-secret"), "application/x-www-form-urlencoded"
        body = f"token={st.as1_opaque_token()}".encode()
    elif endpoint == "revoke":
        auth, ctype = tokens.basic_auth("demo-client", "demo-secret"), "application/x-www-form-urlencoded"
        body = f"token={st.as1_opaque_token()}&token_type_hint=access_token".encode()
    elif endpoint == "register":
        auth, ctype = None, "application/json"
        body = json.dumps({"client_name": f"matrix-{shape}", "grant_types": ["client_credentials"],
                           "redirect_uris": [], "response_types": [], "scope": "read",
                           "token_endpoint_auth_method": "client_secret_basic"}).encode()
    elif endpoint == "par":
        auth, ctype = tokens.basic_auth("demo-client", "demo-secret"), FORM
        body = (b"response_type=code&client_id=demo-client&redirect_uri=http%3A%2F%2F127.0.0.1%2Fcb"
                b"&scope=openid&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
                b"&code_challenge_method=S256")
    elif endpoint == "device":
        auth, ctype = tokens.basic_auth("as1-device", "as1-device-secret"), FORM
        body = b"scope=openid%20read"
    elif endpoint == "ciba":
        auth, ctype = tokens.basic_auth("as1-ciba", "as1-ciba-secret"), FORM
        body = b"scope=openid%20read&login_hint=alice"
    elif endpoint == "client_update":
        reg = registered_at_as1(st, f"matrix-update-{shape}")
        path, as_path = path.format(id=reg["client_id"]), as_path.format(id=reg["client_id"])
        method, auth, ctype = "PUT", f"Bearer {reg['registration_access_token']}", "application/json"
        body = json.dumps({"client_id": reg["client_id"], "client_name": f"matrix-updated-{shape}",
                           "grant_types": ["client_credentials"], "redirect_uris": [],
                           "response_types": [],
                           "token_endpoint_auth_method": "client_secret_basic"}).encode()
    else:  # end_session
        auth, ctype = None, FORM
        body = b"client_id=demo-client&state=matrix"
    headers = [("Content-Type", ctype)] + ([("Authorization", auth)] if auth else [])
    return wire.request(shape, method, path, headers, body), path, as_path


def group_gateway(st: PathStack) -> GroupResult:
    """Per shape, every endpoint at once (their paths tell them apart in the upstream log;
    the AS counters tell where each went)."""
    result = GroupResult()
    for shape in GATEWAY_SHAPES:
        reqs = {e: gateway_request(st, e, shape) for e in GATEWAY_ENDPOINTS}
        before_up = st.arrivals()
        before_as = {w: st.served(w) for w in ("as1", "as2")}
        replies = burst(st.envoy.listener_port, [req for req, _, _ in reqs.values()])
        time.sleep(SETTLE)
        after_up = st.arrivals()
        after_as = {w: st.served(w) for w in ("as1", "as2")}
        for (endpoint, (_, path, as_path)), reply in zip(reqs.items(), replies):
            which = GATEWAY_ENDPOINTS[endpoint][1]
            gs = GatewaySent(endpoint, reply, after_up.get(path, 0) - before_up.get(path, 0),
                             after_as[which].get(as_path, 0) - before_as[which].get(as_path, 0))
            result.sent[f"gateway-{endpoint}-{shape}"] = [gs]  # type: ignore[list-item]
    return result


@pytest.mark.parametrize("endpoint", list(GATEWAY_ENDPOINTS))
@pytest.mark.parametrize("shape", GATEWAY_SHAPES)
def test_gateway_call_with_a_body(matrix, endpoint, shape):
    """A gateway call whose body Tollgate reads to route it: routed to the AS that owns it (the
    AS counts it and answers), redirected (a logout POST), or refused with a local reply; never
    at the API upstream."""
    result = matrix.group("gateway")
    gs: GatewaySent = result.sent[f"gateway-{endpoint}-{shape}"][0]  # type: ignore[assignment]
    r = gs.reply
    _, which, as_path, status = GATEWAY_ENDPOINTS[endpoint]
    assert gs.arrived == 0, f"the call reached the API upstream ({gs.arrived}x): {r!r}"
    if 300 <= status < 400:
        # Answered by the gateway itself: the browser goes to the AS, Tollgate sends nothing.
        assert gs.as_hits == 0, gs
        assert r.status == status, r
        assert r.headers.get("location", "").startswith(matrix.stack("auto").as_base(which) + as_path), r
        return
    if gs.as_hits:
        assert gs.as_hits == 1, gs
        assert r.status == status, r
        answer = r.json() if r.body else {}  # a revocation's 200 has no body
        assert "headers" not in answer, r  # the AS's answer, not the upstream's echo
        if endpoint == "token":
            assert answer.get("access_token"), r
        if endpoint == "introspect":
            assert answer.get("active") is True, r
    else:
        # Refused by Tollgate: an OAuth error it answered itself.
        assert r.status is not None and 400 <= r.status < 600, r
        assert "error" in r.json(), r
