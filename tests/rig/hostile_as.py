"""A scriptable, hostile "authorization server" for negative end-to-end tests.

    .venv/bin/python tests/rig/hostile_as.py --port P

It answers every path with what the test told it to (JWKS, discovery, introspection, anything),
so a test can make an authorization server return oversized or deeply nested JSON, weak keys,
wrong content, errors or nothing useful, and can check which paths were (never) fetched.

Control (test use only; not counted):
  POST /__rig/set     JSON {path: answer, ...}; answer = {"status": 200, "body": str,
                      "content_type": "application/json", "headers": {...}} (body may instead be
                      "json": any JSON value; "delay_ms": hold the answer that long, for a
                      slow server). Replaces the answers for those paths (exact path,
                      query ignored); other paths keep theirs. Unknown paths answer 404.
  GET  /__rig/stats   {"requests": {path: count}} since start or the last reset
  POST /__rig/reset-stats

Prints one line per request (method, path without query, status); never bodies, so tokens sent
for introspection are not logged.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

try:
    from .procs import VENV_PY, Proc
except ImportError:  # tests/rig on sys.path, or run as a script
    try:
        from procs import VENV_PY, Proc
    except ImportError:  # pragma: no cover
        VENV_PY = Proc = None  # type: ignore[assignment]

HERE = Path(__file__).resolve()

_lock = threading.Lock()
_answers: dict[str, dict] = {}
_counts: dict[str, int] = {}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hostile-as"

    def log_message(self, format, *args):  # noqa: A002 - our own one-line log instead
        pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str = "application/json",
              headers: dict | None = None) -> None:
        path = self.path.split("?", 1)[0]
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. a delayed answer)
            print(f"{self.command} {path} {status} (client gone)", flush=True)
            self.close_connection = True
            return
        print(f"{self.command} {path} {status}", flush=True)

    def _control(self, path: str) -> None:
        body = self._read_body()
        if path == "/__rig/set" and self.command == "POST":
            answers = json.loads(body)
            with _lock:
                _answers.update(answers)
            self._send(200, json.dumps({"paths": sorted(_answers)}).encode())
        elif path == "/__rig/stats" and self.command == "GET":
            with _lock:
                out = json.dumps({"requests": dict(_counts)}).encode()
            self._send(200, out)
        elif path == "/__rig/reset-stats" and self.command == "POST":
            with _lock:
                _counts.clear()
            self._send(200, b"{}")
        else:
            self._send(404, b'{"error":"unknown rig call"}')

    def _serve(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/__rig/"):
            return self._control(path)
        self._read_body()  # never logged
        with _lock:
            _counts[path] = _counts.get(path, 0) + 1
            answer = _answers.get(path)
        if answer is None:
            return self._send(404, b'{"error":"not_found"}')
        if answer.get("delay_ms"):
            time.sleep(float(answer["delay_ms"]) / 1000)
        if "json" in answer:
            body = json.dumps(answer["json"]).encode()
        else:
            body = answer.get("body", "").encode("utf-8", "surrogateescape")
        self._send(int(answer.get("status", 200)), body,
                   answer.get("content_type", "application/json"), answer.get("headers"))

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve


def start(port: int, log_dir: Path) -> "Proc":
    """Start the server as a procs.Proc on 127.0.0.1:port (stop it with proc.stop())."""
    argv = [str(VENV_PY), str(HERE), "--port", str(port)]
    return Proc("hostile-as", argv, port, Path(log_dir) / "hostile-as.log",
                env={"PYTHONUNBUFFERED": "1"}).start()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"hostile-as listening on 127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
