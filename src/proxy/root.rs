//! The root context: one per worker VM. Parses the configuration (`on_configure`), drives key
//! refresh on the tick, receives key-fetch callouts, and creates HTTP contexts.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::filter::Filter;
use super::flow_host::ProxyHost;
use super::host;
use super::metrics::Metrics;
use super::Worker;
use crate::config::FilterConfig;
use crate::flow::CalloutMode;

pub struct Root {
    context_id: u32,
    worker: Option<Rc<RefCell<Worker>>>,
}

impl Root {
    pub fn new(context_id: u32) -> Root {
        Root {
            context_id,
            worker: None,
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        super::callout_answered(
            self.worker.as_ref(),
            self.context_id,
            token_id,
            num_headers,
            body_size,
        );
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        #[cfg(feature = "bench-skip-replay-store")]
        log::error!("tollgate: this is bench/run's measurement build: DPoP replays are NOT refused; never deploy it");
        let caps = host::detect();
        let started_us = host::now_us();
        let text = host::plugin_configuration().unwrap_or_default();
        match FilterConfig::parse(&text) {
            Ok(cfg) => {
                let (issuers, routes) = (cfg.issuers.len(), cfg.routes.len());
                if caps.request_driven() || !caps.host_clock {
                    log::info!("tollgate: host: {caps}");
                    if cfg.gateway.is_some() && caps.request_driven() {
                        log::warn!("tollgate: the gateway needs a host with a tick and shared data; its metadata documents are only refreshed by API calls here");
                    }
                }
                let mode = if caps.request_driven() || cfg.per_request_callouts {
                    CalloutMode::PerRequest
                } else {
                    CalloutMode::Background
                };
                if cfg.per_request_callouts && !caps.request_driven() {
                    log::info!("tollgate: callouts per request (configured)");
                }
                let host = ProxyHost::new(Metrics::define(&cfg));
                let worker = Worker::new(cfg, self.context_id, mode, host);
                self.worker = Some(Rc::new(RefCell::new(worker)));
                let took_us = host::now_us().saturating_sub(started_us);
                log::info!(
                    "tollgate: configured {issuers} issuer(s), {routes} route(s) in {}.{:03} ms",
                    took_us / 1000,
                    took_us % 1000
                );
                true
            }
            Err(e) => {
                log::error!("tollgate: {e}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let Some(worker) = &self.worker else {
            return;
        };
        let now = host::now_ms();
        if let Ok(mut w) = worker.try_borrow_mut() {
            w.on_tick(now);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Filter::new(context_id, self.worker.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
