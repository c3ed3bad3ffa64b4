"""A minimal proxy-wasm host that runs a module the way APISIX's wasm-nginx-module does.

Not a gateway: no listener and no upstream. `MiniHost(wasm, config).request(headers)` runs one
request through the plugin exactly as APISIX would drive it, makes the plugin's HTTP callouts
for real (http.client, loopback only), and reports what came out: the plugin's local reply, or
the request headers APISIX would forward upstream, plus what happened on the way.

What this host does, and why (api7/wasm-nginx-module: src/http/ngx_http_wasm_api.c,
src/http/ngx_http_wasm_module.c, src/http/ngx_http_wasm_call.c, lib/resty/proxy-wasm.lua;
apache/apisix apisix/wasm.lua):

- Load: WASI (clock, random, env, stdout/stderr), then `_initialize`. Configure: one plugin
  (root) context, id 1: `proxy_on_context_create(1, 0)`, `proxy_on_configure(1, size)`.
  APISIX never calls `proxy_on_vm_start` and never calls `proxy_on_tick`; neither does this.
- Host calls APISIX answers UNIMPLEMENTED (12) are answered 12 here: current time, tick
  period, shared data and queues, metrics, foreign functions, gRPC, ... Every import this
  host does not implement is defined generically from `module.imports` and answers 12, so
  instantiation never fails; each such answer is counted by name.
  `shared_data="dummy"` models older APISIX instead: shared data, queues, time and tick
  answer OK without touching the out-params (get finds nothing, set stores nothing, the
  clock reads 0). `wasi_clock="zero"` also makes WASI's `clock_time_get` answer 0 (a host
  with no usable clock at all).
- A request: `proxy_on_context_create(ctx, 1)`, `proxy_on_request_headers(ctx, 0, 1)` (APISIX
  passes 0 headers). Request headers are the client's, lower-cased, followed by `:path`,
  `:method`, `:scheme` (there is no `:authority`; the client's `host` header is a header).
- Callouts: `proxy_http_call` only registers the call (one at a time; a second one while one
  is pending answers INTERNAL_FAILURE, outside a request BAD_ARGUMENT). After the callback
  returns, the Lua loop performs the pending call and calls
  `proxy_on_http_call_response(root_id, token, n_headers, body_size, 0)` (0 headers and no
  body when the call failed), again while calls are pending. Then: a local response if the
  plugin sent one, else the request **continues upstream whatever the plugin's action**.
  A request the plugin still holds paused at that point (it returned Pause with a call, and
  never resumed it after the answer) is recorded as `paused_without_call`: in APISIX it goes
  through unauthenticated.
- Pause with **no** call registered (rc 1 from a request callback, no callout, no local
  reply): the Lua loop (lib/resty/proxy-wasm.lua `on_http_request`) reads rc 1 as
  RC_NEED_HTTP_CALL and calls `send_http_call`, whose first C call
  (`ngx_http_wasm_call_max_headers_count`, src/http/ngx_http_wasm_call.c) dereferences
  `ctx->callout`, which is NULL: the nginx worker crashes (read from the source, not run).
  Recorded as `crashed` (and `paused_without_call`); the request is neither answered nor
  forwarded.
- The request body (apisix/wasm.lua `http_request_wrapper`): `proxy_on_request_body` is called
  only if the plugin set the property (nginx variable) `wasm_process_req_body` to a non-empty
  value during the headers callback or its call responses (APISIX predefines the variable
  empty in ngx_tpl.lua and resets it before the body call; other properties are nginx
  variables this host does not have: NOT_FOUND). It is called **once**, after the headers
  callback and every call it led to have finished, and never after a local reply (the Lua
  loop ends the request with `ngx.exit`): `proxy_on_request_body(ctx, size, 1)` with the
  **whole** body (`core.request.get_body()`, which reads all of it first; size 0 when there is
  none) and end_of_stream 1; `proxy_get_buffer_bytes(HttpRequestBody)` returns it (only in that
  callback here). Its result goes through the same loop as the headers callback's: a call it
  registers is made and answered, a local reply ends the request, Continue (or a Pause that
  a call answered) forwards it, a Pause with no call crashes the worker (above). The
  client's body is read by nginx before the callback, so the plugin never sees a partial
  body and the request cannot move on while the body arrives. Without the property (Tollgate
  never sets it) the plugin never sees the body, which nginx then forwards as is.
- Then `proxy_on_response_headers(ctx, 0, 1)` (APISIX's header_filter), `proxy_on_done`,
  `proxy_on_delete`; the context id is reused by the next request, as APISIX does.
- A trap (a Rust panic is `unreachable`) answers the request 503 as apisix/wasm.lua does,
  and is recorded; this host then treats the VM as dead: further requests raise `VmTrapped`.
"""

