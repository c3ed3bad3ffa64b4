"""Start the rig's real authorization servers and upstream as procs.Proc (all on 127.0.0.1).

    oidc = start_oidc(port, state_dir, log_dir)        # oidc-provider, issuer http://127.0.0.1:P
    dot = start_dot(port, state_dir, log_dir)          # django-oauth-toolkit, issuer .../o
    up = start_upstream(port, log_dir)                 # JSON echo server
    ...
    oidc.stop()

Each returns a started Proc (listening already); the caller stops it. A state_dir reused across
starts keeps the server's signing keys (and DOT's database).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

try:  # imported as part of a package (tests.rig) or with tests/rig on sys.path
    from .procs import VENV_PY, Proc, StartTimeout
except ImportError:
    from procs import VENV_PY, Proc, StartTimeout

RIG = Path(__file__).resolve().parent
OIDC_DIR = RIG / "as_oidc"


def node_binary() -> str:
    node = shutil.which("node")
    if not node:
        raise RuntimeError("node is not on PATH (the oidc-provider authorization server needs it)")
    return node


def start_oidc(port: int, state_dir: Path, log_dir: Path) -> Proc:
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError(f"{OIDC_DIR}/node_modules is missing: run scripts/setup")
    # On a start timeout the rig asks Node for a diagnostic report (SIGUSR2) and puts its
    # stacks into the error: under CI load a start has hung before the state dir was made.
    node_flags = ["--report-on-signal", "--report-signal=SIGUSR2", f"--report-directory={log_dir}"]
    argv = [node_binary(), *node_flags, str(OIDC_DIR / "server.mjs"), "--port", str(port), "--state-dir", str(state_dir)]
    proc = Proc("as-oidc", argv, port, Path(log_dir) / "as-oidc.log", cwd=OIDC_DIR)
    try:
        return proc.start()
    except StartTimeout as first:
        # One more start, said out loud: the hang is in the test AS's start, not in Tollgate,
        # and the first attempt's stacks stay in the warning for whoever chases it.
        warnings.warn(f"as-oidc start retried after: {first}", stacklevel=2)
        return proc.start()


def start_dot(port: int, state_dir: Path, log_dir: Path, impersonate_issuer: str | None = None) -> Proc:
    argv = [str(VENV_PY), str(RIG / "as_dot" / "server.py"), "--port", str(port), "--state-dir", str(state_dir)]
    if impersonate_issuer:
        argv += ["--impersonate-issuer", impersonate_issuer]
    return Proc("as-dot", argv, port, Path(log_dir) / "as-dot.log", env={"PYTHONUNBUFFERED": "1"}).start()


def start_upstream(port: int, log_dir: Path) -> Proc:
    argv = [str(VENV_PY), str(RIG / "upstream.py"), "--port", str(port)]
    return Proc("upstream", argv, port, Path(log_dir) / "upstream.log", env={"PYTHONUNBUFFERED": "1"}).start()
