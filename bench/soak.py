"""Tollgate soak: faults under load at saturation, with a fault schedule (issue 7, part 3).

    bench/soak [--minutes 10] [--workers 2] [--out target/soak/report.md] [--threads 2]
               [--connections 32] [--sample-s 5] [--no-build]

Quick check of the script itself: `bench/soak --minutes 1` (phases of about 7 s). The figures
that go into docs/security.md come from the full 10-minute run on a quiet machine.

What it does:

1. Starts the rig stack (tests/rig/stack.py) with --workers Envoy workers: AS-1 (oidc-provider:
   JWTs via discovery, opaque tokens via introspection), AS-2 (django-oauth-toolkit: JWTs and
   opaque `dot_` tokens), the echo upstream, and a third issuer "hs" served by the scriptable
   hostile AS (tests/rig/hostile_as.py: JWKS at /hs/jwks signed with keys this script holds,
   introspection at /hs/introspect for `hs_` tokens), so faults are injected there without
   killing a real server. Short key timings (refresh 5 s, retry 1 s, unknown-kid refetch 1 s,
   fetch timeout 1 s), introspection timeout 1 s and max TTL 3600 s. Envoy's access log is off
   (saturation); the soak's Envoy adds the response header x-soak-kind (copied from the request)
   to upstream answers and local replies, so wrk can count per request kind.
2. Mints tokens: "steady" valid kinds used (so cached) before the run and in every phase
   (jwt-as1, opq-as1, jwt-as2, opq-as2, jwt-hs, opq-hs), fresh sets first used during a fault,
   and invalid kinds (inv-tampered: AS-1 JWT with a changed signature; inv-expired, inv-issuer:
   signed by the hs key, expired / unknown iss; inv-garbage; inv-header: no bearer token or a
   malformed Authorization header; inv-opq-as1: unknown opaque tokens of AS-1's shape). Each
   phase runs ONE wrk (`-t2 -c32`, bench/soak.lua) for minutes*60/9 s over a shuffled list of
   about 70 % valid / 30 % invalid requests to /api/soak/<kind>; the Lua script counts
   responses by kind x status (a 503 without Retry-After is counted as `503-noRA`).
3. Phases (the fault is switched between two wrk runs, Envoy is never restarted):

       baseline    everything up
       as1-down    AS-1 stopped          fresh AS-1 opaque tokens 503; fresh AS-1 JWTs 200 (keys held)
       as1-back    AS-1 restarted        fresh AS-1 opaque tokens (minted after the restart) 200
       as2-slow    AS-2 delays 3 s (> introspection timeout 1 s): fresh dot_ tokens 503
       hs-500      hs answers 500 (JWKS and introspection): fresh hs_ tokens 503, AS-2 recovered
       hs-garbage  hs answers 200 text/html garbage: fresh hs_ tokens 503, fresh hs JWTs 200
       hs-slow     hs answers after 3 s (> fetch and introspection timeouts): fresh hs_ tokens 503
       hs-nokey    hs JWKS lacks the key of new tokens (kid k2): those never 200; hs_ recovered
       normal      hs JWKS has k1 and k2: k2 tokens 200 (recovery), every fresh set 200

   Expectations per kind and phase: "200" (every answer 200), "503" (every answer Tollgate's
   503 with Retry-After: fail closed), "4xx" (every answer 400/401/403), "not200" (no 200, no
   5xx other than 503 with Retry-After), "recover" (some 200s, and a probe after the phase is
   200). Steady kinds must be 200 in every phase (cached keys and introspection answers), the
   invalid kinds never 200.
4. Samples Envoy's memory every --sample-s (admin /memory `allocated`, `heap_size`; VmRSS of
   the Envoy process) and Tollgate's counters and Envoy's wasm.* stats after every phase.
   Checks: Envoy alive at the end, no panic / wasm failure lines in its log, wasm.* failure
   stats zero, no status outside 200/400/401/403/503, no 503 without Retry-After (Envoy's own
   503s, e.g. wasm_fail_stream or UC, have none), no wrk socket errors, memory bounded (the
   maximum of the second half at most 1.5 x the first half's + 4 MiB; the slope over the
   second half is reported).
5. Writes the Markdown report (--out) and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "rig"))

import envoy as rig_envoy  # noqa: E402
import stack as rig_stack  # noqa: E402

from jwcrypto import jwk, jwt  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

LUA = ROOT / "bench" / "soak.lua"
AUD = rig_stack.API_AUDIENCE
FAST = {"refresh_interval_s": 5, "retry_interval_s": 1, "refetch_min_interval_s": 1, "fetch_timeout_ms": 1000}
INTRO = {"timeout_ms": 1000, "max_ttl_s": 3600}
AS2_DELAY_MS = 3000
HS_DELAY_MS = 3000
POOL = 20  # tokens per kind
LIST_LEN = 2000  # entries of a phase's wrk list
VALID_SHARE = 0.7
STEADY = ["jwt-as1", "opq-as1", "jwt-as2", "opq-as2", "jwt-hs", "opq-hs"]
INVALID = {"inv-tampered": "4xx", "inv-expired": "4xx", "inv-issuer": "4xx", "inv-garbage": "4xx",
           "inv-header": "4xx", "inv-opq-as1": "not200"}
OK_STATUSES = {200, 400, 401, 403, 503}
LOG_BAD = re.compile(r"panicked|wasm_fail_stream|\]\[(error|critical)\]|Function: .* failed|VM .*(crash|failed)", re.I)
UPSTREAM_BAD = ("upstream_cx_connect_fail", "upstream_rq_5xx", "upstream_rq_timeout", "upstream_rq_reset")


# ------------------------------------------------------------------------------------ stack


class SoakStack(rig_stack.WithHostileAS):
    def plugin_config(self) -> dict:
        cfg = super().plugin_config()
        base = self.hostile_base
        cfg["issuers"].append({
            "name": "hs",
            "issuer": f"{base}/hs",
            "jwks": {"uri": f"{base}/hs/jwks", "upstream": "hostile"},
            "audiences": [AUD],
            "algorithms": ["RS256"],
            "require_at_jwt": True,
            "clock_skew_s": 1,
            **FAST,
            "introspection": {"endpoint": f"{base}/hs/introspect", "upstream": "hostile",
                              "client_id": "rs", "client_secret": "rs-secret", **INTRO},
            "opaque_tokens": {"prefixes": ["hs_"]},
        })
        return cfg

    def tweak_hcm(self, hcm: dict) -> None:
        echo = {"header": {"key": "x-soak-kind", "value": "%REQ(x-soak-kind)%"},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        hcm["route_config"]["virtual_hosts"][0]["response_headers_to_add"] = [echo]
        hcm["local_reply_config"] = {"mappers": [{
            "filter": {"header_filter": {"header": {"name": "x-soak-kind", "present_match": True}}},
            "headers_to_add": [echo],
        }]}

    def start_envoy(self, **kwargs):
        # Saturation: no access log; wasm at info (a warning line per failed introspection).
        return super().start_envoy(access_log=False, component_log_level="wasm:info", **kwargs)


def as_rig(base: str, path: str, method: str = "POST") -> dict:
    r = requests.request(method, f"{base}/__rig/{path}", timeout=10)
    r.raise_for_status()
    return r.json()


# ------------------------------------------------------------------------------------ tokens


class HsKeys:
    def __init__(self) -> None:
        self.k1 = jwk.JWK.generate(kty="RSA", size=2048, kid="k1")
        self.k2 = jwk.JWK.generate(kty="RSA", size=2048, kid="k2")

    @staticmethod
    def public(k: jwk.JWK) -> dict:
        d = json.loads(k.export_public())
        d.update({"alg": "RS256", "use": "sig"})
        return d

    def jwks(self, *keys: jwk.JWK) -> dict:
        return {"keys": [self.public(k) for k in keys]}

    def sign(self, key: jwk.JWK, iss: str, **extra) -> str:
        now = int(time.time())
        claims = {"iss": iss, "sub": "soak", "aud": AUD, "client_id": "hs-client", "scope": "read",
                  "iat": now, "exp": now + 7200, "jti": secrets.token_hex(8)}
        claims.update(extra)
        t = jwt.JWT(header={"alg": "RS256", "kid": key.key_id, "typ": "at+jwt"}, claims=claims)
        t.make_signed_token(key)
        return t.serialize()


def bearer(tokens: list[str]) -> list[str]:
    return [f"Bearer {t}" for t in tokens]


def tamper(token: str) -> str:
    head, payload, sig = token.split(".")
    i = len(sig) // 2
    return f"{head}.{payload}.{sig[:i]}{'A' if sig[i] != 'A' else 'B'}{sig[i + 1:]}"


def hs_answers(keys: HsKeys, mode: str) -> dict:
    """The hostile AS's answers for /hs/jwks and /hs/introspect in a mode."""
    good_intro = {"json": {"active": True, "scope": "read", "client_id": "hs-client", "sub": "soak",
                           "exp": int(time.time()) + 7200, "token_type": "Bearer"}}
    if mode == "500":
        err = {"status": 500, "json": {"error": "server_error"}}
        return {"/hs/jwks": err, "/hs/introspect": err}
    if mode == "garbage":
        junk = {"status": 200, "body": "<html>\x01\x02 not json {{{ \ufffd", "content_type": "text/html"}
        return {"/hs/jwks": junk, "/hs/introspect": junk}
    if mode == "slow":  # good answers, after longer than the fetch and introspection timeouts
        return {"/hs/jwks": {"json": keys.jwks(keys.k1), "delay_ms": HS_DELAY_MS},
                "/hs/introspect": {**good_intro, "delay_ms": HS_DELAY_MS}}
    if mode == "k1":  # normal before k2 exists, and "JWKS without the current key" once it does
        return {"/hs/jwks": {"json": keys.jwks(keys.k1)}, "/hs/introspect": good_intro}
    if mode == "k1k2":
        return {"/hs/jwks": {"json": keys.jwks(keys.k1, keys.k2)}, "/hs/introspect": good_intro}
    raise ValueError(mode)