from __future__ import annotations

import http.client
import json
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

OK, NOT_FOUND, BAD_ARGUMENT, CAS_MISMATCH, INTERNAL_FAILURE, UNIMPLEMENTED = 0, 1, 2, 8, 10, 12
# proxy-wasm enums used here
MAP_REQUEST_HEADERS, MAP_RESPONSE_HEADERS, MAP_CALL_RESPONSE_HEADERS = 0, 2, 6
BUFFER_REQUEST_BODY, BUFFER_CALL_RESPONSE_BODY, BUFFER_PLUGIN_CONFIGURATION = 0, 4, 7
# nginx variables APISIX predefines (empty) for wasm plugins: the only properties it can set.
APISIX_VARIABLES = ("wasm_process_req_body", "wasm_process_resp_body")
ACTION_CONTINUE = 0
STREAM_REQUEST = 0
LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "critical"]
ROOT_ID = 1
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class VmTrapped(RuntimeError):
    """The plugin trapped earlier: its VM is dead."""


@dataclass
class Trap:
    during: str  # the exported function that trapped
    message: str  # wasmtime's trap message (first line)
    last_critical: str | None  # the plugin's last critical log line (its panic hook)

    def __str__(self) -> str:
        return f"trap in {self.during}: {self.message} (last critical log: {self.last_critical!r})"


@dataclass
class Call:
    """One callout as the host made it. Never holds header values or bodies (tokens)."""

    upstream: str
    method: str
    path: str  # without the query string
    authority: str | None
    status: int | None = None  # None: no HTTP answer
    error: str | None = None
    ms: float = 0.0


@dataclass
class LocalReply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)


@dataclass
class Result:
    local_reply: LocalReply | None = None  # the plugin answered (or 503 after a trap)
    forwarded: list[tuple[str, str]] | None = None  # request headers as sent upstream
    calls: list[Call] = field(default_factory=list)
    paused_without_call: bool = False
    unimplemented: Counter = field(default_factory=Counter)  # host call name -> times 12
    logs: list[tuple[str, str]] = field(default_factory=list)  # (level, message)
    events: list[str] = field(default_factory=list)  # other host-side observations
    trap: Trap | None = None
    local_reply_lost: bool = False  # the plugin answered, but also registered a call: APISIX
    # then drops the answer (ngx_http_wasm_handle_rc_before_proxy resets the code)
    crashed: bool = False  # a callback paused with no call registered: APISIX's worker dies
    body_delivered: bool = False  # proxy_on_request_body was called (the plugin asked for it)
    forwarded_body: bytes | None = None  # the body sent upstream with `forwarded`
    trace: list[str] = field(default_factory=list)  # callbacks and host calls, with statuses
    ms: float = 0.0

    @property
    def status(self) -> int:
        """The local reply's status, or 200 for "forwarded upstream" (nothing answers here)."""
        return self.local_reply.status if self.local_reply else 200

    def header(self, name: str) -> str | None:
        """A forwarded request header (first value), None if absent or not forwarded."""
        return next((v for n, v in self.forwarded or [] if n == name.lower()), None)

    def __repr__(self) -> str:  # keeps bearer tokens out of assertion messages
        fwd = None if self.forwarded is None else [
            (n, "<redacted>" if n == "authorization" else v) for n, v in self.forwarded]
        reply = self.local_reply and (self.local_reply.status, self.local_reply.headers,
                                      self.local_reply.body[:200])
        return (f"Result(local_reply={reply}, forwarded={fwd}, calls={self.calls}, "
                f"paused_without_call={self.paused_without_call}, crashed={self.crashed}, "
                f"body_delivered={self.body_delivered}, trap={self.trap}, "
                f"unimplemented={dict(self.unimplemented)}, events={self.events}, "
                f"logs={self.logs[-8:]})")


