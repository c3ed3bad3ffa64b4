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


# --- Cerbos, the AuthZEN policy decision point (issue 16); tests/rig/README.md "Cerbos" ---
#     pdp = start_cerbos(port, policy_dir, log_dir)     # AuthZEN at pdp.evaluation_url
#     slow = start_pdp_delay(port, pdp.port, log_dir)   # delaying/counting forwarder to it

import base64  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402

try:
    from .procs import free_port  # noqa: E402
except ImportError:
    from procs import free_port  # noqa: E402

PDP_DIR = RIG / "pdp"
PDP_POLICIES = PDP_DIR / "policies"
CERBOS_BIN = PDP_DIR / "node_modules" / "@cerbos" / "cerbos-linux-x64" / "cerbos-linux-x64"
CERBOS_ADMIN = ("cerbos", "cerbosAdmin")  # Cerbos' default admin credentials (loopback only)


def cerbos_binary() -> Path:
    if not CERBOS_BIN.is_file():
        raise RuntimeError(f"{CERBOS_BIN} is missing: run scripts/setup")
    return CERBOS_BIN


def copy_policies(dest: Path, source: Path = PDP_POLICIES) -> Path:
    """Copy the rig's policy files into dest (made if missing), for a test to edit freely."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(source).glob("*.yaml")):
        shutil.copyfile(f, dest / f.name)
    return dest


def cerbos_config(http_port: int, grpc_port: int, policy_dir: Path, audit_path: Path) -> str:
    """Cerbos' configuration: disk store watched for changes, HTTP and gRPC on loopback only
    (the HTTP API is a grpc-gateway in front of the gRPC server, which cannot be turned off),
    the admin API on (for an immediate store reload, `set_policy(..., reload=True)`; Cerbos'
    built-in credentials CERBOS_ADMIN, it warns "[INSECURE CONFIG]" once at start), audit log
    (one "access" line per API call, one "decision" line per evaluation, with the caller's
    X-Request-ID) to a file, no telemetry."""
    return json.dumps({  # JSON is YAML
        "server": {
            "httpListenAddr": f"127.0.0.1:{http_port}",
            "grpcListenAddr": f"127.0.0.1:{grpc_port}",
            "adminAPI": {"enabled": True},
        },
        "storage": {
            "driver": "disk",
            "disk": {"directory": str(policy_dir), "watchForChanges": True},
        },
        "audit": {
            "enabled": True,
            "accessLogsEnabled": True,
            "decisionLogsEnabled": True,
            "includeMetadataKeys": ["x-request-id"],
            "backend": "file",
            "file": {"path": str(audit_path)},
        },
        "telemetry": {"disabled": True},
    }, indent=2) + "\n"


class CerbosProc(Proc):
    """A Cerbos server; `stop()` then `start()` brings it back on the same ports, with the
    policies as they are in policy_dir then."""

    policy_dir: Path
    audit_path: Path
    grpc_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def evaluation_url(self) -> str:
        return f"{self.url}/access/v1/evaluation"

    def decisions(self) -> list[dict]:
        """The audit log's decision entries so far (one per evaluated subject/resource/action
        request), oldest first."""
        entries = []
        try:
            text = self.audit_path.read_text()
        except OSError:
            return entries
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            if entry.get("log.kind") == "decision":
                entries.append(entry)
        return entries


def start_cerbos(port: int, policy_dir: Path, log_dir: Path, grpc_port: int | None = None,
                 source: Path = PDP_POLICIES, timeout: float = 30.0) -> CerbosProc:
    """Start Cerbos with its AuthZEN API on http://127.0.0.1:port (about 0.2 s).

    policy_dir is the directory Cerbos serves and watches: when it is missing or holds no
    policy, the rig's policies (source, tests/rig/pdp/policies) are copied into it first, so a
    test edits its own copy (`set_policy`); a policy_dir reused across starts keeps its edits.
    Writes log_dir/cerbos-P.yaml (the configuration), cerbos-P.log and cerbos-P-audit.log."""
    policy_dir, log_dir = Path(policy_dir), Path(log_dir)
    if not policy_dir.is_dir() or not any(policy_dir.glob("*.yaml")):
        copy_policies(policy_dir, source)
    log_dir.mkdir(parents=True, exist_ok=True)
    if grpc_port is None:
        grpc_port = free_port()
    audit_path = log_dir / f"cerbos-{port}-audit.log"
    config = log_dir / f"cerbos-{port}.yaml"
    config.write_text(cerbos_config(port, grpc_port, policy_dir, audit_path))
    argv = [str(cerbos_binary()), "server", f"--config={config}", "--log-level=info"]
    proc = CerbosProc("cerbos", argv, port, log_dir / f"cerbos-{port}.log",
                      env={"CERBOS_NO_TELEMETRY": "1"}, cwd=log_dir)
    proc.policy_dir, proc.audit_path, proc.grpc_port = policy_dir, audit_path, grpc_port
    return proc.start(timeout=timeout)


def authzen_request(subject_id: str, resource_id: str, action: str, *, subject_type: str = "user",
                    subject_properties: dict | None = None, resource_type: str = "document",
                    resource_properties: dict | None = None, context: dict | None = None) -> dict:
    """An AuthZEN 1.0 access evaluation request body."""
    subject: dict = {"type": subject_type, "id": subject_id}
    if subject_properties is not None:
        subject["properties"] = subject_properties
    resource: dict = {"type": resource_type, "id": resource_id}
    if resource_properties is not None:
        resource["properties"] = resource_properties
    body = {"subject": subject, "resource": resource, "action": {"name": action}}
    if context is not None:
        body["context"] = context
    return body


def evaluate(url: str, request: dict, timeout: float = 5.0,
             headers: dict | None = None) -> tuple[int, dict]:
    """POST an AuthZEN evaluation request to url (a PDP's /access/v1/evaluation); returns the
    HTTP status and the JSON answer."""
    req = urllib.request.Request(url, data=json.dumps(request).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def reload_policies(cerbos: CerbosProc, timeout: float = 10.0) -> None:
    """Make Cerbos re-read its policy directory now (admin API `/admin/store/reload?wait=true`,
    about 0.1 s) instead of waiting for its directory watch."""
    auth = base64.b64encode(":".join(CERBOS_ADMIN).encode()).decode()
    req = urllib.request.Request(f"{cerbos.url}/admin/store/reload?wait=true",
                                 headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        resp.read()


def set_policy(cerbos: CerbosProc, filename: str, text: str, probe: dict, expect: bool,
               timeout: float = 15.0, reload: bool = False) -> float:
    """Write policy_dir/filename (a new or changed policy; atomically, by rename) and wait until
    Cerbos' answer to the evaluation request `probe` is `decision: expect`, which shows it
    reloaded. Returns the seconds that took. Cerbos' directory watch batches changes and acts
    once nothing changed for 2 s, checked every 2 s: 2 to 4 s (measured 2.0-4.0 s; 4.0 s when
    the write follows a reload closely). reload=True asks for the reload at once through the
    admin API (about 0.1-0.2 s)."""
    path = cerbos.policy_dir / filename
    tmp = cerbos.policy_dir / f".{filename}.tmp"  # not a .yaml file: not a policy to Cerbos
    tmp.write_text(text)
    start = time.monotonic()
    tmp.replace(path)
    if reload:
        reload_policies(cerbos)
    deadline = start + timeout
    last = None
    while time.monotonic() < deadline:
        status, answer = evaluate(cerbos.evaluation_url, probe)
        last = (status, answer)
        if status == 200 and answer.get("decision") is expect:
            return time.monotonic() - start
        time.sleep(0.1)
    raise TimeoutError(f"cerbos did not answer decision={expect} within {timeout}s of the "
                       f"change to {filename}; last answer {last}; log tail:\n{cerbos.log_tail()}")


def start_pdp_delay(port: int, target_port: int, log_dir: Path) -> Proc:
    """The delay/counting forwarder (pdp_delay.py) on 127.0.0.1:port in front of
    127.0.0.1:target_port (about 0.1 s). Control it with pdp_control()."""
    argv = [str(VENV_PY), str(RIG / "pdp_delay.py"), "--port", str(port), "--target-port", str(target_port)]
    return Proc("pdp-delay", argv, port, Path(log_dir) / f"pdp-delay-{port}.log",
                env={"PYTHONUNBUFFERED": "1"}).start()


def pdp_control(port: int, method: str, path: str, body: bytes = b"", timeout: float = 5.0):
    """Call the forwarder's /__rig/ control API, e.g. pdp_control(p, "POST", "/__rig/delay?ms=500"),
    pdp_control(p, "GET", "/__rig/stats")["evaluations"]; returns the JSON answer."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body if method == "POST" else None,
                                 method=method)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())
