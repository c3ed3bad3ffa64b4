//! Host calls with their failures handled: each returns a plain value, `None` or `false`, so
//! callers never unwrap, whatever the host answers (see [`super::abi`]).
//!
//! Hosts differ (docs/host-notes.md, "Other hosts"). [`detect`] runs once per VM, before the
//! configuration is read, and finds out what this one offers:
//! - **clock**: the host's, or WASI's `clock_time_get` where the host answers UNIMPLEMENTED
//!   (APISIX) or OK without a time (older APISIX);
//! - **shared data**: the host's (one copy per process, shared by all workers), or a store
//!   inside this VM ([`crate::flow::LocalStore`]) where the host has none or keeps nothing;
//! - **tick**: whether `set_tick_period` is accepted; without it the flow makes its callouts
//!   per request (see [`crate::flow::CalloutMode`]).
//!
//! [`super::flow_host::ProxyHost`] is the flow's [`crate::flow::Host`] over these calls.
//!
//! Envoy-only calls (`clear_route_cache`) are made once and skipped from then on if absent.

use std::cell::{Cell, RefCell};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::abi::{self, Status};
use crate::flow::LocalStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    Host,
    Wasi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shared {
    Host,
    /// Kept in this VM: the host has no shared data (or keeps nothing).
    PerVm,
}

thread_local! {
    static CLOCK: Cell<Clock> = const { Cell::new(Clock::Host) };
    static SHARED: Cell<Shared> = const { Cell::new(Shared::Host) };
    static TICK: Cell<bool> = const { Cell::new(true) };
    static LOCAL: RefCell<LocalStore> = RefCell::new(LocalStore::default());
    /// `Some(false)` once the host said it has no `clear_route_cache`.
    static ROUTE_CACHE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// What [`detect`] found, for the start-up log line and the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub host_clock: bool,
    pub shared_data: bool,
    pub tick: bool,
}

impl Capabilities {
    /// Without a tick, or without shared data (an nginx-style host that runs callouts inside
    /// the request that made them), nothing may wait for another request's callout: the flow
    /// makes callouts per request ([`crate::flow::CalloutMode::PerRequest`]).
    pub fn request_driven(&self) -> bool {
        !self.tick || !self.shared_data
    }
}

impl std::fmt::Display for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "clock {}, shared data {}, tick {}",
            if self.host_clock {
                "host"
            } else {
                "WASI (host has none)"
            },
            if self.shared_data {
                "host"
            } else {
                "per VM (host has none)"
            },
            if self.tick {
                "yes"
            } else {
                "no (request-driven)"
            },
        )
    }
}

const PROBE_KEY: &str = "tollgate.probe";
const PROBE_VALUE: &[u8] = b"tollgate-probe";

/// Finds out what the host offers (see the module docs). Idempotent; cheap (four host calls).
pub fn detect() -> Capabilities {
    let (status, ns) = abi::current_time_ns();
    let host_clock = status.ok() && ns > 0;
    CLOCK.set(if host_clock { Clock::Host } else { Clock::Wasi });

    // Every worker writes the same value, so a concurrent probe cannot confuse another; a
    // host that answers OK but keeps nothing reads back no value.
    let written = abi::set_shared_data(PROBE_KEY, PROBE_VALUE, 0).ok();
    let (status, value, _) = abi::get_shared_data(PROBE_KEY);
    let shared_data = written && status.ok() && value.as_deref() == Some(PROBE_VALUE);
    SHARED.set(if shared_data {
        Shared::Host
    } else {
        Shared::PerVm
    });

    let tick = abi::set_tick_period_ms(0).ok();
    TICK.set(tick);
    Capabilities {
        host_clock,
        shared_data,
        tick,
    }
}

