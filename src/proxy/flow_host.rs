//! [`ProxyHost`]: the flow's [`Host`] over the proxy-wasm calls of [`super::host`], with the
//! VM's metrics sink ([`super::metrics`]). Apart from `host` so that `metrics`, which defines
//! its counters through `host`, and this sink, which records through `metrics`, form no cycle.

use std::rc::Rc;
use std::time::Duration;

use super::host::{
    dispatch, remove_request_header, resume_request, send_response, set_effective_context,
    set_request_header, set_tick_period, shared_get, shared_set,
};
use super::metrics::Metrics;
use crate::flow::{Host, Metric};

/// The flow's [`Host`] over this module's calls, with the VM's metrics sink.
#[derive(Clone)]
pub struct ProxyHost {
    metrics: Rc<Metrics>,
}

impl ProxyHost {
    pub fn new(metrics: Metrics) -> ProxyHost {
        ProxyHost {
            metrics: Rc::new(metrics),
        }
    }
}

impl Host for ProxyHost {
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        shared_get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        shared_set(key, value, cas)
    }

    fn dispatch(&self, request: &crate::http::HttpRequest) -> Option<u32> {
        dispatch(request)
    }

    fn set_effective_context(&self, context_id: u32) -> bool {
        set_effective_context(context_id)
    }

    fn resume_request(&self) -> bool {
        resume_request()
    }

    fn send_response(&self, status: u32, headers: &[(String, String)], body: &str) -> bool {
        send_response(status, headers, body)
    }

    fn set_request_header(&self, name: &str, value: &str) {
        set_request_header(name, value);
    }

    fn remove_request_header(&self, name: &str) {
        remove_request_header(name);
    }

    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    fn random(&self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }

    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    fn random(&self, _buf: &mut [u8]) -> bool {
        false
    }

    fn set_tick_period(&self, period: Duration) -> bool {
        set_tick_period(period)
    }

    fn record(&self, metric: Metric) {
        self.metrics.record(metric);
    }
}