class _Request:
    """The request a host call is about (APISIX's `r`); None outside a request."""

    def __init__(self, headers, method, path, result, body=b""):
        self.headers = [(n.lower(), v) for n, v in headers]
        self.body = body
        self.in_body_callback = False
        self.variables = {name: "" for name in APISIX_VARIABLES}
        self.pseudo = {":path": path, ":method": method, ":scheme": "http"}
        self.result: Result = result
        self.pending: dict | None = None  # registered callout
        self.local: LocalReply | None = None
        self.resp_headers: list[tuple[str, str]] = []
        self.released = False  # Continue returned, resumed, or answered
        self.call_headers: list[tuple[str, str]] = []  # of the callout being answered
        self.call_body = b""


def encode_map(pairs: list[tuple[str, str]]) -> bytes:
    """proxy-wasm map: u32 count, count x (u32 key_len, u32 value_len), then each key and
    value NUL-terminated; little-endian."""
    enc = [(k.encode(), v.encode() if isinstance(v, str) else v) for k, v in pairs]
    out = bytearray(struct.pack("<I", len(enc)))
    for k, v in enc:
        out += struct.pack("<II", len(k), len(v))
    for k, v in enc:
        out += k + b"\0" + v + b"\0"
    return bytes(out)


def decode_map(data: bytes) -> list[tuple[str, str]]:
    if len(data) < 4:
        return []
    (count,) = struct.unpack_from("<I", data, 0)
    sizes = [struct.unpack_from("<II", data, 4 + 8 * i) for i in range(count)]
    pos, pairs = 4 + 8 * count, []
    for klen, vlen in sizes:
        key = data[pos:pos + klen].decode("utf-8", "replace")
        pos += klen + 1
        value = data[pos:pos + vlen].decode("utf-8", "replace")
        pos += vlen + 1
        pairs.append((key, value))
    return pairs


_ENGINE = wasmtime.Engine()


def _fuel_engine() -> wasmtime.Engine:
    """An engine whose stores count wasm instructions (wasmtime's fuel: about one unit per
    operator), for MiniHost(fuel=True)."""
    config = wasmtime.Config()
    config.consume_fuel = True
    return wasmtime.Engine(config)


_FUEL_ENGINE = _fuel_engine()
_FUEL = 1 << 62
_MODULES: dict = {}


def _compiled(wasm: str | Path | bytes, fuel: bool = False) -> tuple[wasmtime.Engine, wasmtime.Module]:
    """Compiling the plugin takes seconds: once per file version (or bytes) per engine per process."""
    engine = _FUEL_ENGINE if fuel else _ENGINE
    key = (fuel, bytes(wasm)) if isinstance(wasm, (bytes, bytearray)) else (
        fuel, str(wasm), Path(wasm).stat().st_mtime_ns, Path(wasm).stat().st_size)
    if key not in _MODULES:
        _MODULES[key] = (wasmtime.Module(engine, bytes(wasm)) if isinstance(wasm, (bytes, bytearray))
                         else wasmtime.Module.from_file(engine, str(wasm)))
    return engine, _MODULES[key]