/// The clock in ms since the epoch; 0 ([`crate::authn::NO_CLOCK`]) if neither the host nor
/// WASI can tell, and then every request that needs a token is refused (503).
pub fn now_ms() -> u64 {
    since_epoch().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The clock in µs since the epoch (0 if unknown); for measuring durations.
pub fn now_us() -> u64 {
    since_epoch().map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn since_epoch() -> Option<Duration> {
    if CLOCK.get() == Clock::Host {
        let (status, ns) = abi::current_time_ns();
        if status.ok() && ns > 0 {
            return Some(Duration::from_nanos(ns));
        }
    }
    SystemTime::now().duration_since(UNIX_EPOCH).ok()
}

/// Routes the `log` crate to the host's log, ignoring a host that refuses a line.
struct HostLog;

impl log::Log for HostLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                log::Level::Trace => 0,
                log::Level::Debug => 1,
                log::Level::Info => 2,
                log::Level::Warn => 3,
                log::Level::Error => 4,
            };
            let _ = abi::log(level, &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static HOST_LOG: HostLog = HostLog;

/// Installs the host log for the `log` crate (every level; the host filters).
pub fn init_log() {
    if log::set_logger(&HOST_LOG).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

pub fn log_critical(message: &str) {
    let _ = abi::log(5, message);
}

/// All request headers as the host encodes them: read them with [`request_header_pairs`],
/// values as bytes (values need not be UTF-8).
pub fn request_headers() -> Vec<u8> {
    abi::get_map_bytes(abi::MAP_REQUEST_HEADERS).unwrap_or_default()
}

/// The (name, value) pairs of [`request_headers`], borrowed from it.
pub fn request_header_pairs(encoded: &[u8]) -> impl Iterator<Item = (&str, &[u8])> {
    abi::wire::pairs(encoded)
}

pub fn remove_request_header(name: &str) {
    let _ = abi::remove_map_value(abi::MAP_REQUEST_HEADERS, name);
}

pub fn remove_response_header(name: &str) {
    let _ = abi::remove_map_value(abi::MAP_RESPONSE_HEADERS, name);
}

pub fn set_request_header(name: &str, value: &str) {
    let _ = abi::set_map_value(abi::MAP_REQUEST_HEADERS, name, value);
}

pub fn response_header(name: &str) -> Option<String> {
    String::from_utf8(abi::get_map_value(abi::MAP_RESPONSE_HEADERS, name)?).ok()
}

pub fn request_body(size: usize) -> Vec<u8> {
    abi::get_buffer(abi::BUFFER_REQUEST_BODY, 0, size).unwrap_or_default()
}

pub fn replace_request_body(old_size: usize, body: &[u8]) {
    let _ = abi::set_buffer(abi::BUFFER_REQUEST_BODY, 0, old_size, body);
}

pub fn response_body(size: usize) -> Vec<u8> {
    abi::get_buffer(abi::BUFFER_RESPONSE_BODY, 0, size).unwrap_or_default()
}

pub fn replace_response_body(old_size: usize, body: &[u8]) {
    let _ = abi::set_buffer(abi::BUFFER_RESPONSE_BODY, 0, old_size, body);
}

/// A string property such as `xds.route_name`.
pub fn property(path: &[&str]) -> Option<String> {
    String::from_utf8(abi::get_property(path)?).ok()
}

/// The name of the route the host picked for the request (Envoy's `xds.route_name`).
pub fn route_name() -> Option<String> {
    property(&["xds", "route_name"])
}

pub fn send_response(status: u32, headers: &[(String, String)], body: &str) -> bool {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    abi::send_local_response(status, &headers, body.as_bytes()).ok()
}

pub fn resume_request() -> bool {
    abi::resume_request().ok()
}

pub fn set_effective_context(context_id: u32) -> bool {
    abi::set_effective_context(context_id).ok()
}

/// Sets the tick period; `false` if the host has no tick (then nothing is asked again).
pub fn set_tick_period(period: Duration) -> bool {
    if !TICK.get() {
        return false;
    }
    let ms = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    abi::set_tick_period_ms(ms).ok()
}

/// Asks Envoy (>= 1.33) to pick the route again after a header change. Skipped from the first
/// time the host says it has no such function.
pub fn clear_route_cache() {
    if ROUTE_CACHE.get() == Some(false) {
        return;
    }
    let status = abi::call_foreign_function("clear_route_cache", &[]);
    if ROUTE_CACHE.get().is_none() {
        if !status.ok() {
            log::info!(
                "tollgate: the host has no clear_route_cache (status {}); routes are not re-picked after the gateway rewrites a call",
                status.0
            );
        }
        ROUTE_CACHE.set(Some(status.ok()));
    }
}

pub fn shared_get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    match SHARED.get() {
        Shared::Host => match abi::get_shared_data(key) {
            (Status::OK, value, cas) => (value, Some(cas)),
            _ => (None, None),
        },
        Shared::PerVm => LOCAL
            .with_borrow(|s| s.get(key))
            .map_or((None, None), |(v, cas)| (Some(v), Some(cas))),
    }
}

/// Writes shared data; with `cas`, only if nobody wrote since that read. `false` on mismatch.
/// Careful: the host skips the check for a key that does not exist (yet), so `None` from a
/// read makes this an unconditional write; [`crate::flow::Host::shared_swap`] closes that hole.
pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    let cas = cas.unwrap_or(0);
    match SHARED.get() {
        Shared::Host => abi::set_shared_data(key, value, cas).ok(),
        Shared::PerVm => LOCAL.with_borrow_mut(|s| s.set(key, value, cas).is_ok()),
    }
}

/// Starts an outbound call; `None` when the host refuses (e.g. unknown upstream). Goes through
/// the SDK, which must register the call to route its answer back to this context.
pub fn dispatch(request: &crate::http::HttpRequest) -> Option<u32> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", request.method),
        (":scheme", request.scheme),
        (":path", &request.path),
        (":authority", &request.authority),
    ];
    headers.extend(
        request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    proxy_wasm::hostcalls::dispatch_http_call(
        &request.upstream,
        headers,
        request.body.as_deref(),
        vec![],
        Duration::from_millis(request.timeout_ms),
    )
    .ok()
}

