//! The proxy-wasm host ABI (0.2.1), called directly: every call returns the host's status as
//! a number, so an answer the SDK does not expect cannot take the VM down.
//!
//! Why not the SDK's `hostcalls`: each wrapper panics on any status outside the few it expects,
//! and the SDK's `Status` enum has no UNIMPLEMENTED (12), which APISIX answers for time, tick
//! and shared data — with `panic = "abort"` that kills the VM for every request. Only
//! `dispatch_http_call` still goes through the SDK: the SDK must register the callout to route
//! its answer back to us.
//!
//! Memory the host hands back was allocated by the host through our `proxy_on_memory_allocate`
//! (the SDK's allocator: a `Vec<u8>` of exactly that capacity, forgotten), so it is taken back
//! with `Vec::from_raw_parts(ptr, len, len)`, as the SDK does.

use std::ptr::{null, null_mut};

/// The host's answer to a call. Callers only tell `OK` from the rest: any other status (not
/// found, CAS mismatch, unimplemented, ...) means the call did not do what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

impl Status {
    pub const OK: Status = Status(0);

    pub fn ok(self) -> bool {
        self == Status::OK
    }
}

// Numbers from the ABI (the SDK's `MapType`, `BufferType`, `MetricType`, `StreamType`).
pub const MAP_REQUEST_HEADERS: u32 = 0;
pub const MAP_RESPONSE_HEADERS: u32 = 2;
pub const MAP_CALL_RESPONSE_HEADERS: u32 = 6;
pub const BUFFER_REQUEST_BODY: u32 = 0;
pub const BUFFER_RESPONSE_BODY: u32 = 1;
pub const BUFFER_CALL_RESPONSE_BODY: u32 = 4;
pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
pub const METRIC_COUNTER: u32 = 0;
pub const METRIC_HISTOGRAM: u32 = 2;
const STREAM_REQUEST: u32 = 0;

#[cfg(target_arch = "wasm32")]
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map_type: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        value: *mut *mut u8,
        value_size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        args: *const u8,
        args_size: usize,
        results: *mut *mut u8,
        results_size: *mut usize,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name: *const u8,
        name_size: usize,
        id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

/// Host builds (unit tests, clippy) link no host: every call answers UNIMPLEMENTED.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments)]
mod no_host {
    macro_rules! unimplemented_calls {
        ($($name:ident($($arg:ty),*);)*) => {$(
            pub unsafe fn $name($(_: $arg),*) -> u32 { 12 }
        )*};
    }
    unimplemented_calls! {
        proxy_log(u32, *const u8, usize);
        proxy_get_current_time_nanoseconds(*mut u64);
        proxy_set_tick_period_milliseconds(u32);
        proxy_get_buffer_bytes(u32, usize, usize, *mut *mut u8, *mut usize);
        proxy_set_buffer_bytes(u32, usize, usize, *const u8, usize);
        proxy_get_header_map_pairs(u32, *mut *mut u8, *mut usize);
        proxy_get_header_map_value(u32, *const u8, usize, *mut *mut u8, *mut usize);
        proxy_replace_header_map_value(u32, *const u8, usize, *const u8, usize);
        proxy_remove_header_map_value(u32, *const u8, usize);
        proxy_get_property(*const u8, usize, *mut *mut u8, *mut usize);
        proxy_get_shared_data(*const u8, usize, *mut *mut u8, *mut usize, *mut u32);
        proxy_set_shared_data(*const u8, usize, *const u8, usize, u32);
        proxy_continue_stream(u32);
        proxy_send_local_response(u32, *const u8, usize, *const u8, usize, *const u8, usize, i32);
        proxy_set_effective_context(u32);
        proxy_call_foreign_function(*const u8, usize, *const u8, usize, *mut *mut u8, *mut usize);
        proxy_define_metric(u32, *const u8, usize, *mut u32);
        proxy_increment_metric(u32, i64);
        proxy_record_metric(u32, u64);
    }
}
#[cfg(not(target_arch = "wasm32"))]
use no_host::*;

