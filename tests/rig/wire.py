"""Requests sent with the test's own timing: HTTP/1.1 written byte for byte on a raw socket, and
HTTP/2 (h2c with prior knowledge, which Envoy's AUTO codec accepts) with the `h2` library, so a
test decides when headers, each body piece, and trailers leave, and sees exactly what came back.

    reply = wire.send(port, wire.request("later", "POST", "/api/orders/x", headers, b"qty=1000"))
    reply.status, reply.headers, reply.body, reply.interim, reply.error

A request is a list of steps run in order, each `delay` seconds after the previous one: bytes to
write (HTTP/1.1), HTTP/2 frames to send, or "wait for a 100 Continue" (at most 1 s, as curl
does). The exchange ends when the final response is complete, the connection is closed or reset,
or the timeout passes; whatever the server answers meanwhile is read as it arrives (a local reply
while the body is still being sent included). `request()` builds the request shapes the
request-path matrix uses (tests/e2e/test_request_path.py); `Conn.open()` + `run()` let a caller
connect (and finish the HTTP/2 handshake) first and start many requests at the same moment.
"""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions

# Seconds between the pieces of a request sent over time.
LATER = 0.2  # headers, then the body this much later
CHUNK_GAP = 0.1  # chunked / HTTP/2 DATA pieces
PIECES = 3

SHAPES = [
    "get",  # GET, headers only
    "first-packet",  # POST, headers and the whole body (Content-Length) in one write
    "later",  # POST, headers, then the body LATER s after
    "chunked",  # POST, Transfer-Encoding: chunked, PIECES chunks CHUNK_GAP s apart
    "chunked-trailers",  # the same, with trailers after the last chunk
    "expect",  # POST with Expect: 100-continue; the body once 100 Continue arrives
    "large",  # POST, a body larger than Envoy's buffer limit, right after the headers, as fast as it goes
    "h2-large",  # HTTP/2: HEADERS, then the large body as fast as flow control lets it go
    "h2",  # HTTP/2: HEADERS, then PIECES DATA frames CHUNK_GAP s apart, END_STREAM on the last
    "h2-trailers",  # HTTP/2: HEADERS, DATA frames, then trailers (HEADERS with END_STREAM)
    "h2-trailers-only",  # HTTP/2: HEADERS, then after LATER s trailers only (no DATA)
]
H2_SHAPES = {s for s in SHAPES if s.startswith("h2")}
TRAILERS = [("x-checksum", "sha256-of-nothing"), ("x-trailer-note", "done")]


@dataclass
class Reply:
    status: int | None = None  # the final response's status; None if none arrived
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names, repeats joined ", "
    body: bytes = b""
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen
    error: str | None = None  # "closed", "reset", "timeout", "stream reset (code)", ...
    elapsed: float = 0.0

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:  # short, for assertion messages
        return (f"Reply(status={self.status}, error={self.error}, interim={self.interim}, "
                f"headers={self.headers}, body={self.body[:300]!r}, elapsed={self.elapsed:.2f})")


@dataclass
class Step:
    delay: float = 0.0
    data: bytes = b""  # HTTP/1.1: bytes to write
    h2: Callable[["Conn"], None] | None = None  # HTTP/2: queue frames on the connection
    await_100: bool = False  # hold the following steps until a 100 Continue (at most 1 s)


@dataclass
class Request:
    http2: bool
    steps: list[Step]
    method: str = "GET"
    path: str = "/"


