//! The host adapter: the only module that talks to the proxy-wasm host (Envoy).
//!
//! Thin glue around the host-free core. It translates host callbacks into calls of the
//! core's request flow ([`crate::flow::Worker`], one per VM, shared by the root and HTTP
//! contexts), reading the host clock once per callback and passing `now` in, and carries the
//! flow's effects out through [`flow_host::ProxyHost`], its [`crate::flow::Host`]. Every host
//! call's failure is handled; nothing here may panic.
//!
//! - [`root`]: `on_configure` (parse, compile, swap), the tick, callout answers
//! - [`filter`]: the HTTP context: strip identity headers, gather the request facts, hand them
//!   to the flow or the gateway
//! - [`gateway`]: the OAuth endpoint gateway (forward, redirect, metadata, response tags)
//! - [`metrics`]: counters visible in Envoy's `/stats` (prefix `wasmcustom.tollgate.`)
//! - [`flow_host`]: the flow's [`crate::flow::Host`] over [`host`], with the metrics sink
//! - [`host`] over [`abi`]: every host call, with what this host lacks detected and worked
//!   around (shared data kept per VM in a [`crate::flow::LocalStore`])

pub mod abi;
pub mod filter;
pub mod flow_host;
pub mod gateway;
pub mod host;
pub mod metrics;
pub mod root;

pub use crate::flow::OwnedFacts;

/// The flow of this VM, over the proxy-wasm host.
pub type Worker = crate::flow::Worker<flow_host::ProxyHost>;

/// A callout's answer, delivered by the host to the context that made it (the root context, or
/// with per-request callouts the request's): read it and hand it to the worker.
fn callout_answered(
    worker: Option<&std::rc::Rc<std::cell::RefCell<Worker>>>,
    context_id: u32,
    token_id: u32,
    num_headers: usize,
    body_size: usize,
) {
    let Some(Ok(mut worker)) = worker.map(|w| w.try_borrow_mut()) else {
        return;
    };
    let now = host::now_ms();
    let response = host::call_response(num_headers, body_size);
    worker.on_callout_response(context_id, token_id, response, now);
}

/// Registers the root context factory and a panic hook. Called by the `_initialize` export.
pub fn start() {
    host::init_log();
    std::panic::set_hook(Box::new(|info| {
        // A panic aborts the VM (panic = abort); say where, at the host's highest level.
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        host::log_critical(&format!("tollgate: panic at {at}; the plugin VM stops"));
    }));
    proxy_wasm::set_root_context(|context_id| Box::new(root::Root::new(context_id)));
}

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    start();
}}