def set_hs(st: SoakStack, keys: HsKeys, mode: str) -> None:
    r = requests.post(f"{st.hostile_base}/__rig/set", json=hs_answers(keys, mode), timeout=10)
    r.raise_for_status()


# ------------------------------------------------------------------------------------ phases


@dataclass
class Phase:
    name: str
    fault: str
    expect: dict[str, str]  # kind -> "200" | "503" | "4xx" | "not200" | "recover"
    wrk: dict = field(default_factory=dict)
    counts: dict[str, Counter] = field(default_factory=dict)  # kind -> status -> n
    probes: dict[str, int] = field(default_factory=dict)
    stats_delta: dict[str, int] = field(default_factory=dict)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def rps(self) -> float:
        d = self.wrk.get("duration_us", 0)
        return self.wrk.get("requests", 0) / (d / 1e6) if d else 0.0


def phases() -> list[Phase]:
    steady = {k: "200" for k in STEADY}
    inv = dict(INVALID)

    def ph(name: str, fault: str, **extra: str) -> Phase:
        return Phase(name, fault, {**steady, **{k.replace("_", "-"): v for k, v in extra.items()}, **inv})

    return [
        ph("baseline", "none"),
        ph("as1-down", "AS-1 stopped", new_jwt_as1="200", new_opq_as1="503"),
        ph("as1-back", "AS-1 restarted (same keys; it forgot its opaque tokens)", new_jwt_as1="200",
           new_opq_as1b="recover"),
        ph("as2-slow", f"AS-2 delays every answer {AS2_DELAY_MS} ms (> introspection timeout 1000 ms)",
           new_opq_as1b="200", new_opq_as2="503"),
        ph("hs-500", "hostile AS: 500 for JWKS and introspection", new_opq_as2="recover", new_jwt_hs="200",
           new_opq_hs="503"),
        ph("hs-garbage", "hostile AS: 200 text/html garbage for JWKS and introspection", new_opq_as2="200",
           new_jwt_hs="200", new_opq_hs="503"),
        ph("hs-slow", f"hostile AS: JWKS and introspection answer after {HS_DELAY_MS} ms (> timeouts 1000 ms)",
           new_jwt_hs="200", new_opq_hs="503"),
        ph("hs-nokey", "hostile AS: JWKS without the key (kid k2) of new tokens", new_jwt_hs="200",
           new_opq_hs="recover", kid2_jwt_hs="not200"),
        ph("normal", "none (hostile JWKS has k1 and k2)", new_jwt_as1="200", new_opq_as1b="200",
           new_opq_as2="200", new_jwt_hs="200", new_opq_hs="200", kid2_jwt_hs="recover"),
    ]