/// Takes ownership of bytes the host allocated in our memory (`None` for a null pointer).
///
/// # Safety
/// `ptr`/`len` must come from the host's answer to a call that returned OK.
unsafe fn take(ptr: *mut u8, len: usize) -> Option<Vec<u8>> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: the host allocated `len` bytes at `ptr` through `proxy_on_memory_allocate`,
        // which hands out a forgotten `Vec<u8>` with capacity `len`.
        Some(unsafe { Vec::from_raw_parts(ptr, len, len) })
    }
}

/// Runs a call that answers with a byte string; the bytes only when it returned OK.
fn bytes_out(call: impl FnOnce(*mut *mut u8, *mut usize) -> u32) -> (Status, Option<Vec<u8>>) {
    let mut ptr: *mut u8 = null_mut();
    let mut len: usize = 0;
    let status = Status(call(&mut ptr, &mut len));
    if !status.ok() {
        return (status, None);
    }
    // SAFETY: OK answer; the host set (ptr, len) or left ptr null.
    (status, unsafe { take(ptr, len) })
}

pub fn log(level: u32, message: &str) -> Status {
    // SAFETY: the pointer and length describe a live string.
    Status(unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

/// The host clock in ns since the epoch.
pub fn current_time_ns() -> (Status, u64) {
    let mut t: u64 = 0;
    // SAFETY: `t` outlives the call.
    let status = Status(unsafe { proxy_get_current_time_nanoseconds(&mut t) });
    (status, t)
}

pub fn set_tick_period_ms(period: u32) -> Status {
    // SAFETY: no pointers.
    Status(unsafe { proxy_set_tick_period_milliseconds(period) })
}

pub fn get_buffer(buffer_type: u32, start: usize, max_size: usize) -> Option<Vec<u8>> {
    // SAFETY: out-params live across the call.
    bytes_out(|p, l| unsafe { proxy_get_buffer_bytes(buffer_type, start, max_size, p, l) }).1
}

pub fn set_buffer(buffer_type: u32, start: usize, size: usize, value: &[u8]) -> Status {
    // SAFETY: the slice is live during the call.
    Status(unsafe { proxy_set_buffer_bytes(buffer_type, start, size, value.as_ptr(), value.len()) })
}

/// A header map, values as bytes (need not be UTF-8); empty if the host cannot tell.
pub fn get_map(map_type: u32) -> Vec<(String, Vec<u8>)> {
    get_map_bytes(map_type)
        .map(|b| wire::decode_map(&b))
        .unwrap_or_default()
}

/// The map as the host encodes it (read it with [`wire::pairs`]).
pub fn get_map_bytes(map_type: u32) -> Option<Vec<u8>> {
    // SAFETY: out-params live across the call.
    bytes_out(|p, l| unsafe { proxy_get_header_map_pairs(map_type, p, l) }).1
}

pub fn get_map_value(map_type: u32, key: &str) -> Option<Vec<u8>> {
    // SAFETY: key and out-params live across the call.
    bytes_out(|p, l| unsafe { proxy_get_header_map_value(map_type, key.as_ptr(), key.len(), p, l) })
        .1
}

pub fn set_map_value(map_type: u32, key: &str, value: &str) -> Status {
    // SAFETY: both strings are live during the call.
    Status(unsafe {
        proxy_replace_header_map_value(
            map_type,
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

pub fn remove_map_value(map_type: u32, key: &str) -> Status {
    // SAFETY: the key is live during the call.
    Status(unsafe { proxy_remove_header_map_value(map_type, key.as_ptr(), key.len()) })
}

/// A property such as `xds.route_name` (path parts joined by NUL, as the ABI wants).
pub fn get_property(path: &[&str]) -> Option<Vec<u8>> {
    let joined = path.join("\0");
    // SAFETY: the path and out-params live across the call.
    bytes_out(|p, l| unsafe { proxy_get_property(joined.as_ptr(), joined.len(), p, l) }).1
}

/// (status, value, cas). A missing key is NOT_FOUND.
pub fn get_shared_data(key: &str) -> (Status, Option<Vec<u8>>, u32) {
    let mut cas: u32 = 0;
    // SAFETY: key, out-params and `cas` live across the call.
    let (status, value) =
        bytes_out(|p, l| unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), p, l, &mut cas) });
    (status, value, cas)
}

pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Status {
    // SAFETY: key and value are live during the call.
    Status(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

pub fn resume_request() -> Status {
    // SAFETY: no pointers.
    Status(unsafe { proxy_continue_stream(STREAM_REQUEST) })
}

pub fn send_local_response(status: u32, headers: &[(&str, &str)], body: &[u8]) -> Status {
    let map = wire::encode_map(headers);
    // SAFETY: body and map are live during the call; no details string.
    Status(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            map.as_ptr(),
            map.len(),
            -1,
        )
    })
}

pub fn set_effective_context(context_id: u32) -> Status {
    // SAFETY: no pointers.
    Status(unsafe { proxy_set_effective_context(context_id) })
}

/// Calls a host extension by name (NOT_FOUND or UNIMPLEMENTED where the host lacks it).
pub fn call_foreign_function(name: &str, args: &[u8]) -> Status {
    // SAFETY: name, args and out-params live across the call.
    bytes_out(|p, l| unsafe {
        proxy_call_foreign_function(name.as_ptr(), name.len(), args.as_ptr(), args.len(), p, l)
    })
    .0
}

pub fn define_metric(metric_type: u32, name: &str) -> Option<u32> {
    let mut id: u32 = 0;
    // SAFETY: name and `id` live across the call.
    let status =
        Status(unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) });
    status.ok().then_some(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Status {
    // SAFETY: no pointers.
    Status(unsafe { proxy_increment_metric(id, offset) })
}

pub fn record_metric(id: u32, value: u64) -> Status {
    // SAFETY: no pointers.
    Status(unsafe { proxy_record_metric(id, value) })
}

/// The ABI's map encoding: u32 count, then count × (u32 key length, u32 value length), then
/// every key and value followed by a NUL; little-endian. Host-free, so unit-tested.
pub mod wire {
    pub fn encode_map(map: &[(&str, &str)]) -> Vec<u8> {
        let size = 4 + map
            .iter()
            .map(|(k, v)| 10 + k.len() + v.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(&len32(map.len()).to_le_bytes());
        for (k, v) in map {
            out.extend_from_slice(&len32(k.len()).to_le_bytes());
            out.extend_from_slice(&len32(v.len()).to_le_bytes());
        }
        for (k, v) in map {
            out.extend_from_slice(k.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    fn len32(n: usize) -> u32 {
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Decodes a map; a malformed encoding yields the pairs before the fault (never panics).
    /// Keys that are not UTF-8 are skipped (header names are ASCII).
    pub fn decode_map(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        pairs(bytes)
            .map(|(key, value)| (key.to_owned(), value.to_vec()))
            .collect()
    }

    /// The pairs of an encoded map, borrowed from it (no copy): what [`decode_map`] returns,
    /// for a caller that needs only some of them.
    pub fn pairs(bytes: &[u8]) -> impl Iterator<Item = (&str, &[u8])> {
        let read_u32 = move |at: usize| -> Option<usize> {
            let b = bytes.get(at..at.checked_add(4)?)?;
            usize::try_from(u32::from_le_bytes(b.try_into().ok()?)).ok()
        };
        let count = read_u32(0).unwrap_or(0);
        let mut at = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(4))
            .unwrap_or(usize::MAX);
        (0..count)
            .map_while(move |n| {
                let (klen, vlen) = (read_u32(4 + n * 8)?, read_u32(8 + n * 8)?);
                let key = bytes.get(at..at.checked_add(klen)?)?;
                at = at.checked_add(klen + 1)?;
                let value = bytes.get(at..at.checked_add(vlen)?)?;
                at = at.checked_add(vlen + 1)?;
                Some((key, value))
            })
            .filter_map(|(key, value)| Some((std::str::from_utf8(key).ok()?, value)))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
        #[cfg(target_arch = "wasm32")]
        use wasm_bindgen_test::wasm_bindgen_test as test;

        #[test]
        fn round_trip() {
            let pairs = [
                (":path", "/a?b"),
                ("x-empty", ""),
                ("authorization", "Bearer t"),
            ];
            let decoded = decode_map(&encode_map(&pairs));
            let want: Vec<(String, Vec<u8>)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect();
            assert_eq!(decoded, want);
            assert!(decode_map(&encode_map(&[])).is_empty());
            assert!(decode_map(&[]).is_empty());
        }

        /// Counts and lengths near `u32::MAX`. In the plugin (wasm32) `usize` is 32 bits, so
        /// `count * 8 + 4` and `at + len` are where an unchecked sum would wrap; scripts/test-wasm
        /// runs this as wasm32. Nothing may panic, wrap or over-allocate.
        #[test]
        fn counts_and_lengths_near_u32_max() {
            #[cfg(target_arch = "wasm32")]
            assert_eq!(usize::BITS, 32);
            let pair = |count: u32, klen: u32, vlen: u32| {
                let mut bytes = count.to_le_bytes().to_vec();
                bytes.extend_from_slice(&klen.to_le_bytes());
                bytes.extend_from_slice(&vlen.to_le_bytes());
                bytes.extend_from_slice(b"k\0v\0");
                bytes
            };
            // 0x1fff_ffff * 8 + 4 is 0xffff_fffc, the last count whose header size fits in 32 bits.
            for count in [
                0x1fff_ffff,
                0x2000_0000,
                0x2000_0001,
                u32::MAX - 1,
                u32::MAX,
            ] {
                assert!(
                    decode_map(&pair(count, 1, 1)).is_empty(),
                    "count {count:#x}"
                );
            }
            for (klen, vlen) in [
                (u32::MAX, 0),
                (0, u32::MAX),
                (u32::MAX - 1, 1),
                (1, u32::MAX - 1),
                (u32::MAX, u32::MAX),
                (0x8000_0000, 0x8000_0000),
            ] {
                assert!(
                    decode_map(&pair(1, klen, vlen)).is_empty(),
                    "{klen:#x} {vlen:#x}"
                );
            }
            assert_eq!(
                decode_map(&pair(1, 1, 1)),
                vec![("k".to_owned(), b"v".to_vec())]
            );
            // A good first pair survives a second whose lengths would wrap a 32-bit sum.
            let mut two = 2u32.to_le_bytes().to_vec();
            for len in [1, 1, 1, u32::MAX] {
                two.extend_from_slice(&len.to_le_bytes());
            }
            two.extend_from_slice(b"k\0v\0k\0");
            assert_eq!(decode_map(&two), vec![("k".to_owned(), b"v".to_vec())]);
        }

        #[test]
        fn malformed_maps_never_panic() {
            let good = encode_map(&[("a", "1"), ("bb", "22")]);
            for cut in 0..good.len() {
                let got = decode_map(&good[..cut]);
                assert!(got.len() <= 2);
            }
            // A count far larger than the data, and lengths that overflow.
            let mut huge = u32::MAX.to_le_bytes().to_vec();
            huge.extend_from_slice(&[0xff; 16]);
            assert!(decode_map(&huge).is_empty());
            // Non-UTF-8 values are kept, non-UTF-8 keys skipped.
            let mut bin = 2u32.to_le_bytes().to_vec();
            for len in [1u32, 1, 1, 1] {
                bin.extend_from_slice(&len.to_le_bytes());
            }
            bin.extend_from_slice(&[0xff, 0, b'v', 0, b'k', 0, 0xfe, 0]);
            assert_eq!(decode_map(&bin), vec![("k".to_owned(), vec![0xfe])]);
        }
    }
}
