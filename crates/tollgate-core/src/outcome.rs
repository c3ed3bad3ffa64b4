//! The one place where every refusal becomes an HTTP answer: an API call's ([`Denial`],
//! [`reply`]: RFC 6750 §3) and a gateway call's ([`GatewayError`], [`gateway_reply`]: RFC 6749
//! §5.2).
//!
//! Bodies are small JSON objects with `error` and `error_description`; descriptions are
//! constant texts chosen here, so no token, claim value or secret can reach a client or a log.

use crate::binding::{BindingError, Scheme};
use crate::dpop;
use crate::key::AlgSet;

/// Why a request is not forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No route matches and there is no default route.
    NoRoute,
    /// The route needs a token and the request carries no bearer credentials.
    MissingToken,
    /// The request is malformed (e.g. two tokens, a broken Authorization header).
    InvalidRequest(&'static str),
    /// The token cannot be accepted (any validation failure).
    InvalidToken(&'static str),
    /// The token lacks scopes the route needs; `scope` lists them (space-separated).
    InsufficientScope { scope: String },
    /// The token lacks a claim value the route needs.
    ClaimNotSatisfied,
    /// Tollgate holds no usable keys for the token's issuer (AS unreachable, keys too stale).
    KeysUnavailable,
    /// The issuer said (now or recently, from the cache) that the token is not active.
    InactiveToken,
    /// The issuer's introspection endpoint gave no usable answer (fail closed).
    IntrospectionUnavailable,
    /// Neither the host nor WASI tells the time (the clock reads 0): no token's `exp` can be
    /// checked, so none is accepted (fail closed).
    ClockUnavailable,
    /// The token's binding (`cnf`) does not hold for how it was presented, or the route
    /// requires a binding it lacks.
    Binding(BindingError),
    /// The request's DPoP proof is missing, malformed, refused, or was used before.
    InvalidDpopProof(&'static str),
    /// The proof lacks the current server nonce: this one (`DPoP-Nonce`) is to be used.
    UseDpopNonce(String),
    /// A DPoP proof cannot be checked right now: the replay store could not record it (full,
    /// or the host refused the write), or there is no server-nonce key. Refused, never
    /// accepted unchecked.
    DpopUnavailable,
    /// RFC 9470: the user's authentication is not strong or recent enough for the route
    /// (`why`, a fixed text). `acr_values` (space-separated, in configuration order) and
    /// `max_age` are the route's requirements, sent in the challenge.
    InsufficientUserAuthentication {
        why: &'static str,
        acr_values: Option<String>,
        max_age: Option<u64>,
    },
    /// The token's client is not in the route's `clients` list (see [`crate::policy::ClientRule`]).
    ClientNotAllowed,
    /// The route's client-id header names another client than the token's.
    ClientMismatch,
    /// The route's policy decision point said no, or the request cannot be described to it
    /// (`description`, fixed). `reason`: the PDP's own reason, when the route shows it.
    Forbidden {
        description: &'static str,
        reason: Option<String>,
    },
    /// The route's policy decision point gave no decision (fail closed).
    PdpUnavailable,
    /// The authorization server refused to exchange the token for the route's upstream
    /// (RFC 8693: `invalid_grant`, `invalid_target`, …).
    ExchangeRefused,
    /// The token exchange gave no answer (down, slow, an error status, an unusable body): the
    /// upstream cannot be given its token (fail closed).
    ExchangeUnavailable,
}

/// A denial's kind, without its details: what the `denied.<code>` counters count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    NoRoute,
    MissingToken,
    InvalidRequest,
    InvalidToken,
    InsufficientScope,
    ClaimNotSatisfied,
    KeysUnavailable,
    InactiveToken,
    IntrospectionUnavailable,
    ClockUnavailable,
    Binding,
    InvalidDpopProof,
    UseDpopNonce,
    DpopUnavailable,
    InsufficientUserAuthentication,
    ClientNotAllowed,
    ClientMismatch,
    Forbidden,
    PdpUnavailable,
    ExchangeRefused,
    ExchangeUnavailable,
}

impl DenialKind {
    /// Every kind, in the order of [`DenialKind::index`].
    pub const ALL: [DenialKind; 21] = [
        DenialKind::NoRoute,
        DenialKind::MissingToken,
        DenialKind::InvalidRequest,
        DenialKind::InvalidToken,
        DenialKind::InsufficientScope,
        DenialKind::ClaimNotSatisfied,
        DenialKind::KeysUnavailable,
        DenialKind::InactiveToken,
        DenialKind::IntrospectionUnavailable,
        DenialKind::ClockUnavailable,
        DenialKind::Binding,
        DenialKind::InvalidDpopProof,
        DenialKind::UseDpopNonce,
        DenialKind::DpopUnavailable,
        DenialKind::InsufficientUserAuthentication,
        DenialKind::ClientNotAllowed,
        DenialKind::ClientMismatch,
        DenialKind::Forbidden,
        DenialKind::PdpUnavailable,
        DenialKind::ExchangeRefused,
        DenialKind::ExchangeUnavailable,
    ];

    /// The kind's position in [`DenialKind::ALL`] (for a table of counters).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Counter suffix for `denied.<code>` metrics.
    pub fn code(self) -> &'static str {
        match self {
            DenialKind::NoRoute => "no_route",
            DenialKind::MissingToken => "missing_token",
            DenialKind::InvalidRequest => "invalid_request",
            DenialKind::InvalidToken => "invalid_token",
            DenialKind::InsufficientScope => "insufficient_scope",
            DenialKind::ClaimNotSatisfied => "claim_not_satisfied",
            DenialKind::KeysUnavailable => "keys_unavailable",
            DenialKind::InactiveToken => "inactive_token",
            DenialKind::IntrospectionUnavailable => "introspection_unavailable",
            DenialKind::ClockUnavailable => "clock_unavailable",
            DenialKind::Binding => "binding",
            DenialKind::InvalidDpopProof => "invalid_dpop_proof",
            DenialKind::UseDpopNonce => "use_dpop_nonce",
            DenialKind::DpopUnavailable => "dpop_unavailable",
            DenialKind::InsufficientUserAuthentication => "insufficient_user_authentication",
            DenialKind::ClientNotAllowed => "client_not_allowed",
            DenialKind::ClientMismatch => "client_mismatch",
            DenialKind::Forbidden => "forbidden",
            DenialKind::PdpUnavailable => "pdp_unavailable",
            DenialKind::ExchangeRefused => "exchange_refused",
            DenialKind::ExchangeUnavailable => "exchange_unavailable",
        }
    }
}

