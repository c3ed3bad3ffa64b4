//! Host calls with their failures handled: each returns a plain value or `None`/`false`, so
//! callers never unwrap. (The SDK's `Context` trait methods unwrap internally; they are not
//! used on the request path.)

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{Bytes, LogLevel, MapType};

/// The host clock in ms since the epoch (0 if the host cannot tell, which makes every token
/// look not-yet-valid rather than valid).
pub fn now_ms() -> u64 {
    since_epoch().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The host clock in µs since the epoch (0 if the host cannot tell); for measuring durations.
pub fn now_us() -> u64 {
    since_epoch().map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn since_epoch() -> Option<Duration> {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
}

pub fn log_critical(message: &str) {
    let _ = hostcalls::log(LogLevel::Critical, message);
}

/// All request headers, values as bytes (values need not be UTF-8).
pub fn request_headers() -> Vec<(String, Bytes)> {
    hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
}

pub fn remove_request_header(name: &str) {
    let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
}

pub fn remove_response_header(name: &str) {
    let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, name);
}

pub fn set_request_header(name: &str, value: &str) {
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
}

/// A string property such as `xds.route_name`.
pub fn property(path: &[&str]) -> Option<String> {
    let bytes = hostcalls::get_property(path.to_vec()).ok()??;
    String::from_utf8(bytes).ok()
}

pub fn send_response(status: u32, headers: &[(String, String)], body: &str) -> bool {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    hostcalls::send_http_response(status, headers, Some(body.as_bytes())).is_ok()
}

pub fn resume_request() -> bool {
    hostcalls::resume_http_request().is_ok()
}

pub fn set_effective_context(context_id: u32) -> bool {
    hostcalls::set_effective_context(context_id).is_ok()
}

pub fn set_tick_period(period: Duration) {
    let _ = hostcalls::set_tick_period(period);
}

pub fn shared_get(key: &str) -> (Option<Bytes>, Option<u32>) {
    hostcalls::get_shared_data(key).unwrap_or((None, None))
}

/// Writes shared data; with `cas`, only if nobody wrote since that read. `false` on mismatch.
/// Careful: the host skips the check for a key that does not exist (yet), so `None` from a
/// read makes this an unconditional write; [`shared_swap`] closes that hole.
pub fn shared_set(key: &str, value: &[u8], cas: Option<u32>) -> bool {
    hostcalls::set_shared_data(key, Some(value), cas).is_ok()
}

/// Compare-and-swap: writes `key` only if nobody wrote it since the read that returned
/// `read_cas`, including when that read found no key (`None`): then only if it still does not
/// exist, so two workers cannot both "create" it ([`crate::cache::swap_cas`]). `false` if
/// someone else wrote first.
pub fn shared_swap(key: &str, value: &[u8], read_cas: Option<u32>) -> bool {
    shared_set(key, value, Some(crate::cache::swap_cas(read_cas)))
}

/// Starts an outbound call; `None` when the host refuses (e.g. unknown upstream).
pub fn dispatch(request: &crate::http::HttpRequest) -> Option<u32> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", request.method),
        (":path", &request.path),
        (":authority", &request.authority),
    ];
    headers.extend(
        request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str())),
    );
    hostcalls::dispatch_http_call(
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
    let headers: Vec<(String, String)> = hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let status = headers
        .iter()
        .find(|(n, _)| n == ":status")
        .and_then(|(_, v)| v.parse::<u16>().ok())?;
    let body = if body_size > 0 {
        hostcalls::get_buffer(
            proxy_wasm::types::BufferType::HttpCallResponseBody,
            0,
            body_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default()
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
    hostcalls::define_metric(proxy_wasm::types::MetricType::Counter, name).ok()
}

pub fn define_histogram(name: &str) -> Option<u32> {
    hostcalls::define_metric(proxy_wasm::types::MetricType::Histogram, name).ok()
}

pub fn record(metric: Option<u32>, value: u64) {
    if let Some(id) = metric {
        let _ = hostcalls::record_metric(id, value);
    }
}

pub fn increment(metric: Option<u32>) {
    if let Some(id) = metric {
        let _ = hostcalls::increment_metric(id, 1);
    }
}

pub fn plugin_configuration() -> Option<Bytes> {
    hostcalls::get_buffer(
        proxy_wasm::types::BufferType::PluginConfiguration,
        0,
        usize::MAX,
    )
    .ok()
    .flatten()
}
