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
from pathlib import Path

try:  # imported as part of a package (tests.rig) or with tests/rig on sys.path
    from .procs import VENV_PY, Proc
except ImportError:
    from procs import VENV_PY, Proc

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
    argv = [node_binary(), str(OIDC_DIR / "server.mjs"), "--port", str(port), "--state-dir", str(state_dir)]
    return Proc("as-oidc", argv, port, Path(log_dir) / "as-oidc.log", cwd=OIDC_DIR).start()


def start_dot(port: int, state_dir: Path, log_dir: Path, impersonate_issuer: str | None = None) -> Proc:
    argv = [str(VENV_PY), str(RIG / "as_dot" / "server.py"), "--port", str(port), "--state-dir", str(state_dir)]
    if impersonate_issuer:
        argv += ["--impersonate-issuer", impersonate_issuer]
    return Proc("as-dot", argv, port, Path(log_dir) / "as-dot.log", env={"PYTHONUNBUFFERED": "1"}).start()


def start_upstream(port: int, log_dir: Path) -> Proc:
    argv = [str(VENV_PY), str(RIG / "upstream.py"), "--port", str(port)]
    return Proc("upstream", argv, port, Path(log_dir) / "upstream.log", env={"PYTHONUNBUFFERED": "1"}).start()
