"""A loopback HTTP/1.1 forwarder in front of the PDP (Cerbos) that can make it slow.

    .venv/bin/python tests/rig/pdp_delay.py --port P --target-port T

Every request that is not a control request is forwarded to 127.0.0.1:T unchanged: the request
head and body go out byte for byte as they came in (Content-Length or chunked framing kept,
Host and every other header untouched), and Cerbos' answer comes back byte for byte. Each client
connection gets its own connection to the target, opened when its first request arrives, so
keep-alive and pipelining behave as they would against Cerbos itself. HTTP/1.1 only (no h2c).

Control (test use only; never forwarded or counted):
  POST /__rig/delay?ms=N     hold every later request N ms before forwarding it (0: no delay)
  POST /__rig/require-auth   body = the exact Authorization value every forwarded request must
                             carry; a request without it gets 401 here and is not forwarded (an
                             empty body turns the check off). Cerbos itself takes no credentials.
  GET  /__rig/stats          {"evaluations": n, "forwarded": {path: n}, "refused_auth": n,
                             "in_flight": n, "max_in_flight": n, "delay_ms": N}
                             evaluations = POSTs to /access/v1/evaluation(s) sent on to Cerbos
  GET  /__rig/requests       the last 200 forwarded requests, oldest first: [{"method", "path",
                             "headers": [[name, value], ...], "body": text, "status"}]
  POST /__rig/reset-stats    zero the counters and forget the recorded requests

When the target is down (connection refused), the client's connection is closed without an
answer, as a PDP that went away mid-request would look; nothing is counted.

Prints one line per request (method, path without query, status or "closed", delay); never
headers or bodies (a PEP's PDP credentials travel in Authorization).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import deque
from urllib.parse import parse_qs, urlsplit

MAX_HEAD = 64 * 1024
EVALUATION_PATHS = ("/access/v1/evaluation", "/access/v1/evaluations")


class State:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay_ms = 0
        self.require_auth: str | None = None
        self.reset()

    def reset(self) -> None:
        self.evaluations = 0
        self.forwarded: dict[str, int] = {}
        self.refused_auth = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.recent: deque[dict] = deque(maxlen=200)

    def stats(self) -> dict:
        return {
            "evaluations": self.evaluations,
            "forwarded": dict(self.forwarded),
            "refused_auth": self.refused_auth,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "delay_ms": self.delay_ms,
        }


class Closed(Exception):
    """The peer closed the connection (cleanly between messages, or mid-message)."""


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers


def header(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


async def read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise Closed() from exc
    except asyncio.LimitOverrunError as exc:
        raise Closed("head too large") from exc


async def read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]],
                    until_close: bool) -> bytes:
    """The message body exactly as framed on the wire (chunk sizes and trailers included)."""
    te = header(headers, "transfer-encoding")
    try:
        if te and "chunked" in te.lower():
            raw = bytearray()
            while True:
                size_line = await reader.readuntil(b"\r\n")
                raw += size_line
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        line = await reader.readuntil(b"\r\n")
                        raw += line
                        if line == b"\r\n":
                            return bytes(raw)
                raw += await reader.readexactly(size + 2)
        length = header(headers, "content-length")
        if length is not None:
            return await reader.readexactly(int(length))
        if until_close:
            return await reader.read()
        return b""
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise Closed() from exc


def wants_close(headers: list[tuple[str, str]], version: str) -> bool:
    conn = (header(headers, "connection") or "").lower()
    if "close" in conn:
        return True
    return version == "HTTP/1.0" and "keep-alive" not in conn


def local_answer(status: int, reason: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def control(state: State, method: str, target: str, body: bytes) -> bytes:
    url = urlsplit(target)
    if url.path == "/__rig/delay" and method == "POST":
        state.delay_ms = max(0, int(parse_qs(url.query).get("ms", ["0"])[0]))
        return local_answer(200, "OK", json.dumps({"delay_ms": state.delay_ms}).encode())
    if url.path == "/__rig/require-auth" and method == "POST":
        state.require_auth = body.decode() or None
        return local_answer(200, "OK", json.dumps({"require_auth": state.require_auth is not None}).encode())
    if url.path == "/__rig/stats" and method == "GET":
        return local_answer(200, "OK", json.dumps(state.stats()).encode())
    if url.path == "/__rig/requests" and method == "GET":
        return local_answer(200, "OK", json.dumps(list(state.recent)).encode())
    if url.path == "/__rig/reset-stats" and method == "POST":
        state.reset()
        return local_answer(200, "OK", b"{}")
    return local_answer(404, "Not Found", b'{"error": "unknown rig control"}')


class Upstream:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def ensure(self) -> None:
        if self.writer is None or self.writer.is_closing() or self.reader.at_eof():
            await self.close()
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, limit=MAX_HEAD)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def exchange(self, request: bytes, method: str) -> tuple[bytes, int, bool]:
        """Send one request, return (the raw answer incl. any 1xx, final status, must close).
        A kept-alive target connection that turns out dead before any answer byte (the target
        restarted or closed it idle) is replaced once."""
        reused = self.writer is not None and not self.writer.is_closing() and not self.reader.at_eof()
        try:
            return await self._exchange(request, method)
        except (OSError, Closed) as exc:
            if not reused or getattr(exc, "answered", False):
                raise
            await self.close()
            return await self._exchange(request, method)

    async def _exchange(self, request: bytes, method: str) -> tuple[bytes, int, bool]:
        await self.ensure()
        self.writer.write(request)
        await self.writer.drain()
        raw = bytearray()
        while True:
            try:
                head = await read_head(self.reader)
            except Closed as exc:
                exc.answered = bool(raw)
                raise
            status_line, headers = parse_head(head)
            version, status = status_line.split(" ", 2)[:2]
            status = int(status)
            raw += head
            if 100 <= status < 200:
                continue
            no_body = method == "HEAD" or status in (204, 304)
            framed = header(headers, "content-length") is not None or header(headers, "transfer-encoding")
            if not no_body:
                try:
                    raw += await read_body(self.reader, headers, until_close=True)
                except Closed as exc:
                    exc.answered = True
                    raise
            close = wants_close(headers, version) or (not no_body and not framed)
            return bytes(raw), status, close


async def serve_client(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    upstream = Upstream(state.target_port)
    try:
        while True:
            try:
                head = await read_head(reader)
            except Closed:
                return
            request_line, headers = parse_head(head)
            parts = request_line.split(" ")
            if len(parts) != 3:
                writer.write(local_answer(400, "Bad Request", b'{"error": "bad request line"}'))
                await writer.drain()
                return
            method, target, version = parts
            body = await read_body(reader, headers, until_close=False)
            path = target.split("?", 1)[0]
            if path.startswith("/__rig/"):
                writer.write(control(state, method, target, body))
                await writer.drain()
                continue
            if state.require_auth is not None and header(headers, "authorization") != state.require_auth:
                state.refused_auth += 1
                writer.write(local_answer(401, "Unauthorized", b'{"error": "rig: wrong PDP credentials"}'))
                await writer.drain()
                log(method, path, "401 (rig auth)", 0)
                continue
            delay = state.delay_ms
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                if delay:
                    await asyncio.sleep(delay / 1000)
                try:
                    answer, status, close = await upstream.exchange(head + body, method)
                except (OSError, Closed):
                    # Target down or gone mid-answer: the client sees its connection close.
                    log(method, path, "closed (target unreachable)", delay)
                    return
            finally:
                state.in_flight -= 1
            state.forwarded[path] = state.forwarded.get(path, 0) + 1
            if method == "POST" and path in EVALUATION_PATHS:
                state.evaluations += 1
            state.recent.append({"method": method, "path": path, "headers": headers,
                                 "body": body.decode("utf-8", "replace"), "status": status})
            log(method, path, str(status), delay)
            try:
                writer.write(answer)
                await writer.drain()
            except OSError:
                return  # the client gave up (a PEP that timed out)
            if close or wants_close(headers, version):
                return
    except Closed:
        return
    finally:
        await upstream.close()
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def log(method: str, path: str, outcome: str, delay: int) -> None:
    print(f"{method} {path} {outcome}" + (f" delayed {delay} ms" if delay else ""), flush=True)


async def main_async(port: int, target_port: int) -> None:
    state = State(target_port)
    server = await asyncio.start_server(lambda r, w: serve_client(state, r, w),
                                        "127.0.0.1", port, limit=MAX_HEAD)
    print(f"pdp-delay on 127.0.0.1:{port} -> 127.0.0.1:{target_port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--target-port", type=int, required=True)
    args = ap.parse_args(argv)
    try:
        asyncio.run(main_async(args.port, args.target_port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
