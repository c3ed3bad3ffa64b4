"""The upstream's own log as witness, and POSTs with a body in the shapes that matter while
Tollgate holds a request (tests/e2e/test_step_up.py, test_key_manager.py).

    seen = Upstream(st); ...; seen.saw_nothing() / seen.arrivals() == ["> POST /path"]
    reply = post(st, shape, path, token, extra_headers)   # shape in BODY_SHAPES

The upstream (upstream.py) logs `> METHOD PATH` as soon as a request's headers arrive, so a
request Envoy forwarded and then reset mid-body is still on record.
"""

from __future__ import annotations

import json
import time

try:
    from . import wire
except ImportError:  # tests/rig on sys.path
    import wire

# HTTP/1.1 with the body in the first packet (Content-Length), HTTP/1.1 chunked over time, and
# HTTP/2 DATA frames over time followed by trailers.
BODY_SHAPES = ["first-packet", "chunked", "h2-trailers"]
BODY = json.dumps({"order": "x" * 2000, "n": 42}).encode()


class Upstream:
    """The `> METHOD PATH` lines the upstream logged since this was made."""

    def __init__(self, st):
        self.st = st
        self.mark = len(self._arrivals())

    def _arrivals(self) -> list[str]:
        return [ln for ln in self.st.procs["upstream"].log_text().splitlines() if ln.startswith("> ")]

    def arrivals(self, settle: float = 0.0) -> list[str]:
        if settle:
            time.sleep(settle)  # a request Envoy forwarded before refusing would show by now
        return self._arrivals()[self.mark:]

    def saw_nothing(self) -> None:
        assert self.arrivals(settle=0.3) == [], "the upstream saw a request Tollgate refused"


def send(st, shape: str, method: str, path: str, token: str | None,
         headers: list[tuple[str, str]] = (), body: bytes = b"") -> wire.Reply:
    """One request in a wire.SHAPES shape through Envoy's plain listener, with the bearer token
    and `headers` (a list: a name may repeat)."""
    h = [("Authorization", f"Bearer {token}")] if token is not None else []
    h += list(headers)
    if body:
        h.append(("Content-Type", "application/json"))
    req = wire.request(shape, method, path, h, body, host=f"127.0.0.1:{st.listener_port}")
    return wire.send(st.listener_port, req)


def post(st, shape: str, path: str, token: str | None, headers: list[tuple[str, str]] = ()) -> wire.Reply:
    """POST BODY in `shape` (one of BODY_SHAPES)."""
    return send(st, shape, "POST", path, token, headers, BODY)


def assert_post_arrived(st, shape: str, path: str, token: str, headers: list[tuple[str, str]] = ()) -> dict:
    """The POST reached the upstream once, with the whole body; the headers it received."""
    seen = Upstream(st)
    r = post(st, shape, path, token, headers)
    assert r.status == 200, (shape, r)
    echo = r.json()
    assert (echo["method"], echo["path"], echo["body_len"]) == ("POST", path, len(BODY)), echo
    assert seen.arrivals() == [f"> POST {path}"], shape
    return echo["headers"]


def assert_post_refused(st, shape: str, path: str, token: str, status: int,
                        headers: list[tuple[str, str]] = ()) -> wire.Reply:
    """The POST got `status` from Tollgate and the upstream never saw it."""
    seen = Upstream(st)
    r = post(st, shape, path, token, headers)
    assert r.status == status, (shape, r)
    seen.saw_nothing()
    return r
