"""Tollgate test rig: the upstream service behind Envoy, on 127.0.0.1.

    python upstream.py --port P

Answers any method on any path with 200 and a JSON echo of what reached it:
{"method": ..., "path": ... (with query), "headers": {lowercased name: value}, "body_len": n}.
Repeated headers are joined with ", ". Tests use it to see which headers the filter added,
removed or passed on. Logs two lines per request, never a query or a body: `> METHOD PATH` as soon
as the request line and headers have arrived (before the body is read, so a request that Envoy
resets mid-body is still on record) and `METHOD PATH STATUS` when it is answered.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _log(line: str) -> None:
    # One write per line: the handler threads' lines never interleave.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream connection pool expects

    def _echo(self) -> None:
        _log(f"> {self.command} {self.path.split('?')[0]}")
        body = self._read_body()
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        reply = json.dumps(
            {"method": self.command, "path": self.path, "headers": headers, "body_len": len(body)}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after the chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(chunks)
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _echo

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # any other method (e.g. PROPFIND) is echoed too
            return self._echo
        raise AttributeError(name)

    def log_request(self, code="-", size="-") -> None:
        _log(f"{self.command} {self.path.split('?')[0]} {getattr(code, 'value', code)}")

    def log_message(self, format, *args) -> None:  # errors only; requests are logged above
        print(f"upstream: {format % args}", file=sys.stderr, flush=True)


class Server(ThreadingHTTPServer):
    # The default listen backlog (5) overflows under the rig's 50-request bursts.
    request_queue_size = 128
    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = Server(("127.0.0.1", args.port), Echo)
    print(f"upstream listening on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