impl Denial {
    /// The denial's kind.
    pub fn kind(&self) -> DenialKind {
        match self {
            Denial::NoRoute => DenialKind::NoRoute,
            Denial::MissingToken => DenialKind::MissingToken,
            Denial::InvalidRequest(_) => DenialKind::InvalidRequest,
            Denial::InvalidToken(_) => DenialKind::InvalidToken,
            Denial::InsufficientScope { .. } => DenialKind::InsufficientScope,
            Denial::ClaimNotSatisfied => DenialKind::ClaimNotSatisfied,
            Denial::KeysUnavailable => DenialKind::KeysUnavailable,
            Denial::InactiveToken => DenialKind::InactiveToken,
            Denial::IntrospectionUnavailable => DenialKind::IntrospectionUnavailable,
            Denial::ClockUnavailable => DenialKind::ClockUnavailable,
            Denial::Binding(_) => DenialKind::Binding,
            Denial::InvalidDpopProof(_) => DenialKind::InvalidDpopProof,
            Denial::UseDpopNonce(_) => DenialKind::UseDpopNonce,
            Denial::DpopUnavailable => DenialKind::DpopUnavailable,
            Denial::InsufficientUserAuthentication { .. } => {
                DenialKind::InsufficientUserAuthentication
            }
            Denial::ClientNotAllowed => DenialKind::ClientNotAllowed,
            Denial::ClientMismatch => DenialKind::ClientMismatch,
            Denial::Forbidden { .. } => DenialKind::Forbidden,
            Denial::PdpUnavailable => DenialKind::PdpUnavailable,
            Denial::ExchangeRefused => DenialKind::ExchangeRefused,
            Denial::ExchangeUnavailable => DenialKind::ExchangeUnavailable,
        }
    }

