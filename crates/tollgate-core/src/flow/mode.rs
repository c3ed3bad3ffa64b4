//! The two ways a worker makes callouts ([`CalloutMode`], one named method per difference)
//! and the state of one host callback ([`Turn`]).

use super::MayWait;

/// How this worker makes callouts (see the module docs). Each method names one way the two
/// modes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutMode {
    /// The root context makes every callout, driven by the tick; a paused request is resumed
    /// from whichever context learns that its wait is over. Envoy, Kong.
    Background,
    /// Each request makes the callouts it needs, one at a time, and is decided again in its own
    /// context. Hosts without a tick or shared data (APISIX), or `"callouts": "per_request"`.
    PerRequest,
}

impl CalloutMode {
    /// Whether the worker runs on a tick (and sets its period).
    pub(super) fn ticks(self) -> bool {
        self == CalloutMode::Background
    }

    /// What a new request may wait for: with per-request callouts never another worker's
    /// verification (nothing would wake it).
    pub(super) fn new_request_may_wait(self) -> MayWait {
        match self {
            CalloutMode::Background => MayWait::Yes,
            CalloutMode::PerRequest => MayWait::NotForPeer,
        }
    }

    /// The context a callout made now answers to: the root context, or the request running.
    pub(super) fn owner(self, root_id: u32, turn: &Turn) -> u32 {
        match self {
            CalloutMode::Background => root_id,
            CalloutMode::PerRequest => turn.context,
        }
    }

    /// Whether a request has at most one callout in flight (APISIX refuses a second one).
    pub(super) fn one_callout_per_request(self) -> bool {
        self == CalloutMode::PerRequest
    }

    /// Whether a request waiting for keys starts the fetch itself (else the tick does).
    pub(super) fn request_fetches_its_keys(self) -> bool {
        self == CalloutMode::PerRequest
    }

    /// Whether a request let through runs the refresh jobs that fell due (no tick does).
    pub(super) fn refreshes_on_requests(self) -> bool {
        self == CalloutMode::PerRequest
    }

    /// Whether an introspection is shared with other workers through a lease (a request can
    /// only wait for another one's call when the tick wakes it).
    pub(super) fn shares_introspection(self) -> bool {
        self == CalloutMode::Background
    }

    /// Whether an introspection job whose endpoint is unknown fetches the metadata itself, and
    /// fails at once once that did not help (else it waits for the refresh job until its
    /// deadline).
    pub(super) fn job_discovers_its_endpoint(self) -> bool {
        self == CalloutMode::PerRequest
    }

    /// Whether a paused request is decided again only in its own callbacks (and continues by
    /// returning `Continue`), instead of being resumed from another context.
    pub(super) fn resumes_in_own_context(self) -> bool {
        self == CalloutMode::PerRequest
    }

    /// Whether a request's callouts end with it (the host cancels them).
    pub(super) fn callouts_end_with_request(self) -> bool {
        self == CalloutMode::PerRequest
    }
}

/// One host callback's view: the context it runs on, and what happened to that request in it.
/// Made by each entry point and passed down, so no callback sees another one's state.
#[derive(Debug)]
pub(super) struct Turn {
    /// The context the host is running now: callouts dispatched now answer to it (per-request
    /// callouts).
    pub(super) context: u32,
    /// Per-request callouts: the request was allowed while it was paused (the caller lets it
    /// continue).
    pub(super) allowed: bool,
    /// The request got a local reply in this callback: no callout may follow it.
    pub(super) answered: bool,
}

impl Turn {
    pub(super) fn of(context: u32) -> Turn {
        Turn {
            context,
            allowed: false,
            answered: false,
        }
    }
}