def _header_block(method: str, path: str, host: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _split(body: bytes, n: int) -> list[bytes]:
    size = max(1, -(-len(body) // n))
    return [body[i:i + size] for i in range(0, len(body), size)] or [b""]


def request(shape: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"",
            host: str = "127.0.0.1", trailers: list[tuple[str, str]] | None = None) -> Request:
    """One of SHAPES. `headers` are the request's own (no Host / Content-Length / TE: added here);
    `method` is used as given except for "get" (GET, no body). HTTP/1.1 requests ask for
    Connection: close."""
    trailers = TRAILERS if trailers is None else trailers
    if shape in H2_SHAPES:
        return _h2_request(shape, method, path, headers, body, host, trailers)
    base = list(headers) + [("Connection", "close")]
    if shape == "get":
        return Request(False, [Step(data=_header_block("GET", path, host, base))], "GET", path)
    if shape == "first-packet":
        head = _header_block(method, path, host, base + [("Content-Length", str(len(body)))])
        return Request(False, [Step(data=head + body)], method, path)
    if shape == "large":  # the headers' own segment first, so concurrent requests start together
        head = _header_block(method, path, host, base + [("Content-Length", str(len(body)))])
        return Request(False, [Step(data=head), Step(data=body)], method, path)
    if shape == "later":
        head = _header_block(method, path, host, base + [("Content-Length", str(len(body)))])
        return Request(False, [Step(data=head), Step(delay=LATER, data=body)], method, path)
    if shape == "expect":
        head = _header_block(method, path, host,
                             base + [("Content-Length", str(len(body))), ("Expect", "100-continue")])
        return Request(False, [Step(data=head, await_100=True), Step(data=body)], method, path)
    if shape in ("chunked", "chunked-trailers"):
        head = _header_block(method, path, host, base + [("Transfer-Encoding", "chunked")])
        steps = [Step(data=head)]
        for piece in _split(body, PIECES):
            steps.append(Step(delay=CHUNK_GAP, data=b"%x\r\n%s\r\n" % (len(piece), piece)))
        end = b"0\r\n"
        if shape == "chunked-trailers":
            end += b"".join(f"{k}: {v}\r\n".encode() for k, v in trailers)
        steps.append(Step(delay=CHUNK_GAP, data=end + b"\r\n"))
        return Request(False, steps, method, path)
    raise ValueError(shape)


def _h2_request(shape, method, path, headers, body, host, trailers) -> Request:
    pseudo = [(":method", method), (":path", path), (":scheme", "http"), (":authority", host)]
    hdrs = pseudo + [(k.lower(), v) for k, v in headers]
    sid = 1

    def send_headers(end: bool):
        return lambda c: c.h2.send_headers(sid, hdrs, end_stream=end)

    def send_data(piece: bytes, end: bool):
        return lambda c: c.queue_h2(sid, piece, end)

    def send_trailers(c: "Conn"):
        c.queue_h2(sid, [(k.lower(), v) for k, v in trailers], True)

    if shape == "h2-large":
        return Request(True, [Step(h2=send_headers(False)), Step(h2=send_data(body, True))], method, path)
    if shape == "h2-trailers-only":
        return Request(True, [Step(h2=send_headers(False)), Step(delay=LATER, h2=send_trailers)], method, path)
    steps = [Step(h2=send_headers(False))]
    pieces = _split(body, PIECES)
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1 and shape == "h2"
        steps.append(Step(delay=CHUNK_GAP, h2=send_data(piece, last)))
    if shape == "h2-trailers":
        steps.append(Step(delay=CHUNK_GAP, h2=send_trailers))
    return Request(True, steps, method, path)


class Conn:
    """One client connection (HTTP/1.1, or HTTP/2 with the preface and SETTINGS exchanged)."""

    def __init__(self, port: int, http2: bool, host: str = "127.0.0.1", timeout: float = 10.0):
        self.port, self.http2, self.timeout = port, http2, timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.out = bytearray()
        self.inbuf = bytearray()
        self.reply = Reply()
        self.done = False
        self.got_100 = False
        self.write_closed = False
        self.h2: h2.connection.H2Connection | None = None
        # HTTP/2 DATA (bytes) and trailers (a header list) waiting for flow-control window.
        self.h2_queue: list[tuple[int, bytes | list, bool]] = []
        if http2:
            self.h2 = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            self.h2.initiate_connection()
            self.out += self.h2.data_to_send()
            self._flush_blocking()
            # Wait for the server's SETTINGS so the first request does not race the handshake.
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("closed during the HTTP/2 handshake")
                events = self.h2.receive_data(data)
                self.out += self.h2.data_to_send()
                self._flush_blocking()
                if any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events):
                    break
        self.sock.setblocking(False)

    def _flush_blocking(self) -> None:
        if self.out:
            self.sock.sendall(bytes(self.out))
            self.out.clear()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    # --- the exchange ---------------------------------------------------------------------

    def run(self, req: Request) -> Reply:
        return run_all([(self, req)])[0]

    # --- driven by run_all ----------------------------------------------------------------

    def begin(self, req: Request, t0: float) -> None:
        self.t0 = t0
        self.deadline = t0 + self.timeout
        self.steps = list(req.steps)
        self.due = t0 + (self.steps[0].delay if self.steps else 0)
        self.hold_until: float | None = None  # waiting for 100 Continue
        self.head_request = req.method == "HEAD"
        # The first step is encoded now (HPACK costs ~0.1 ms in Python) and only written at t0.
        if self.steps and self.steps[0].delay == 0:
            first = self.steps.pop(0)
            self._prepare(first)
            if first.await_100:
                self.hold_until = t0 + 1.0
            if self.steps:
                self.due = t0 + self.steps[0].delay

    def step(self, now: float) -> float:
        """Runs the steps that are due; returns when this connection next needs attention."""
        if self.done:
            return float("inf")
        if now >= self.deadline:
            self.reply.error = self.reply.error or "timeout"
            self.finish(now)
            return float("inf")
        if self.hold_until is not None and (self.got_100 or now >= self.hold_until):
            self.hold_until = None
            self.due = max(self.due, now)
        while self.steps and self.hold_until is None and now >= self.due:
            step = self.steps.pop(0)
            self._do(step)
            if step.await_100:
                self.hold_until = now + 1.0
            if self.steps:
                self.due = now + self.steps[0].delay
        nxt = self.deadline
        if self.steps:
            nxt = min(nxt, self.hold_until if self.hold_until is not None else self.due)
        return nxt

    def wants_write(self) -> bool:
        return bool(self.out) and not self.write_closed and not self.done

    def finish(self, now: float) -> None:
        self.done = True
        self.reply.elapsed = now - self.t0
        self.close()

    def queue_h2(self, sid: int, item: bytes | list, end: bool) -> None:
        self.h2_queue.append((sid, item, end))
        self._pump_h2()

    def _pump_h2(self) -> None:
        """Sends queued DATA as the stream's flow-control window allows (in frames of at most
        the peer's frame size), then trailers once the data before them is out."""
        while self.h2_queue:
            sid, item, end = self.h2_queue[0]
            try:
                if isinstance(item, list):
                    self.h2.send_headers(sid, item, end_stream=end)
                    self.h2_queue.pop(0)
                    continue
                room = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
                if room <= 0 and item:
                    break
                piece, rest = item[:room], item[room:]
                self.h2.send_data(sid, piece, end_stream=end and not rest)
                if rest:
                    self.h2_queue[0] = (sid, rest, end)
                else:
                    self.h2_queue.pop(0)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.h2_queue.clear()  # the server ended the stream (a local reply): stop sending
        self.out += self.h2.data_to_send()

    def _do(self, step: Step) -> None:
        self._prepare(step)
        self._write()

    def _prepare(self, step: Step) -> None:
        """Encodes a step into the output buffer (written by the next _write)."""
        if self.write_closed:
            return
        if step.h2 is not None:
            try:
                step.h2(self)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return  # the server ended the stream already (a local reply): nothing more to send
            self.out += self.h2.data_to_send()
        else:
            self.out += step.data

    def _write(self) -> None:
        if not self.out or self.write_closed:
            return
        try:
            n = self.sock.send(self.out)
            del self.out[:n]
        except BlockingIOError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            self.write_closed = True  # keep reading: the answer may be there

    def _read(self, head_request: bool) -> None:
        try:
            data = self.sock.recv(262144)
        except BlockingIOError:
            return
        except ConnectionResetError:
            self._parse_h1(head_request) if not self.http2 else None
            if not self.done:
                self.reply.error = "reset"
                self.done = True
            return
        if not data:
            if not self.http2:
                self._parse_h1(head_request, eof=True)
            if not self.done:
                self.reply.error = "closed"
                self.done = True
            return
        if self.http2:
            self._feed_h2(data)
        else:
            self.inbuf += data
            self._parse_h1(head_request)

    # --- HTTP/1.1 answers -----------------------------------------------------------------

    def _parse_h1(self, head_request: bool, eof: bool = False) -> None:
        while not self.done:
            end = self.inbuf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.inbuf[:end]).decode("latin-1").split("\r\n")
            status = int(head[0].split()[1])
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
            rest = bytes(self.inbuf[end + 4:])
            if 100 <= status < 200:
                self.reply.interim.append(status)
                self.got_100 = self.got_100 or status == 100
                self.inbuf = bytearray(rest)
                continue
            if head_request or status in (204, 304):
                body, complete = b"", True
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                body, complete = _dechunk(rest)
            elif "content-length" in headers:
                n = int(headers["content-length"])
                body, complete = rest[:n], len(rest) >= n
            else:
                body, complete = rest, eof
            if complete or eof:
                self.reply.status, self.reply.headers, self.reply.body = status, headers, body
                if not complete:
                    self.reply.error = "truncated"
                self.done = True
            return

    # --- HTTP/2 answers -------------------------------------------------------------------

    def _feed_h2(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self.reply.error = f"protocol error: {e}"
            self.done = True
            return
        for ev in events:
            if isinstance(ev, h2.events.InformationalResponseReceived):
                self.reply.interim.append(int(dict(ev.headers)[":status"]))
            elif isinstance(ev, h2.events.ResponseReceived):
                headers: dict[str, str] = {}
                for k, v in ev.headers:
                    if k == ":status":
                        self.reply.status = int(v)
                    else:
                        headers[k] = f"{headers[k]}, {v}" if k in headers else v
                self.reply.headers = headers
            elif isinstance(ev, h2.events.DataReceived):
                self.reply.body += ev.data
                self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self.done = True
            elif isinstance(ev, h2.events.StreamReset):
                self.reply.error = f"stream reset ({ev.error_code!r})"
                if self.reply.status is None or ev.error_code != 0:
                    self.done = True
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.reply.error = self.reply.error or f"goaway ({ev.error_code!r})"
                self.done = True
            elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                self._pump_h2()
        self.out += self.h2.data_to_send()


def _dechunk(data: bytes) -> tuple[bytes, bool]:
    out, i = b"", 0
    while True:
        eol = data.find(b"\r\n", i)
        if eol < 0:
            return out, False
        size = int(data[i:eol].split(b";")[0] or b"0", 16)
        if size == 0:
            return out, data.find(b"\r\n\r\n", eol) >= 0 or data[eol:eol + 4] == b"\r\n\r\n"
        start = eol + 2
        if len(data) < start + size + 2:
            return out, False
        out += data[start:start + size]
        i = start + size + 2


def run_all(pairs: list[tuple[Conn, Request]]) -> list[Reply]:
    """Runs requests on their (already open) connections from one thread: every connection's
    first step is written in one tight loop, so concurrent requests reach the server within
    microseconds of each other; later steps follow each request's own schedule."""
    t0 = time.monotonic() + 0.005 * len(pairs) ** 0.5  # time to encode every first step
    for conn, req in pairs:
        conn.begin(req, t0)
    time.sleep(max(0.0, t0 - time.monotonic()))
    t0 = time.monotonic()
    for conn, _ in pairs:  # the first writes, back to back
        conn.t0 = t0
        conn.deadline = t0 + conn.timeout
        conn._write()
    for conn, _ in pairs:
        conn.step(t0)
    live = [c for c, _ in pairs]
    while live:
        now = time.monotonic()
        nxt = min(c.step(now) for c in live)
        for c in live:
            if c.done and c.sock.fileno() != -1:
                c.finish(now)
        live = [c for c in live if not c.done]
        if not live:
            break
        rs = [c.sock for c in live]
        ws = [c.sock for c in live if c.wants_write()]
        r, w, _ = select.select(rs, ws, [], max(0.0005, min(nxt - now, 0.05)))
        by_sock = {c.sock: c for c in live}
        for sock in w:
            by_sock[sock]._write()
        for sock in r:
            c = by_sock[sock]
            c._read(c.head_request)
        now = time.monotonic()
        for c in live:
            if c.done and c.sock.fileno() != -1:
                c.finish(now)
    return [c.reply for c, _ in pairs]


def send(port: int, req: Request, timeout: float = 10.0) -> Reply:
    """Connects, runs the request, closes."""
    try:
        conn = Conn(port, req.http2, timeout=timeout)
    except OSError as e:
        return Reply(error=f"connect: {e}")
    return conn.run(req)