    /// Counter suffix for `denied.<code>` metrics.
    pub fn code(&self) -> &'static str {
        self.kind().code()
    }
}

/// A response Tollgate sends itself instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

const INACTIVE: &str = "the token is not active";
/// [`Denial::ClientNotAllowed`]'s description.
pub const NOT_SUBSCRIBED: &str = "the client is not allowed to call this resource";
/// [`Denial::ClientMismatch`]'s description.
pub const NOT_THE_CLIENT: &str = "the token was not issued to the client the request names";
const USE_NONCE: &str = "the DPoP proof must carry the server nonce in DPoP-Nonce";

/// How long clients should wait before retrying a 503 (seconds).
pub const RETRY_AFTER_S: u32 = 5;

/// The challenges a refusal carries (RFC 6750 §3, RFC 9449 §7.1): one per scheme the route
/// takes, and which scheme's challenge names the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge {
    /// The route takes `Bearer` tokens.
    pub bearer: bool,
    /// The route takes `DPoP` tokens, with proofs signed by these algorithms.
    pub dpop: Option<AlgSet>,
    /// The scheme the request used: a token's error goes in that scheme's challenge (a
    /// DPoP-specific one always in the `DPoP` challenge).
    pub used: Scheme,
    /// The protected resource the route is under (an index into
    /// [`crate::config::FilterConfig::resources`]): each challenge names its metadata URL
    /// (RFC 9728 §5.1). `None`: no `resource_metadata` parameter.
    pub resource: Option<u16>,
}

impl Challenge {
    /// A route that takes `Bearer` tokens only.
    pub const BEARER: Challenge = Challenge {
        bearer: true,
        dpop: None,
        used: Scheme::Bearer,
        resource: None,
    };

    /// The same challenges, for a request that used `scheme`.
    pub fn used(self, scheme: Scheme) -> Challenge {
        Challenge {
            used: scheme,
            ..self
        }
    }
}

impl Default for Challenge {
    fn default() -> Challenge {
        Challenge::BEARER
    }
}

/// The `WWW-Authenticate` values for `challenge`: `error` (code, description) and `params`
/// (more auth-params, written out: `scope="..."`, RFC 9470's `acr_values="..."`) go in the
/// challenge of `error_scheme`, or of the one scheme the route takes if that is not it;
/// `resource_metadata` (the URL of the route's protected-resource metadata) goes in each.
fn challenges(
    challenge: Challenge,
    realm: &str,
    resource_metadata: Option<&str>,
    error: Option<(&str, &str)>,
    params: Option<&str>,
    error_scheme: Scheme,
) -> Vec<(String, String)> {
    let (bearer, dpop) = (challenge.bearer, challenge.dpop);
    let error_in_dpop = match (bearer, dpop) {
        (true, Some(_)) => error_scheme == Scheme::Dpop,
        (false, Some(_)) => true,
        _ => false,
    };
    let mut out = Vec::with_capacity(2);
    if bearer || dpop.is_none() {
        let mut v = format!("Bearer realm=\"{realm}\"");
        if !error_in_dpop {
            if let Some((code, description)) = error {
                v.push_str(&format!(
                    ", error=\"{code}\", error_description=\"{description}\""
                ));
            }
            if let Some(params) = params {
                v.push_str(", ");
                v.push_str(params);
            }
        }
        push_resource_metadata(&mut v, resource_metadata);
        out.push(("www-authenticate".to_owned(), v));
    }
    if let Some(algs) = dpop {
        let mut v = dpop::challenge(algs, error.filter(|_| error_in_dpop));
        if let (true, Some(params)) = (error_in_dpop, params) {
            v.push_str(", ");
            v.push_str(params);
        }
        push_resource_metadata(&mut v, resource_metadata);
        out.push(("www-authenticate".to_owned(), v));
    }
    out
}