/// The answer to an outbound call, or `None` when there was no HTTP answer (the host reports
/// resets, timeouts and connection failures with zero headers).
pub fn call_response(num_headers: usize, body_size: usize) -> Option<crate::http::HttpResponse> {
    if num_headers == 0 {
        return None;
    }
    let headers: Vec<(String, String)> = abi::get_map(abi::MAP_CALL_RESPONSE_HEADERS)
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let status = headers
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.parse::<u16>().ok())?;
    let body = if body_size > crate::http::MAX_RESPONSE_BYTES {
        log::warn!(
            "tollgate: a callout answered {body_size} bytes, over the {} byte limit: not read",
            crate::http::MAX_RESPONSE_BYTES
        );
        Vec::new()
    } else if body_size > 0 {
        abi::get_buffer(abi::BUFFER_CALL_RESPONSE_BODY, 0, body_size).unwrap_or_default()
    } else {
        Vec::new()
    };
    Some(crate::http::HttpResponse {
        status,
        headers,
        body,
    })
}

pub fn define_counter(name: &str) -> Option<u32> {
    abi::define_metric(abi::METRIC_COUNTER, name)
}

pub fn define_histogram(name: &str) -> Option<u32> {
    abi::define_metric(abi::METRIC_HISTOGRAM, name)
}

pub fn record(metric: Option<u32>, value: u64) {
    if let Some(id) = metric {
        let _ = abi::record_metric(id, value);
    }
}

pub fn increment(metric: Option<u32>) {
    if let Some(id) = metric {
        let _ = abi::increment_metric(id, 1);
    }
}

pub fn plugin_configuration() -> Option<Vec<u8>> {
    abi::get_buffer(abi::BUFFER_PLUGIN_CONFIGURATION, 0, usize::MAX)
}
