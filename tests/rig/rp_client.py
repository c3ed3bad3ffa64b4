"""Run the relying party (rp/rp.mjs: npm openid-client, and oauth4webapi for RFC 9728 resource
discovery, from rp/package-lock.json).

    run(op, **args) -> the JSON it printed (an {"error": {...}} dict when the library failed)
    start(op, **args) -> Started: .first() reads the first JSON line (device / ciba start
                         responses), .finish() the last one; .stop() ends the process by PID

Nothing is logged: the driver's output is read here only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

try:
    from .servers import node_binary
except ImportError:
    from servers import node_binary

RP_DIR = Path(__file__).resolve().parent / "rp"
TIMEOUT = 60


def _argv(op: str, args: dict) -> list[str]:
    if not (RP_DIR / "node_modules" / "openid-client").is_dir():
        raise RuntimeError(f"{RP_DIR}/node_modules is missing: run scripts/setup")
    return [node_binary(), str(RP_DIR / "rp.mjs"), op, json.dumps(args)]


def run(op: str, **args) -> dict:
    p = subprocess.run(_argv(op, args), cwd=RP_DIR, capture_output=True, text=True, timeout=TIMEOUT)
    lines = [line for line in p.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"rp.mjs {op} printed nothing (exit {p.returncode}): {p.stderr[-500:]}")
    return json.loads(lines[-1])


class Started:
    def __init__(self, op: str, args: dict):
        self.popen = subprocess.Popen(_argv(op, args), cwd=RP_DIR, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, start_new_session=True)

    def first(self) -> dict:
        line = self.popen.stdout.readline()
        if not line:
            self.popen.wait(timeout=TIMEOUT)
            raise RuntimeError(f"rp.mjs ended: {self.popen.stderr.read()[-500:]}")
        return json.loads(line)

    def finish(self, timeout: float = TIMEOUT) -> dict:
        out, err = self.popen.communicate(timeout=timeout)
        lines = [line for line in out.splitlines() if line.strip()]
        if not lines:
            raise RuntimeError(f"rp.mjs printed nothing more (exit {self.popen.returncode}): {err[-500:]}")
        return json.loads(lines[-1])

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=5)


def start(op: str, **args) -> Started:
    return Started(op, args)