/// RFC 9728 §5.1's parameter, last in a challenge (the URL is configuration: no `"` or `\`).
fn push_resource_metadata(challenge: &mut String, url: Option<&str>) {
    if let Some(url) = url {
        challenge.push_str(", resource_metadata=\"");
        challenge.push_str(url);
        challenge.push('"');
    }
}

/// Maps a denial to its HTTP answer, with the challenges of the route it was refused on;
/// `resource_metadata` is the URL `challenge.resource` stands for
/// ([`crate::config::FilterConfig::resource_metadata`]).
pub fn reply(
    denial: &Denial,
    realm: &str,
    challenge: Challenge,
    resource_metadata: Option<&str>,
) -> LocalReply {
    let used = challenge.used;
    let www = |error: Option<(&str, &str)>, scope: Option<&str>, scheme: Scheme| {
        challenges(challenge, realm, resource_metadata, error, scope, scheme)
    };
    let mut extra: Vec<(String, String)> = Vec::new();
    let (status, error, description, www) = match denial {
        Denial::NoRoute => (
            403,
            "access_denied",
            "no route policy matches this request",
            Vec::new(),
        ),
        Denial::MissingToken => (
            401,
            "unauthorized",
            "an access token is required",
            www(None, None, used),
        ),
        Denial::InvalidRequest(d) => (
            400,
            "invalid_request",
            *d,
            www(Some(("invalid_request", d)), None, used),
        ),
        Denial::InvalidToken(d) => (
            401,
            "invalid_token",
            *d,
            www(Some(("invalid_token", d)), None, used),
        ),
        Denial::Binding(e) => {
            let scheme = if e.is_dpop() { Scheme::Dpop } else { used };
            let d = e.describe();
            (
                401,
                "invalid_token",
                d,
                www(Some(("invalid_token", d)), None, scheme),
            )
        }
        Denial::InvalidDpopProof(d) => (
            401,
            "invalid_dpop_proof",
            *d,
            www(Some(("invalid_dpop_proof", d)), None, Scheme::Dpop),
        ),
        Denial::UseDpopNonce(nonce) => {
            extra.push(("dpop-nonce".to_owned(), nonce.clone()));
            (
                401,
                "use_dpop_nonce",
                USE_NONCE,
                www(Some(("use_dpop_nonce", USE_NONCE)), None, Scheme::Dpop),
            )
        }
        Denial::InsufficientScope { scope } => (
            403,
            "insufficient_scope",
            "the token lacks a required scope",
            www(
                Some(("insufficient_scope", "the token lacks a required scope")),
                Some(&format!("scope=\"{scope}\"")),
                used,
            ),
        ),
        Denial::InsufficientUserAuthentication {
            why,
            acr_values,
            max_age,
        } => {
            // RFC 9470 §3: acr_values and/or max_age, after the error.
            let mut params = String::new();
            if let Some(acr) = acr_values {
                params.push_str("acr_values=\"");
                params.push_str(acr);
                params.push('"');
            }
            if let Some(age) = max_age {
                if !params.is_empty() {
                    params.push_str(", ");
                }
                params.push_str("max_age=\"");
                params.push_str(&age.to_string());
                params.push('"');
            }
            let code = "insufficient_user_authentication";
            let params = (!params.is_empty()).then_some(params.as_str());
            (401, code, *why, www(Some((code, why)), params, used))
        }
        Denial::ClientNotAllowed => (403, "access_denied", NOT_SUBSCRIBED, Vec::new()),
        Denial::ClientMismatch => (403, "access_denied", NOT_THE_CLIENT, Vec::new()),
        Denial::ClaimNotSatisfied => (
            403,
            "insufficient_scope",
            "the token lacks a required claim value",
            www(
                Some((
                    "insufficient_scope",
                    "the token lacks a required claim value",
                )),
                None,
                used,
            ),
        ),
        Denial::InactiveToken => (
            401,
            "invalid_token",
            INACTIVE,
            www(Some(("invalid_token", INACTIVE)), None, used),
        ),
        Denial::KeysUnavailable | Denial::IntrospectionUnavailable => (
            503,
            "temporarily_unavailable",
            "the token's issuer cannot be checked right now",
            Vec::new(),
        ),
        Denial::ClockUnavailable => (
            503,
            "temporarily_unavailable",
            "tokens cannot be checked right now",
            Vec::new(),
        ),
        Denial::DpopUnavailable => (
            503,
            "temporarily_unavailable",
            "DPoP proofs cannot be checked right now",
            Vec::new(),
        ),
        // Not an authentication problem, so no challenge: other credentials would not help.
        Denial::Forbidden { description, .. } => {
            (403, "insufficient_permissions", *description, Vec::new())
        }
        Denial::PdpUnavailable => (
            503,
            "temporarily_unavailable",
            "the request cannot be authorized right now",
            Vec::new(),
        ),
        // The token is good; what is missing is the upstream's token, which another token
        // would not change: no challenge.
        Denial::ExchangeRefused => (
            403,
            "access_denied",
            "the token cannot be exchanged for this route's upstream",
            Vec::new(),
        ),
        Denial::ExchangeUnavailable => (
            503,
            "temporarily_unavailable",
            "the token cannot be exchanged right now",
            Vec::new(),
        ),
    };
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    headers.extend(www);
    headers.extend(extra);
    if status == 503 {
        headers.push(("retry-after".to_owned(), RETRY_AFTER_S.to_string()));
    }
    let mut body = serde_json::json!({ "error": error, "error_description": description });
    if let Denial::Forbidden {
        reason: Some(reason),
        ..
    } = denial
    {
        body["reason"] = serde_json::Value::String(reason.clone());
    }
    let body = body.to_string();
    LocalReply {
        status,
        headers,
        body,
    }
}