class MiniHost:
    def __init__(self, wasm_path: str | Path | bytes, config_json: str | dict,
                 shared_data: str = "unimplemented", wasi_clock: str = "real", fuel: bool = False):
        if shared_data not in ("unimplemented", "dummy", "envoy"):
            raise ValueError("shared_data must be 'unimplemented', 'dummy' or 'envoy'")
        if wasi_clock not in ("real", "zero"):
            raise ValueError("wasi_clock must be 'real' or 'zero'")
        self.mode = shared_data
        self.config = (json.dumps(config_json) if isinstance(config_json, dict)
                       else config_json).encode()
        self.unimplemented: Counter = Counter()  # over the VM's life
        # "envoy": shared data with Envoy's compare-and-swap rules, a tick the plugin may set
        # (never delivered: this host runs requests only), the host clock and metrics, so a
        # request takes the path it takes in Envoy (bench/hostcalls.py counts its host calls)
        self.shared: dict[bytes, tuple[bytes, int]] = {}
        self.metrics: dict[int, tuple[str, int]] = {}
        self.logs: list[tuple[str, str]] = []
        self.traps: list[Trap] = []
        self.calls: list[Call] = []
        self.wasi_output: list[bytes] = []  # stdout and stderr of the module
        self._req: _Request | None = None
        self._free_ids: list[int] = []
        self._next_id = ROOT_ID + 1
        self._next_token = 0  # APISIX numbers callouts from 0

        engine, module = _compiled(wasm_path, fuel)
        self.store = wasmtime.Store(engine)
        # fuel: the store counts the wasm instructions the plugin runs (self.fuel_used()), for
        # bench/hostcalls.py; a count, not a time, so the same on any machine.
        self._fuel = fuel
        if fuel:
            self.store.set_fuel(_FUEL)
        wasi = wasmtime.WasiConfig()
        wasi.env = [("TOLLGATE_HOST", "minihost")]
        wasi.stdout_custom = self.wasi_output.append
        wasi.stderr_custom = self.wasi_output.append
        self.store.set_wasi(wasi)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        if wasi_clock == "zero":
            # clock_time_get(id, precision, *time) -> errno: success, time 0.
            linker.allow_shadowing = True
            i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()

            def clock_time_get(caller, _clock_id, _precision, ptr):
                caller["memory"].write(caller, struct.pack("<Q", 0), ptr)
                return 0

            linker.define_func("wasi_snapshot_preview1", "clock_time_get",
                               wasmtime.FuncType([i32, i64, i32], [i32]), clock_time_get,
                               access_caller=True)
        self.imported = []
        for imp in module.imports:
            if imp.module == "wasi_snapshot_preview1":
                continue
            if not isinstance(imp.type, wasmtime.FuncType):
                raise ValueError(f"the module imports a non-function {imp.module}.{imp.name}")
            self.imported.append(imp.name)
            linker.define_func(imp.module, imp.name, imp.type, self._host_func(imp.name, imp.type),
                               access_caller=True)
        self.instance = linker.instantiate(self.store, module)
        exports = self.instance.exports(self.store)
        self.exports = {name: exports[name] for name in exports}

        # Load and configure as ngx_http_wasm_load_plugin + ngx_http_wasm_on_configure do.
        self.configured = False
        try:
            if "_initialize" in self.exports:
                self._call("_initialize")
            self._call("proxy_on_context_create", ROOT_ID, 0)
            self.configured = self._call("proxy_on_configure", ROOT_ID, len(self.config)) > 0
        except VmTrapped:
            pass

    def fuel_used(self) -> int:
        """Wasm instructions run so far (MiniHost(fuel=True) only; 0 otherwise)."""
        return _FUEL - self.store.get_fuel() if self._fuel else 0

    # --- calling into the module --------------------------------------------------------------

    def _call(self, name: str, *args):
        if self.traps:
            raise VmTrapped(str(self.traps[0]))
        func = self.exports.get(name)
        if func is None:
            return 0  # ngx_wasm_vm.call: an export the module lacks is a no-op
        if self._req is not None:
            self._req.result.trace.append(f"> {name}{args}")
        try:
            ret = func(self.store, *args)
            if self._req is not None:
                self._req.result.trace.append(f"< {name} = {ret}")
            return ret
        except (wasmtime.Trap, wasmtime.WasmtimeError) as e:
            critical = [m for lvl, m in self.logs if lvl == "critical"]
            text = str(e)  # wasmtime: a backtrace, then "Caused by: wasm trap: ..."
            message = (text.rsplit("Caused by:", 1)[-1].strip() or text).splitlines()[0]
            self.traps.append(Trap(name, message, critical[-1] if critical else None))
            if self._req is not None:
                self._req.result.trap = self.traps[-1]
            raise VmTrapped(str(self.traps[-1])) from None

    def request(self, headers: list[tuple[str, str]], method: str = "GET",
                path: str = "/", body: bytes | None = None,
                variables: dict[str, str] | None = None) -> Result:
        """One request through the plugin, as APISIX's access phase runs it. `body`: the
        request body nginx has read (delivered to the plugin only if it asked for it).
        `variables`: other nginx variables this request has (e.g. `ssl_client_escaped_cert`,
        the URL-encoded PEM of a TLS client certificate), readable as properties."""
        if self.traps:
            raise VmTrapped(str(self.traps[0]))
        if not self.configured:
            raise RuntimeError("proxy_on_configure failed: APISIX answers every request 503")
        started = time.monotonic()
        result = Result()
        req = self._req = _Request(headers, method, path, result, body or b"")
        req.variables.update(variables or {})
        ctx = self._free_ids.pop() if self._free_ids else self._take_id()
        try:
            self._call("proxy_on_context_create", ctx, ROOT_ID)
            action = self._call("proxy_on_request_headers", ctx, 0, 1)
            self._after_callback(req, result, action, "proxy_on_request_headers")
            # apisix/wasm.lua: the body, once, if the plugin asked for it and did not answer
            if not result.crashed and not req.local and req.variables["wasm_process_req_body"]:
                req.variables["wasm_process_req_body"] = ""
                result.body_delivered = True
                req.in_body_callback = True
                action = self._call("proxy_on_request_body", ctx, len(req.body), 1)
                req.in_body_callback = False
                self._after_callback(req, result, action, "proxy_on_request_body")
            if result.crashed:
                pass  # the worker is gone: no answer, nothing forwarded
            elif req.local:
                result.local_reply = req.local
                req.resp_headers = req.local.headers + [(":status", str(req.local.status))]
            else:
                if not req.released:
                    result.paused_without_call = True
                result.forwarded = list(req.headers)
                result.forwarded_body = req.body
                req.resp_headers = [(":status", "200")]
            if result.crashed:
                self._req = None
                return result
            self._call("proxy_on_response_headers", ctx, 0, 1)
            self._req = None  # ngx_http_wasm_cleanup runs without a request state
            self._call("proxy_on_done", ctx)
            self._call("proxy_on_delete", ctx)
            self._free_ids.append(ctx)
        except VmTrapped:
            result.local_reply = LocalReply(503, [], b"")  # apisix/wasm.lua: failed to run
        finally:
            self._req = None
        result.ms = (time.monotonic() - started) * 1000
        return result

    def _after_callback(self, req: _Request, result: Result, action: int, name: str) -> None:
        """resty/proxy-wasm.lua on_http_request after a request callback: a pending call comes
        first (made, then answered), then a local reply; rc 1 with neither crashes the worker."""
        req.released = req.released or action == ACTION_CONTINUE
        if action != ACTION_CONTINUE and not req.pending and not req.local:
            result.paused_without_call = True
            result.crashed = True
            result.events.append(f"Pause from {name} with no call registered: APISIX reads rc 1 "
                                 "as a pending call and dereferences a NULL callout (worker crash)")
            return
        while req.pending:
            call, req.pending = req.pending, None
            if req.local:  # ngx_http_wasm_handle_rc_before_proxy: the call wins, code reset
                result.local_reply_lost = True
                result.events.append(f"local reply {req.local.status} dropped: a call was "
                                     "registered in the same callback")
            req.local = None
            status, resp_headers, body = self._perform(call, result)
            req.call_headers = resp_headers + ([(":status", str(status))] if status else [])
            req.call_body = body
            self._call("proxy_on_http_call_response", ROOT_ID, call["token"],
                       len(req.call_headers), len(body), 0)
            req.call_headers, req.call_body = [], b""

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    # --- the callout, made the way resty.http request_uri would -------------------------------

    def _perform(self, call: dict, result: Result) -> tuple[int | None, list, bytes]:
        headers = decode_map(call["headers"])
        pseudo = {k: v for k, v in headers if k in (":method", ":path", ":scheme")}
        sent = [("host" if k == ":authority" else k, v) for k, v in headers if k not in pseudo]
        path = pseudo.get(":path", "/")
        record = Call(call["upstream"], pseudo.get(":method", "GET"), path.split("?")[0],
                      next((v for k, v in sent if k == "host"), None))
        result.calls.append(record)
        self.calls.append(record)
        host, _, port = call["upstream"].rpartition(":")
        started = time.monotonic()
        try:
            if pseudo.get(":scheme", "http") != "http":
                raise OSError("only http callouts are supported here")
            if host not in LOOPBACK or not port.isdigit():
                raise OSError(f"not a loopback host:port ({call['upstream']!r}); not contacted")
            conn = http.client.HTTPConnection(host.strip("[]"), int(port),
                                              timeout=max(call["timeout_ms"], 1) / 1000)
            try:
                conn.putrequest(record.method, path, skip_host=True, skip_accept_encoding=True)
                if not any(k == "host" for k, _ in sent):
                    conn.putheader("host", call["upstream"])
                for k, v in sent:
                    conn.putheader(k, v)
                if call["body"] and not any(k == "content-length" for k, _ in sent):
                    conn.putheader("content-length", str(len(call["body"])))
                conn.endheaders(call["body"] or None)
                resp = conn.getresponse()
                body = resp.read()
                record.status = resp.status
                return resp.status, [(k.lower(), v) for k, v in resp.getheaders()], body
            finally:
                conn.close()
        except (OSError, http.client.HTTPException, ValueError) as e:
            record.error = f"{type(e).__name__}: {e}"
            return None, [], b""
        finally:
            record.ms = (time.monotonic() - started) * 1000

    # --- host functions ------------------------------------------------------------------------

    def _host_func(self, name: str, ty: wasmtime.FuncType):
        impl = getattr(self, "_h_" + name, None)
        if name in ("proxy_get_shared_data", "proxy_set_shared_data", "proxy_register_shared_queue",
                    "proxy_resolve_shared_queue", "proxy_enqueue_shared_queue",
                    "proxy_dequeue_shared_queue", "proxy_get_current_time_nanoseconds",
                    "proxy_set_tick_period_milliseconds"):
            if self.mode == "envoy":
                pass  # the _h_ implementations below
            else:
                impl = None if self.mode == "unimplemented" else (lambda caller, *args: OK)
        if name == "proxy_send_http_response":
            impl = self._h_proxy_send_local_response
        returns = [str(r) for r in ty.results]

        def host_function(caller, *args):
            status = impl(caller, *args) if impl else UNIMPLEMENTED
            if self._req is not None:
                self._req.result.trace.append(f"  {name} -> {status}")
            if status == UNIMPLEMENTED:
                self.unimplemented[name] += 1
                if self._req is not None:
                    self._req.result.unimplemented[name] += 1
            if not returns:
                return None
            return status if returns == ["i32"] else 0
        return host_function

    # memory: what the host hands the module is allocated by the module (ngx_http_wasm_copy_to_wasm)
    def _read(self, caller, ptr: int, size: int) -> bytes:
        return bytes(caller["memory"].read(caller, ptr, ptr + size))

    def _put_u32(self, caller, ptr: int, value: int) -> None:
        caller["memory"].write(caller, struct.pack("<I", value), ptr)

    def _give(self, caller, data: bytes, ptr_out: int, size_out: int) -> int:
        self._put_u32(caller, size_out, len(data))
        if data:
            addr = caller["proxy_on_memory_allocate"](caller, len(data))
            if not addr:
                return INTERNAL_FAILURE
            caller["memory"].write(caller, data, addr)
            self._put_u32(caller, ptr_out, addr)
        return OK

    def _log(self, level: str, message: str) -> None:
        self.logs.append((level, message))
        if self._req is not None:
            self._req.result.logs.append((level, message))

    # --- "envoy" mode only (see __init__) -------------------------------------------------------

    def _h_proxy_get_shared_data(self, caller, key_ptr, key_size, ptr_out, size_out, cas_out):
        entry = self.shared.get(self._read(caller, key_ptr, key_size))
        if entry is None:
            return NOT_FOUND
        self._put_u32(caller, cas_out, entry[1])
        return self._give(caller, entry[0], ptr_out, size_out)

    def _h_proxy_set_shared_data(self, caller, key_ptr, key_size, ptr, size, cas):
        # Envoy: a CAS other than 0 must match the key's current one; a key that does not
        # exist is written whatever the CAS.
        key = self._read(caller, key_ptr, key_size)
        current = self.shared.get(key)
        if cas and current is not None and current[1] != cas:
            return CAS_MISMATCH
        self.shared[key] = (self._read(caller, ptr, size), (current[1] if current else 0) + 1)
        return OK

    def _h_proxy_set_tick_period_milliseconds(self, caller, period):
        return OK

    def _h_proxy_get_current_time_nanoseconds(self, caller, ptr):
        caller["memory"].write(caller, struct.pack("<Q", time.time_ns()), ptr)
        return OK

    def _h_proxy_define_metric(self, caller, kind, name_ptr, name_size, id_out):
        if self.mode != "envoy":
            return UNIMPLEMENTED
        metric_id = len(self.metrics) + 1
        self.metrics[metric_id] = (self._read(caller, name_ptr, name_size).decode(), 0)
        self._put_u32(caller, id_out, metric_id)
        return OK

    def _h_proxy_increment_metric(self, caller, metric_id, offset):
        if self.mode != "envoy":
            return UNIMPLEMENTED
        if metric_id not in self.metrics:
            return NOT_FOUND
        name, value = self.metrics[metric_id]
        self.metrics[metric_id] = (name, value + offset)
        return OK

    def _h_proxy_record_metric(self, caller, metric_id, value):
        if self.mode != "envoy":
            return UNIMPLEMENTED
        if metric_id not in self.metrics:
            return NOT_FOUND
        self.metrics[metric_id] = (self.metrics[metric_id][0], value)
        return OK

    def _h_proxy_log(self, caller, level, ptr, size):
        name = LOG_LEVELS[level] if 0 <= level < len(LOG_LEVELS) else str(level)
        self._log(name, self._read(caller, ptr, size).decode("utf-8", "replace"))
        return OK

    def _h_proxy_set_effective_context(self, caller, context_id):
        return OK  # "dummy function to make plugin load"

    def _h_proxy_get_buffer_bytes(self, caller, kind, start, size, ptr_out, size_out):
        if kind == BUFFER_PLUGIN_CONFIGURATION:
            data = self.config  # fetched as a whole
        elif kind == BUFFER_CALL_RESPONSE_BODY:
            if self._req is None:
                return BAD_ARGUMENT
            data = self._req.call_body
            if data and (start < 0 or size <= 0 or start >= len(data)):
                return BAD_ARGUMENT
            data = data[start:start + size]
        elif kind == BUFFER_REQUEST_BODY:  # the whole body, in proxy_on_request_body only
            if self._req is None:
                return BAD_ARGUMENT
            data = self._req.body if self._req.in_body_callback else b""
            if data and (start < 0 or size <= 0 or start >= len(data)):
                return BAD_ARGUMENT
            data = data[start:start + size]
        elif kind == 1:  # response body: none here
            data = b""
        else:
            return UNIMPLEMENTED
        return self._give(caller, data, ptr_out, size_out) if data else NOT_FOUND

    def _h_proxy_get_configuration(self, caller, ptr_out, size_out):
        return self._give(caller, self.config, ptr_out, size_out)

    def _map(self, kind: int) -> list[tuple[str, str]] | None:
        req = self._req
        if kind == MAP_REQUEST_HEADERS:
            return req.headers + list(req.pseudo.items())
        if kind == MAP_RESPONSE_HEADERS:
            return req.resp_headers
        if kind == MAP_CALL_RESPONSE_HEADERS:
            return req.call_headers
        return None

    def _h_proxy_get_header_map_pairs(self, caller, kind, ptr_out, size_out):
        if self._req is None:
            return BAD_ARGUMENT
        pairs = self._map(kind)
        if pairs is None:
            return BAD_ARGUMENT
        if kind == MAP_CALL_RESPONSE_HEADERS and not pairs:
            return NOT_FOUND
        return self._give(caller, encode_map(pairs), ptr_out, size_out)

    def _h_proxy_get_header_map_value(self, caller, kind, key_ptr, key_size, ptr_out, size_out):
        if self._req is None:
            return BAD_ARGUMENT
        pairs = self._map(kind)
        if pairs is None:
            return UNIMPLEMENTED
        key = self._read(caller, key_ptr, key_size).decode().lower()
        value = next((v for k, v in pairs if k.lower() == key), None)
        if value is None:
            return NOT_FOUND
        return self._give(caller, value.encode(), ptr_out, size_out)

    def _edit(self, caller, kind, key_ptr, key_size, value: str | None, replace: bool) -> int:
        """ngx.req.set_header / ngx.header semantics: replace or add a value, or remove all."""
        if self._req is None:
            return BAD_ARGUMENT
        if kind not in (MAP_REQUEST_HEADERS, MAP_RESPONSE_HEADERS):
            return UNIMPLEMENTED
        key = self._read(caller, key_ptr, key_size).decode().lower()
        target = self._req.headers if kind == MAP_REQUEST_HEADERS else self._req.resp_headers
        if key.startswith(":"):
            self._req.result.events.append(f"pseudo-header {key} edited (nginx sees a header)")
        if replace or value is None:
            target[:] = [(k, v) for k, v in target if k != key]
        if value is not None:
            target.append((key, value))
        return OK

    def _h_proxy_replace_header_map_value(self, caller, kind, kp, ks, vp, vs):
        return self._edit(caller, kind, kp, ks, self._read(caller, vp, vs).decode(), True)

    def _h_proxy_add_header_map_value(self, caller, kind, kp, ks, vp, vs):
        return self._edit(caller, kind, kp, ks, self._read(caller, vp, vs).decode(), False)

    def _h_proxy_remove_header_map_value(self, caller, kind, kp, ks):
        return self._edit(caller, kind, kp, ks, None, True)

    def _h_proxy_get_property(self, caller, path_ptr, path_size, ptr_out, size_out):
        # APISIX looks the path up as an nginx variable; this host has only APISIX_VARIABLES.
        if self._req is None:
            return BAD_ARGUMENT
        value = self._req.variables.get(self._read(caller, path_ptr, path_size).decode("utf-8", "replace"))
        if not value:
            return NOT_FOUND
        return self._give(caller, value.encode(), ptr_out, size_out)

    def _h_proxy_set_property(self, caller, path_ptr, path_size, ptr, size):
        # set_variable (lua-resty-core): only variables nginx has; "not found for writing" else.
        if self._req is None:
            return BAD_ARGUMENT
        name = self._read(caller, path_ptr, path_size).decode("utf-8", "replace").lower()
        if name not in self._req.variables:
            return NOT_FOUND
        self._req.variables[name] = self._read(caller, ptr, size).decode("utf-8", "replace")
        return OK

    def _h_proxy_send_local_response(self, caller, status, dp, ds, body_ptr, body_size,
                                     headers_ptr, headers_size, grpc_status):
        if self._req is None:
            return BAD_ARGUMENT
        headers = decode_map(self._read(caller, headers_ptr, headers_size)) if headers_size else []
        self._req.local = LocalReply(status, headers, self._read(caller, body_ptr, body_size))
        self._req.released = True
        return OK

    def _h_proxy_continue_stream(self, caller, stream_type):
        if self._req is not None and stream_type == STREAM_REQUEST:
            self._req.released = True  # a no-op in APISIX: the request never waited
        return OK

    def _h_proxy_continue_request(self, caller):
        return self._h_proxy_continue_stream(caller, STREAM_REQUEST)

    def _h_proxy_close_stream(self, caller, stream_type):
        if self._req is not None:
            self._req.result.events.append(f"proxy_close_stream({stream_type}) (a no-op in APISIX)")
        return OK

    def _h_proxy_continue_response(self, caller):
        return OK

    def _h_proxy_http_call(self, caller, up_ptr, up_size, h_ptr, h_size, b_ptr, b_size,
                           t_ptr, t_size, timeout_ms, token_out):
        if self._req is None:
            return BAD_ARGUMENT  # "http call is only supported during processing HTTP request"
        upstream = self._read(caller, up_ptr, up_size).decode("utf-8", "replace")
        if not upstream:
            return BAD_ARGUMENT  # ngx_parse_url fails
        if self._req.pending is not None:
            self._req.result.events.append("second proxy_http_call refused: "
                                           "multiple calls are not supported")
            return INTERNAL_FAILURE
        if timeout_ms < 0:
            return INTERNAL_FAILURE
        token, self._next_token = self._next_token, self._next_token + 1
        self._req.pending = {
            "token": token, "upstream": upstream, "timeout_ms": timeout_ms,
            "headers": self._read(caller, h_ptr, h_size), "body": self._read(caller, b_ptr, b_size),
        }
        self._put_u32(caller, token_out, token)
        return OK
