//! Configuration parsing: defaults, the JSON path of every error, and the fingerprint; one
//! file per part of the configuration, sharing the helpers below.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};

use super::*;
use crate::testdata::{jwks, TestKey};

mod access;
mod documents;
mod gateway;
mod introspection;
mod issuers;
mod policy;
mod sender_constraint;
mod upstream_token;
mod upstreams;

/// A remote-JWKS issuer with only the required members.
fn remote_issuer(name: &str) -> Value {
    json!({
        "name": name,
        "issuer": format!("https://{name}.example.com"),
        "jwks": {"uri": format!("https://{name}.example.com/jwks"), "upstream": name},
    })
}

fn parse(v: &Value) -> Result<FilterConfig, ConfigError> {
    FilterConfig::parse(v.to_string().as_bytes())
}

/// The error's JSON path (panics if the configuration is accepted).
fn error_at(v: &Value) -> ConfigError {
    match parse(v) {
        Ok(_) => panic!("accepted: {v}"),
        Err(e) => e,
    }
}

fn path_of(v: &Value) -> String {
    error_at(v).path
}

/// The minimal configuration with one member of `issuers[0]` replaced.
fn with_issuer_member(key: &str, value: Value) -> Value {
    let mut issuer = remote_issuer("as1");
    issuer[key] = value;
    json!({"issuers": [issuer]})
}

/// Two issuers and one route with the given requirement.
fn with_route(route: Value) -> Value {
    json!({"issuers": [remote_issuer("as1"), remote_issuer("as2")], "routes": [route]})
}

const SECRET: &str = "s3cr3t-never-shown";

/// An introspection block with only the required members (fixed endpoint).
fn introspection(name: &str) -> Value {
    json!({
        "endpoint": format!("https://{name}.example.com/introspect"),
        "upstream": name,
        "client_id": "tollgate",
        "client_secret": SECRET,
    })
}

/// An issuer whose tokens are only introspected (no jwks).
fn opaque_issuer(name: &str) -> Value {
    json!({
        "name": name,
        "issuer": format!("https://{name}.example.com"),
        "introspection": introspection(name),
    })
}

/// `remote_issuer("as1")` with the members of `extra` added to its introspection block
/// (`null` removes one).
fn with_introspection(extra: Value) -> Value {
    let mut issuer = remote_issuer("as1");
    let mut intro = introspection("as1");
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            intro.as_object_mut().unwrap().remove(k);
        } else {
            intro[k] = v.clone();
        }
    }
    issuer["introspection"] = intro;
    json!({"issuers": [issuer]})
}

/// `as1` (JWKS only), `as2` and `as3` (introspection only) and one route.
fn with_opaque_route(route: Value) -> Value {
    json!({
        "issuers": [remote_issuer("as1"), opaque_issuer("as2"), opaque_issuer("as3")],
        "routes": [route],
    })
}

fn requirement_of(policy: &Policy) -> &Requirement {
    match policy {
        Policy::Require(r) => r,
        other => panic!("{other:?}"),
    }
}

/// An issuer `gateway` part whose endpoints come from `<issuer>/.well-known/...` via `name`.
fn metadata(name: &str) -> Value {
    json!({"metadata": true, "upstream": name})
}

/// `as1` behind the gateway with the given part, and the top-level gateway `top`.
fn with_gateway(part: Value, top: Value) -> Value {
    json!({"issuers": [gateway_issuer("as1", part)], "gateway": top})
}

/// `remote_issuer(name)` with the given `gateway` part.
fn gateway_issuer(name: &str, gateway: Value) -> Value {
    let mut issuer = remote_issuer(name);
    issuer["gateway"] = gateway;
    issuer
}