/// Why the OAuth endpoint gateway answers a call itself with an OAuth error: the call reaches
/// no authorization server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayError {
    /// The path is under the base path but names no endpoint.
    NoSuchEndpoint,
    /// A metadata document was asked for under a host that is not one of the public origins.
    UnknownHost,
    /// A top-level metadata document, and no `default_issuer`.
    NoDefaultIssuer,
    /// The path, selector parameter or selector header names no issuer behind the gateway.
    UnknownSelector,
    /// The client id belongs to no issuer, and nothing else routes the call.
    UnknownClient,
    /// Nothing in the call tells its issuer.
    NoRoute,
    /// A form endpoint got a body of another content type.
    NotAForm,
    /// The form repeats a parameter or is not UTF-8.
    MalformedForm,
    /// The body is over `max_body_bytes`.
    BodyTooLarge,
    /// The host announced a body it then did not hand over whole.
    BodyUnreadable,
    /// The issuer has no URL for this endpoint (configured or in its metadata).
    NoEndpoint,
    /// The client id in an RFC 7592 path is not one (not UTF-8, empty, `.` or `..`).
    BadClientId,
    /// The issuer's endpoints come from its metadata documents, which are not known yet.
    NotReady,
    /// The authorization server publishes no metadata document of the kind asked for.
    NoDocument,
}