def write_list(path: Path, phase: Phase, pool: dict[str, list[str]], rng: random.Random) -> None:
    valid = [k for k in phase.expect if not k.startswith("inv-")]
    invalid = [k for k in phase.expect if k.startswith("inv-")]
    n_valid = int(LIST_LEN * VALID_SHARE)
    lines = []
    for kinds, n in ((valid, n_valid), (invalid, LIST_LEN - n_valid)):
        for j in range(n):
            kind = kinds[j % len(kinds)]
            values = pool[kind]
            lines.append(f"{kind}\t{values[(j // len(kinds)) % len(values)]}")
    rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n")


_wrk: subprocess.Popen | None = None


def run_wrk(url: str, list_file: Path, seconds: int, threads: int, connections: int) -> dict:
    global _wrk
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", str(LUA),
            url, "--", str(list_file)]
    _wrk = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = _wrk.communicate()
    rc, _wrk = _wrk.returncode, None
    m = re.search(r"^SOAK (\{.*\})$", out, re.M)
    if rc != 0 or not m:
        raise RuntimeError(f"wrk failed (rc {rc}):\n{out}")
    return json.loads(m.group(1))


def split_counts(flat: dict[str, int]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for key, n in flat.items():
        kind, _, status = key.partition(" ")
        out.setdefault(kind, Counter())[status] += n
    return out


def probe(st: SoakStack, kind: str, auth: str) -> int:
    h = {"x-soak-kind": kind}
    if auth:
        h["Authorization"] = auth
    try:
        return requests.get(f"{st.url}/api/soak/{kind}", headers=h, timeout=10).status_code
    except requests.RequestException:
        return -1


def judge(phase: Phase) -> None:
    for kind, exp in phase.expect.items():
        c = phase.counts.get(kind, Counter())
        total = sum(c.values())
        desc = ", ".join(f"{s}: {n}" for s, n in sorted(c.items()))
        if total == 0:
            phase.checks.append((f"{kind}: requests sent", False, "none counted"))
            continue
        if exp == "200":
            ok = c["200"] == total
            what = "every answer 200"
        elif exp == "503":
            ok = c["503"] == total
            what = "every answer 503 with Retry-After (fail closed)"
        elif exp == "4xx":
            ok = sum(n for s, n in c.items() if s in ("400", "401", "403")) == total
            what = "every answer 400/401/403"
        elif exp == "not200":
            ok = sum(n for s, n in c.items() if s in ("400", "401", "403", "503")) == total
            what = "never 200 (4xx or 503 with Retry-After)"
        elif exp == "recover":
            ok = c["200"] > 0 and phase.probes.get(kind) == 200
            what = f"recovers: 200s seen ({c['200'] / total:.0%}), probe after the phase {phase.probes.get(kind)}"
        else:
            raise ValueError(exp)
        phase.checks.append((f"{kind}: {what}", ok, desc))
    others = {k: c for k, c in phase.counts.items() if k not in phase.expect}
    if others:
        phase.checks.append(("no answer without a known kind", False, json.dumps(others)))


# ------------------------------------------------------------------------------------ sampling


class Sampler(threading.Thread):
    def __init__(self, st: SoakStack, interval: float):
        super().__init__(daemon=True)
        self.st, self.interval = st, interval
        self.samples: list[dict] = []
        self.phase = "setup"
        self.t0 = time.monotonic()
        self._halt = threading.Event()

    def sample(self) -> None:
        s = {"t": time.monotonic() - self.t0, "phase": self.phase}
        try:
            _, body = rig_envoy.admin_get(self.st.envoy.admin_port, "/memory")
            m = json.loads(body)
            s["allocated"] = int(m.get("allocated", 0))
            s["heap_size"] = int(m.get("heap_size", 0))
        except (OSError, ValueError):
            pass
        try:
            for line in Path(f"/proc/{self.st.envoy.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    s["rss"] = int(line.split()[1]) * 1024
        except OSError:
            pass
        self.samples.append(s)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        self.sample()


def slope_per_min(samples: list[dict], key: str) -> float:
    pts = [(s["t"], s[key]) for s in samples if key in s]
    if len(pts) < 2:
        return 0.0
    n = len(pts)
    mt = sum(t for t, _ in pts) / n
    mv = sum(v for _, v in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    return 60 * sum((t - mt) * (v - mv) for t, v in pts) / den if den else 0.0


def mib(v: float) -> str:
    return f"{v / 2**20:.1f}"


# ------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the phases together (default 10)")
    ap.add_argument("--workers", type=int, default=2, help="Envoy --concurrency (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    ap.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--sample-s", type=float, default=5.0, help="memory sampling interval (default 5)")
    ap.add_argument("--out", type=Path, default=ROOT / "target" / "soak" / "report.md")
    ap.add_argument("--workdir", type=Path, default=ROOT / "target" / "soak" / "run")
    ap.add_argument("--no-build", action="store_true", help="use target/tollgate.wasm as it is")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if not args.no_build:
        rig_stack.build_wasm()
    rng = random.Random(args.seed)
    plan = phases()
    phase_s = max(2, round(args.minutes * 60 / len(plan)))
    args.workdir.mkdir(parents=True, exist_ok=True)
    for old in args.workdir.glob("*.log"):
        old.unlink()

    keys = HsKeys()
    st = SoakStack(args.workdir, concurrency=args.workers)
    st.start_hostile()  # scripted (set_hs) before the stack starts; st.stop() stops it
    sampler: Sampler | None = None
    setup_notes: list[str] = []
    global_checks: list[tuple[str, bool, str]] = []
    stats_end: dict[str, int] = {}
    stats_run: dict[str, int] = {}
    upstream_bad: dict[str, int] = {}
    vm_created: tuple = (None, None)
    wasm_end: dict[str, int] = {}
    envoy_alive = False
    log_bad: list[str] = []
    started = time.time()
    try:
        set_hs(st, keys, "k1")
        # AS-2's JWKS: fetched via the rig config; introspection timeouts and short key timings:
        st.issuer_overrides = {"as1": {**FAST, "introspection": INTRO}, "as2": {**FAST, "introspection": INTRO}}
        st.start()
        print(f"soak: stack up (Envoy {st.url}, admin {st.envoy.admin_port}, {args.workers} workers)", flush=True)

        hs_iss = f"{st.hostile_base}/hs"
        pool: dict[str, list[str]] = {}

        def mint_as1_steady() -> None:
            pool["jwt-as1"] = bearer([st.as1_token() for _ in range(POOL)])
            pool["opq-as1"] = bearer([st.as1_opaque_token() for _ in range(POOL)])

        mint_as1_steady()
        pool["jwt-as2"] = bearer([st.as2_token() for _ in range(POOL)])
        pool["opq-as2"] = bearer([st.as2_opaque_token() for _ in range(POOL)])
        pool["jwt-hs"] = bearer([keys.sign(keys.k1, hs_iss) for _ in range(POOL)])
        pool["opq-hs"] = bearer([f"hs_{secrets.token_urlsafe(24)}" for _ in range(POOL)])
        # fresh sets: first used during a fault
        pool["new-jwt-as1"] = bearer([st.as1_token() for _ in range(POOL)])
        pool["new-opq-as1"] = bearer([st.as1_opaque_token() for _ in range(POOL)])
        pool["new-opq-as2"] = bearer([st.as2_opaque_token() for _ in range(POOL)])
        pool["new-jwt-hs"] = bearer([keys.sign(keys.k1, hs_iss) for _ in range(POOL)])
        pool["new-opq-hs"] = bearer([f"hs_{secrets.token_urlsafe(24)}" for _ in range(POOL)])
        pool["kid2-jwt-hs"] = bearer([keys.sign(keys.k2, hs_iss) for _ in range(POOL)])
        # invalid
        pool["inv-tampered"] = bearer([tamper(st.as1_token()) for _ in range(5)])
        pool["inv-expired"] = bearer([keys.sign(keys.k1, hs_iss, iat=int(time.time()) - 7200,
                                                exp=int(time.time()) - 3600) for _ in range(5)])
        pool["inv-issuer"] = bearer([keys.sign(keys.k1, "http://unknown-issuer.invalid") for _ in range(5)])
        pool["inv-garbage"] = bearer(["garbage!!@@", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "%%%%", "..."])
        pool["inv-header"] = ["", "Bearer", "Basic Zm9vOmJhcg==", "Bearer  a b", "Token abc"]
        pool["inv-opq-as1"] = bearer([secrets.token_urlsafe(32)[:43] for _ in range(POOL)])

        def warm(kinds: list[str]) -> None:
            bad = Counter()
            for kind in kinds:
                for auth in pool[kind]:
                    if (s := probe(st, kind, auth)) != 200:
                        bad[f"{kind} {s}"] += 1
            if bad:
                setup_notes.append(f"warm-up of {kinds}: non-200 answers {dict(bad)}")
            global_checks.append((f"warm-up of {', '.join(kinds)}: every token 200", not bad, json.dumps(dict(bad))))

        warm(STEADY)
        as1_minted = time.monotonic()
        sampler = Sampler(st, args.sample_s)
        sampler.start()
        stats_before = st.stats("tollgate.")
        wasm_before = rig_envoy.stats(st.envoy.admin_port, "wasm.")
        up_before = rig_envoy.stats(st.envoy.admin_port, "cluster.upstream.")

        for i, phase in enumerate(plan):
            # --- switch the fault on (between two wrk runs) ---
            if phase.name == "as1-down":
                st.procs["as1"].stop()
            elif phase.name == "as1-back":
                st.start_as1()
                pool["new-opq-as1b"] = bearer([st.as1_opaque_token() for _ in range(POOL)])
                if time.monotonic() - as1_minted + phase_s * (len(plan) - i) > 540:
                    # AS-1 client_credentials tokens live 600 s: a fresh steady set for the rest
                    mint_as1_steady()
                    warm(["jwt-as1", "opq-as1"])
                    pool["new-jwt-as1"] = bearer([st.as1_token() for _ in range(POOL)])
                    setup_notes.append("AS-1 client_credentials tokens live 600 s: after AS-1 came back, the steady "
                                       "AS-1 sets were re-minted and warmed, and new-jwt-as1 re-minted (first used "
                                       "in as1-back)")
            elif phase.name == "as2-slow":
                as_rig(st.as2_issuer.rsplit("/o", 1)[0], f"delay?ms={AS2_DELAY_MS}")
            elif phase.name == "hs-500":
                as_rig(st.as2_issuer.rsplit("/o", 1)[0], "delay?ms=0")
                set_hs(st, keys, "500")
            elif phase.name == "hs-garbage":
                set_hs(st, keys, "garbage")
            elif phase.name == "hs-slow":
                set_hs(st, keys, "slow")
            elif phase.name == "hs-nokey":
                set_hs(st, keys, "k1")
            elif phase.name == "normal":
                set_hs(st, keys, "k1k2")
            sampler.phase = phase.name
            list_file = args.workdir / f"list-{phase.name}.txt"
            write_list(list_file, phase, pool, rng)
            before = st.stats("tollgate.")
            print(f"soak: phase {i + 1}/{len(plan)} {phase.name} ({phase_s} s): {phase.fault}", flush=True)
            phase.wrk = run_wrk(st.url, list_file, phase_s, args.threads, args.connections)
            phase.counts = split_counts(phase.wrk.get("counts", {}))
            time.sleep(0.3)  # let Envoy finish what wrk left in flight
            for kind in phase.expect:
                phase.probes[kind] = probe(st, kind, pool[kind][0])
            after = st.stats("tollgate.")
            phase.stats_delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
            judge(phase)
            fails = [c for c in phase.checks if not c[1]]
            print(f"soak:   {phase.rps:.0f} req/s, {phase.wrk.get('requests')} requests, "
                  f"{len(phase.checks) - len(fails)}/{len(phase.checks)} checks passed"
                  + "".join(f"\n  FAILED {n}: {d}" for n, _, d in fails), flush=True)

        sampler.stop()
        stats_end = st.stats("tollgate.")
        stats_run = {k: v - stats_before.get(k, 0) for k, v in stats_end.items()}
        wasm_end = rig_envoy.stats(st.envoy.admin_port, "wasm.")
        up_end = rig_envoy.stats(st.envoy.admin_port, "cluster.upstream.")
        upstream_bad = {k: up_end.get(k, 0) - up_before.get(k, 0) for k in up_end
                        if k.split(".")[-1] in UPSTREAM_BAD and up_end.get(k, 0) != up_before.get(k, 0)}
        vm_created = (wasm_before.get("wasm.envoy.wasm.runtime.v8.created"), wasm_end.get("wasm.envoy.wasm.runtime.v8.created"))
        envoy_alive = st.envoy.popen is not None and st.envoy.popen.poll() is None
        log_bad = [line for line in st.envoy.log_text().splitlines() if LOG_BAD.search(line)][:20]
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    finally:
        if _wrk is not None and _wrk.poll() is None:
            _wrk.kill()
            _wrk.wait()
        if sampler is not None:
            sampler._halt.set()
        st.stop()

    # --- global checks ---
    all_counts: Counter = Counter()
    errs: Counter = Counter()
    for p in plan:
        for kind, c in p.counts.items():
            for s, n in c.items():
                all_counts[s] += n
        errs.update({k: v for k, v in p.wrk.get("errors", {}).items() if k != "status"})
    odd = {s: n for s, n in all_counts.items() if not s.isdigit() or int(s) not in OK_STATUSES}
    global_checks += [
        ("Envoy alive at the end (no crash, never restarted)", envoy_alive, ""),
        ("no panic / wasm failure lines in Envoy's log", not log_bad, "\n".join(log_bad)),
        ("no status other than 200/400/401/403/503, no 503 without Retry-After", not odd, json.dumps(odd)),
        ("no wrk socket errors (connect/read/write/timeout)", sum(errs.values()) == 0, json.dumps(dict(errs))),
    ]
    wasm_fail = {k: v for k, v in wasm_end.items() if re.search(r"fail|crash|error", k, re.I) and v}
    global_checks.append(("Envoy wasm.* failure stats zero", not wasm_fail, json.dumps(wasm_fail)))
    global_checks.append(("no wasm VM created during the run (no crash and reload): wasm.envoy.wasm.runtime.v8.created "
                          f"{vm_created[0]} -> {vm_created[1]}", vm_created[0] is not None and vm_created[0] == vm_created[1], ""))
    global_checks.append(("no Envoy-made upstream failure (UC/UF, 5xx, timeout, reset) on cluster upstream",
                          not upstream_bad, json.dumps(upstream_bad)))
    samples = sampler.samples if sampler else []
    half = len(samples) // 2
    mem_rows = []
    for key in ("allocated", "heap_size", "rss"):
        vals = [s[key] for s in samples if key in s]
        if not vals:
            global_checks.append((f"memory samples ({key})", False, "none"))
            continue
        first, second = vals[: max(1, len(vals) // 2)], vals[len(vals) // 2:]
        slope = slope_per_min(samples[half:], key)
        mem_rows.append((key, vals[0], max(vals), vals[-1], max(first), max(second), slope))
        if key in ("allocated", "rss"):
            bound = 1.5 * max(first) + 4 * 2**20
            global_checks.append((f"memory bounded ({key}): max of 2nd half {mib(max(second))} MiB <= "
                                  f"1.5 x 1st half max + 4 MiB = {mib(bound)} MiB", max(second) <= bound,
                                  f"slope over 2nd half {mib(slope)} MiB/min"))

    # --- report ---
    out: list[str] = []
    w = out.append
    w(f"# Tollgate soak: faults under load ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))})\n")
    w("Generated by `bench/soak` (see its docstring in bench/soak.py).\n")
    w("## Setup\n")
    w(f"- {args.minutes:g} min of load in {len(plan)} phases of {phase_s} s; Envoy --concurrency {args.workers}; "
      f"`wrk -t{args.threads} -c{args.connections}` (saturation) with bench/soak.lua over {LIST_LEN} "
      f"requests per phase, {VALID_SHARE:.0%} valid kinds / {1 - VALID_SHARE:.0%} invalid, shuffled")
    w("- issuers: as1 (oidc-provider, JWT + opaque via introspection), as2 (django-oauth-toolkit, JWT + "
      "opaque `dot_`), hs (hostile scriptable AS: JWKS + introspection of `hs_`); key refresh 5 s, retry 1 s, "
      "unknown-kid refetch 1 s, fetch timeout 1 s; introspection timeout 1 s, max TTL 3600 s")
    w("- throughput is bounded by the rig (the Python echo upstream answers every 200 and wrk, Envoy and the "
      "authorization servers share the machine); the soak is about behaviour and memory, bench/run measures speed")
    w(f"- machine: {os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().release}; {time.time() - started:.0f} s wall")
    for n in setup_notes:
        w(f"- note: {n}")
    w("")
    w("## Phases\n")
    w("| # | phase | fault | req/s | requests | checks |")
    w("|---|---|---|---:|---:|---|")
    for i, p in enumerate(plan, 1):
        nf = sum(1 for c in p.checks if not c[1])
        w(f"| {i} | {p.name} | {p.fault} | {p.rps:.0f} | {p.wrk.get('requests', 0)} | "
          f"{len(p.checks) - nf}/{len(p.checks)} passed |")
    w("")
    for i, p in enumerate(plan, 1):
        w(f"### {i}. {p.name}: {p.fault}\n")
        w(f"{p.rps:.0f} req/s, p50 {p.wrk.get('p50_us', 0) / 1000:.1f} ms, p99 {p.wrk.get('p99_us', 0) / 1000:.1f} ms; "
          f"wrk socket errors {json.dumps({k: v for k, v in p.wrk.get('errors', {}).items() if k != 'status'})}\n")
        w("| kind | expected | answers by status | probe after | check |")
        w("|---|---|---|---:|---|")
        checks = {name.split(":", 1)[0]: ok for name, ok, _ in p.checks}
        for kind, exp in p.expect.items():
            c = p.counts.get(kind, Counter())
            w(f"| {kind} | {exp} | {', '.join(f'{s}: {n}' for s, n in sorted(c.items())) or '-'} | "
              f"{p.probes.get(kind, '-')} | {'ok' if checks.get(kind) else 'FAILED'} |")
        if p.stats_delta:
            w("\nTollgate counters during the phase: " + ", ".join(
                f"`{k}` +{v}" for k, v in sorted(p.stats_delta.items())) + "\n")
        else:
            w("")
    w("## Memory (Envoy process)\n")
    w(f"{len(samples)} samples every {args.sample_s:g} s (admin `/memory`; VmRSS from /proc).\n")
    w("| metric | start MiB | max MiB | end MiB | max 1st half | max 2nd half | slope 2nd half MiB/min |")
    w("|---|---:|---:|---:|---:|---:|---:|")
    for key, start, mx, end, f1, f2, slope in mem_rows:
        w(f"| {key} | {mib(start)} | {mib(mx)} | {mib(end)} | {mib(f1)} | {mib(f2)} | {slope / 2**20:+.2f} |")
    w("")
    w("## Envoy wasm stats at the end\n")
    w(", ".join(f"`{k}` {v}" for k, v in sorted(wasm_end.items())) or "(none)")
    w("")
    w("## Checks\n")
    failed = 0
    for name, ok, detail in global_checks:
        failed += not ok
        w(f"- {'ok' if ok else '**FAILED**'}: {name}" + (f" ({detail})" if detail and not ok else ""))
    for p in plan:
        for name, ok, detail in p.checks:
            failed += not ok
            if not ok:
                w(f"- **FAILED** [{p.name}] {name} ({detail})")
    n_phase_checks = sum(len(p.checks) for p in plan)
    w(f"- per-phase checks: {n_phase_checks - sum(1 for p in plan for c in p.checks if not c[1])}/{n_phase_checks} passed")
    w(f"\n**{'PASSED' if not failed else f'FAILED ({failed} checks)'}**\n")
    if stats_end:
        w("## Tollgate counters over the run\n")
        w(", ".join(f"`{k}` {v}" for k, v in sorted(stats_run.items()) if v))
        w("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(out) + "\n")
    print(f"soak: report written to {args.out}; {'PASSED' if not failed else f'{failed} check(s) FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
