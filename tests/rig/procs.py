"""Start and stop the rig's real processes (Envoy, authorization servers, upstream).

Every process listens on 127.0.0.1, is started by the test or demo that needs it, and is
stopped by that same code by PID (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_PY = ROOT / ".venv" / "bin" / "python"


_handed_out: set[int] = set()


class StartTimeout(RuntimeError):
    """A process did not listen on its port in time (it was stopped)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process has not
    handed out before: a stack takes its ports together and starts its servers one by one, and
    the kernel may offer a just-closed port again, so two servers of one stack could otherwise
    be given the same port (the second then finds it "already in use")."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self, timeout: float = 30.0) -> "Proc":
        if port_open(self.port):
            raise RuntimeError(f"{self.name}: port {self.port} is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(self.cwd) if self.cwd else None,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.popen.returncode} before listening; "
                    f"log tail:\n{self.log_tail()}"
                )
            if port_open(self.port):
                return self
            time.sleep(0.05)
        snapshot = self.snapshot()
        self.stop()
        raise StartTimeout(
            f"{self.name} did not listen on {self.port} within {timeout}s; "
            f"process at the timeout:\n{snapshot}\nlog tail:\n{self.log_tail()}"
        )

    def snapshot(self) -> str:
        """What the process was doing: its CPU time (spinning or blocked?) and each thread's
        state and kernel wait channel; for Node, the JavaScript and native stacks of a
        diagnostic report (written on SIGUSR2 when started with --report-on-signal)."""
        if not self.popen or self.popen.poll() is not None:
            return "(not running)"
        pid = self.popen.pid
        lines = []
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks = os.sysconf("SC_CLK_TCK")
            lines.append(f"state {fields[0]}, cpu {(int(fields[11]) + int(fields[12])) / ticks:.2f}s")
            for task in sorted(Path(f"/proc/{pid}/task").iterdir()):
                comm = (task / "comm").read_text().strip()
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                wchan = (task / "wchan").read_text().strip() or "-"
                lines.append(f"  thread {task.name} {comm}: {state} wchan={wchan}")
        except (OSError, IndexError, ValueError) as exc:
            lines.append(f"(/proc unreadable: {exc})")
        report_dir = self.log_path.parent
        if "--report-on-signal" in self.argv:
            before = set(report_dir.glob("report.*.json"))
            try:
                os.kill(pid, signal.SIGUSR2)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and not (set(report_dir.glob("report.*.json")) - before):
                time.sleep(0.1)
            new = sorted(set(report_dir.glob("report.*.json")) - before)
            if not new:
                lines.append("no Node report within 3 s: its event loop is blocked (busy or stuck in a synchronous call)")
            for report in new:
                try:
                    data = json.loads(report.read_text())
                    js = data.get("javascriptStack", {}).get("stack", [])
                    native = [f.get("symbol", "?") for f in data.get("nativeStack", [])]
                    lines.append("javascript stack:\n    " + "\n    ".join(js[:15]))
                    lines.append("native stack:\n    " + "\n    ".join(native[:25]))
                except (OSError, ValueError) as exc:
                    lines.append(f"report {report} unreadable: {exc}")
        return "\n".join(lines)

    def stop(self, grace: float = 5.0) -> None:
        if not self.popen or self.popen.poll() is not None:
            return
        try:
            os.kill(self.popen.pid, signal.SIGTERM)
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=grace)
        except ProcessLookupError:
            pass
        # wait until the port is free again so a restart on the same port works
        deadline = time.monotonic() + grace
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "Proc":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