impl GatewayError {
    /// (status, `error`, `error_description`).
    fn parts(self) -> (u32, &'static str, &'static str) {
        use GatewayError as E;
        match self {
            E::NoSuchEndpoint => (404, "invalid_request", "no such OAuth endpoint"),
            E::UnknownHost => (
                404,
                "invalid_request",
                "no OAuth metadata is published for this host",
            ),
            E::NoDefaultIssuer => (
                404,
                "invalid_request",
                "no default authorization server: use /{issuer}/.well-known/...",
            ),
            E::UnknownSelector => (
                400,
                "invalid_request",
                "the request names an authorization server that is not configured",
            ),
            E::UnknownClient => (
                401,
                "invalid_client",
                "the client is not registered at any configured authorization server",
            ),
            E::NoRoute => (
                400,
                "invalid_request",
                "cannot tell which authorization server this call is for",
            ),
            E::NotAForm => (
                400,
                "invalid_request",
                "the body must be application/x-www-form-urlencoded",
            ),
            E::MalformedForm => (
                400,
                "invalid_request",
                "the body is not a valid application/x-www-form-urlencoded form",
            ),
            E::BodyTooLarge => (413, "invalid_request", "the request body is too large"),
            E::BodyUnreadable => (500, "server_error", "the request body could not be read"),
            E::NoEndpoint => (
                404,
                "invalid_request",
                "the authorization server does not offer this endpoint",
            ),
            E::BadClientId => (
                400,
                "invalid_request",
                "the client id in the path is not a valid client id",
            ),
            E::NotReady => (
                503,
                "temporarily_unavailable",
                "the authorization server's metadata is not known yet",
            ),
            E::NoDocument => (
                404,
                "invalid_request",
                "the authorization server publishes no metadata document of this kind",
            ),
        }
    }
}

/// How long gateway clients should wait before retrying a 503 (seconds).
pub const GATEWAY_RETRY_AFTER_S: u32 = 1;

/// Maps a gateway error to its HTTP answer: never stored (`no-store`), a 503 says when to
/// retry, and a 401 `invalid_client` names the scheme the client should use (RFC 6749 §5.2).
pub fn gateway_reply(e: GatewayError) -> LocalReply {
    let (status, error, description) = e.parts();
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("cache-control".to_owned(), "no-store".to_owned()),
    ];
    if status == 503 {
        headers.push(("retry-after".to_owned(), GATEWAY_RETRY_AFTER_S.to_string()));
    }
    if error == "invalid_client" {
        headers.push((
            "www-authenticate".to_owned(),
            "Basic realm=\"oauth\"".to_owned(),
        ));
    }
    let body = serde_json::json!({ "error": error, "error_description": description }).to_string();
    LocalReply {
        status,
        headers,
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // On wasm32 (scripts/test-wasm) `#[test]` is wasm-bindgen-test's: the tests run in Node's V8.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn header<'r>(r: &'r LocalReply, name: &str) -> Option<&'r str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn denial_kinds_are_listed_in_index_order() {
        for (i, kind) in DenialKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{}", kind.code());
        }
    }

    #[test]
    fn missing_token_is_a_bare_challenge() {
        let r = reply(&Denial::MissingToken, "api", Challenge::BEARER, None);
        assert_eq!(r.status, 401);
        assert_eq!(header(&r, "www-authenticate"), Some("Bearer realm=\"api\""));
    }

    #[test]
    fn invalid_token_names_the_error() {
        let r = reply(
            &Denial::InvalidToken("the token has expired"),
            "api",
            Challenge::BEARER,
            None,
        );
        assert_eq!(r.status, 401);
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has expired\"")
        );
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "invalid_token");
    }

    #[test]
    fn insufficient_scope_lists_the_needed_scopes() {
        let r = reply(
            &Denial::InsufficientScope {
                scope: "read write".into(),
            },
            "api",
            Challenge::BEARER,
            None,
        );
        assert_eq!(r.status, 403);
        assert!(header(&r, "www-authenticate")
            .unwrap()
            .ends_with(", scope=\"read write\""));
    }

    #[test]
    fn malformed_request_is_400_and_unavailable_keys_503_with_retry_after() {
        assert_eq!(
            reply(&Denial::InvalidRequest("x"), "r", Challenge::BEARER, None).status,
            400
        );
        for denial in [Denial::KeysUnavailable, Denial::ClockUnavailable] {
            let r = reply(&denial, "r", Challenge::BEARER, None);
            assert_eq!(r.status, 503);
            assert_eq!(header(&r, "retry-after"), Some("5"));
            assert_eq!(
                header(&r, "www-authenticate"),
                None,
                "not the token's fault"
            );
        }
    }

    fn challenges_of(r: &LocalReply) -> Vec<&str> {
        r.headers
            .iter()
            .filter(|(n, _)| n == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn es256_eddsa() -> AlgSet {
        let mut algs = AlgSet::default();
        algs.insert(crate::key::Alg::Es256);
        algs.insert(crate::key::Alg::EdDsa);
        algs
    }

    #[test]
    fn a_route_that_takes_both_schemes_sends_both_challenges_the_error_in_the_one_used() {
        let both = Challenge {
            bearer: true,
            dpop: Some(es256_eddsa()),
            used: Scheme::Bearer,
            resource: None,
        };
        let r = reply(&Denial::MissingToken, "api", both, None);
        assert_eq!(
            challenges_of(&r),
            ["Bearer realm=\"api\"", "DPoP algs=\"ES256 EdDSA\""]
        );
        let expired = Denial::InvalidToken("the token has expired");
        let r = reply(&expired, "api", both.used(Scheme::Dpop), None);
        assert_eq!(
            challenges_of(&r),
            [
                "Bearer realm=\"api\"",
                "DPoP algs=\"ES256 EdDSA\", error=\"invalid_token\", error_description=\"the token has expired\""
            ]
        );
        let scope = Denial::InsufficientScope {
            scope: "admin".into(),
        };
        let r = reply(&scope, "api", both, None);
        assert!(challenges_of(&r)[0].ends_with(", scope=\"admin\""));
        assert_eq!(challenges_of(&r)[1], "DPoP algs=\"ES256 EdDSA\"");
    }

    #[test]
    fn a_dpop_only_route_sends_the_dpop_challenge_alone_and_nonces_in_their_header() {
        let dpop_only = Challenge {
            bearer: false,
            dpop: Some(es256_eddsa()),
            used: Scheme::Bearer,
            resource: None,
        };
        let r = reply(&Denial::MissingToken, "api", dpop_only, None);
        assert_eq!(challenges_of(&r), ["DPoP algs=\"ES256 EdDSA\""]);
        let r = reply(&Denial::UseDpopNonce("n-1".into()), "api", dpop_only, None);
        assert_eq!(r.status, 401);
        assert!(challenges_of(&r)[0].contains("error=\"use_dpop_nonce\""));
        assert_eq!(header(&r, "dpop-nonce"), Some("n-1"));
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "use_dpop_nonce");
        // A DPoP-specific error on a Bearer-only route still reaches the client.
        let r = reply(
            &Denial::Binding(BindingError::DpopOff),
            "api",
            Challenge::BEARER,
            None,
        );
        assert!(challenges_of(&r)[0].starts_with("Bearer realm=\"api\", error=\"invalid_token\""));
        let r = reply(&Denial::DpopUnavailable, "api", dpop_only, None);
        assert_eq!((r.status, challenges_of(&r).len()), (503, 0));
        assert_eq!(header(&r, "retry-after"), Some("5"));
    }

    #[test]
    fn step_up_is_the_rfc_9470_challenge_in_the_scheme_used() {
        let acr = Denial::InsufficientUserAuthentication {
            why: crate::policy::ACR_NOT_ACCEPTED,
            acr_values: Some("urn:tollgate:loa:2 urn:tollgate:loa:3".into()),
            max_age: None,
        };
        let r = reply(&acr, "api", Challenge::BEARER, None);
        assert_eq!(r.status, 401);
        assert_eq!(
            challenges_of(&r),
            ["Bearer realm=\"api\", error=\"insufficient_user_authentication\", error_description=\"a stronger authentication of the user is required\", acr_values=\"urn:tollgate:loa:2 urn:tollgate:loa:3\""]
        );
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "insufficient_user_authentication");
        assert_eq!(body["error_description"], crate::policy::ACR_NOT_ACCEPTED);
        let age = Denial::InsufficientUserAuthentication {
            why: crate::policy::AUTH_TOO_OLD,
            acr_values: None,
            max_age: Some(300),
        };
        assert_eq!(
            challenges_of(&reply(&age, "api", Challenge::BEARER, None)),
            ["Bearer realm=\"api\", error=\"insufficient_user_authentication\", error_description=\"a more recent authentication of the user is required\", max_age=\"300\""]
        );
        let both = Denial::InsufficientUserAuthentication {
            why: crate::policy::NO_AUTH_TIME,
            acr_values: Some("urn:tollgate:loa:2".into()),
            max_age: Some(5),
        };
        let route = Challenge {
            bearer: true,
            dpop: Some(es256_eddsa()),
            used: Scheme::Bearer,
            resource: None,
        };
        assert_eq!(
            challenges_of(&reply(&both, "api", route, None)),
            [
                "Bearer realm=\"api\", error=\"insufficient_user_authentication\", error_description=\"the token does not say when the user authenticated\", acr_values=\"urn:tollgate:loa:2\", max_age=\"5\"",
                "DPoP algs=\"ES256 EdDSA\""
            ]
        );
        assert_eq!(
            challenges_of(&reply(&both, "api", route.used(Scheme::Dpop), None)),
            [
                "Bearer realm=\"api\"",
                "DPoP algs=\"ES256 EdDSA\", error=\"insufficient_user_authentication\", error_description=\"the token does not say when the user authenticated\", acr_values=\"urn:tollgate:loa:2\", max_age=\"5\""
            ]
        );
        assert_eq!(
            both.code(),
            "insufficient_user_authentication",
            "its own counter"
        );
    }

    #[test]
    fn client_refusals_are_403_access_denied_without_a_challenge() {
        for (denial, description, code) in [
            (
                Denial::ClientNotAllowed,
                NOT_SUBSCRIBED,
                "client_not_allowed",
            ),
            (Denial::ClientMismatch, NOT_THE_CLIENT, "client_mismatch"),
        ] {
            let r = reply(&denial, "api", Challenge::BEARER, None);
            assert_eq!(r.status, 403);
            assert!(challenges_of(&r).is_empty());
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(body["error"], "access_denied");
            assert_eq!(body["error_description"], description);
            assert_eq!(denial.code(), code);
        }
        let r = reply(
            &Denial::InvalidRequest(crate::policy::NO_CLIENT_HEADER),
            "api",
            Challenge::BEARER,
            None,
        );
        assert_eq!(r.status, 400);
        assert_eq!(
            challenges_of(&r),
            ["Bearer realm=\"api\", error=\"invalid_request\", error_description=\"the request lacks its client id header\""]
        );
    }

    #[test]
    fn gateway_errors_are_oauth_errors_never_stored() {
        let r = gateway_reply(GatewayError::UnknownClient);
        assert_eq!(r.status, 401);
        assert_eq!(header(&r, "cache-control"), Some("no-store"));
        assert_eq!(
            header(&r, "www-authenticate"),
            Some("Basic realm=\"oauth\"")
        );
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["error"], "invalid_client");
        let r = gateway_reply(GatewayError::NotReady);
        assert_eq!(r.status, 503);
        assert_eq!(header(&r, "retry-after"), Some("1"));
        assert_eq!(header(&r, "www-authenticate"), None);
        let r = gateway_reply(GatewayError::BodyTooLarge);
        assert_eq!((r.status, header(&r, "retry-after")), (413, None));
        let r = gateway_reply(GatewayError::BodyUnreadable);
        assert_eq!((r.status, header(&r, "retry-after")), (500, None));
        assert_eq!(header(&r, "cache-control"), Some("no-store"));
    }
}
