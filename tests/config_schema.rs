//! Keeps `plugin-config/schema.json`, the examples in `plugin-config/examples` and the plugin's
//! own parser ([`FilterConfig::parse`]) in step:
//!
//! - the schema is a valid draft 2020-12 schema, and its `default`s are the plugin's defaults;
//! - every `valid/*.json` passes both the schema and the plugin;
//! - every `invalid/*.json` is refused by the plugin at the JSON path that
//!   `invalid/expected-paths.json` gives for it, and by the schema too, unless its name starts
//!   with `semantic-` (a rule the schema cannot express, listed in its `$comment`);
//! - the configuration example in README.md (a ```` ```json tollgate-config ```` block), if
//!   there is one, passes both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use jsonschema::Validator;
use serde_json::{json, Value};
use tollgate::config::FilterConfig;
use tollgate::upstream::UpstreamRule;

const CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/plugin-config");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
/// Invalid examples the schema may accept: only the plugin can tell they are wrong.
const SEMANTIC_PREFIX: &str = "semantic-";
const EXPECTED_PATHS: &str = "expected-paths.json";

fn read_json(path: &Path) -> Value {
    let text = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema() -> Value {
    read_json(&Path::new(CONFIG_DIR).join("schema.json"))
}

fn validator() -> Validator {
    jsonschema::draft202012::new(&schema()).unwrap_or_else(|e| panic!("schema.json: {e}"))
}

/// Schema violations as "<instance path>: <message>", empty when the instance is valid.
fn schema_errors(validator: &Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

struct Example {
    name: String,
    text: Vec<u8>,
}

impl Example {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.text).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }
}

/// The `*.json` examples of `examples/<kind>`, by file name (the sidecar excluded).
fn examples(kind: &str) -> Vec<Example> {
    let dir = Path::new(CONFIG_DIR).join("examples").join(kind);
    let mut examples: Vec<Example> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| Example {
            name: path.file_name().unwrap().to_string_lossy().into_owned(),
            text: fs::read(&path).unwrap(),
        })
        .filter(|ex| ex.name != EXPECTED_PATHS)
        .collect();
    examples.sort_by(|a, b| a.name.cmp(&b.name));
    examples
}

/// `invalid/expected-paths.json`: file name -> the `ConfigError.path` the plugin reports.
fn expected_paths() -> BTreeMap<String, String> {
    let path = Path::new(CONFIG_DIR)
        .join("examples/invalid")
        .join(EXPECTED_PATHS);
    serde_json::from_value(read_json(&path)).unwrap_or_else(|e| panic!("{EXPECTED_PATHS}: {e}"))
}

/// Collects every problem first, so one run shows them all.
fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(failures.is_empty(), "{what}:\n  {}", failures.join("\n  "));
}

#[test]
fn schema_is_a_valid_draft_2020_12_schema() {
    let schema = schema();
    assert_eq!(schema["$schema"], DRAFT_2020_12);
    // The draft's meta-schema ships with the jsonschema crate: no network needed.
    let meta = jsonschema::draft202012::new(&json!({ "$ref": DRAFT_2020_12 })).unwrap();
    assert!(
        !meta.is_valid(&json!({ "type": "text" })),
        "the meta-schema check is not working"
    );
    assert_no_failures(
        "schema.json against the draft 2020-12 meta-schema",
        &schema_errors(&meta, &schema),
    );
    // And it compiles (this also resolves every `$ref`).
    validator();
}

#[test]
fn valid_examples_pass_schema_and_plugin() {
    let validator = validator();
    let examples = examples("valid");
    assert!(examples.len() >= 6, "expected at least 6 valid examples");
    let mut failures = Vec::new();
    for ex in &examples {
        for e in schema_errors(&validator, &ex.json()) {
            failures.push(format!("{}: schema: {e}", ex.name));
        }
        if let Err(e) = FilterConfig::parse(&ex.text) {
            failures.push(format!("{}: plugin: {e}", ex.name));
        }
    }
    assert_no_failures("valid examples refused", &failures);
}

#[test]
fn invalid_examples_are_refused_by_the_plugin_at_the_expected_path() {
    let mut expected = expected_paths();
    let examples = examples("invalid");
    assert!(
        examples.len() >= 12,
        "expected at least 12 invalid examples"
    );
    let mut failures = Vec::new();
    for ex in &examples {
        let Some(want) = expected.remove(&ex.name) else {
            failures.push(format!("{}: missing from {EXPECTED_PATHS}", ex.name));
            continue;
        };
        match FilterConfig::parse(&ex.text) {
            Ok(_) => failures.push(format!("{}: accepted by the plugin", ex.name)),
            Err(e) if e.path != want => failures.push(format!(
                "{}: error at {:?}, expected {want:?} ({})",
                ex.name, e.path, e.message
            )),
            Err(_) => {}
        }
    }
    for name in expected.keys() {
        failures.push(format!(
            "{EXPECTED_PATHS} names {name}, which does not exist"
        ));
    }
    assert_no_failures("invalid examples", &failures);
}

#[test]
fn invalid_examples_are_refused_by_the_schema_unless_semantic() {
    let validator = validator();
    let failures: Vec<String> = examples("invalid")
        .iter()
        .filter(|ex| !ex.name.starts_with(SEMANTIC_PREFIX))
        .filter(|ex| validator.is_valid(&ex.json()))
        .map(|ex| format!("{}: accepted by the schema (rename it {SEMANTIC_PREFIX}* if the schema cannot catch it)", ex.name))
        .collect();
    assert_no_failures("invalid examples the schema accepts", &failures);
}

/// Writes the schema's `default` of each property of `def` that `object` does not set.
fn fill_defaults(object: &mut Value, def: &Value) {
    let properties = def["properties"]
        .as_object()
        .expect("a $defs entry with properties");
    for (name, property) in properties {
        if let Some(default) = property.get("default") {
            object
                .as_object_mut()
                .unwrap()
                .entry(name)
                .or_insert_with(|| default.clone());
        }
    }
}

/// The parsed configuration, part by part, without its fingerprint (a hash of the text).
fn compiled(config: &Value) -> Vec<(&'static str, String)> {
    let c = FilterConfig::parse(config.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    vec![
        ("issuers", format!("{:?}", c.issuers)),
        ("routes", format!("{:?}", c.routes)),
        ("default_route", format!("{:?}", c.default_policy)),
        ("identity", format!("{:?}", c.identity)),
        ("realm", c.realm),
        ("cache", c.cache_slots.to_string()),
        ("gateway", format!("{:?}", c.gateway)),
        ("sender_constraint", format!("{:?}", c.sender_constraint)),
        ("upstream_rules", upstream_rules(&c.upstream_rules)),
        ("backend_token", format!("{:?}", c.backend)),
        ("exchange_slots", c.exchange_slots.to_string()),
    ]
}

#[test]
fn schema_defaults_are_the_plugin_defaults() {
    let minimal = json!({
        "issuers": [{
            "name": "corp",
            "issuer": "https://login.example.com",
            "jwks": {"uri": "https://login.example.com/jwks", "upstream": "corp_idp"}
        }],
        "routes": [{"require": {}}],
        "default_route": {}
    });
    let schema = schema();
    let defs = &schema["$defs"];
    let mut explicit = minimal.clone();
    fill_defaults(&mut explicit, &schema);
    fill_defaults(&mut explicit["issuers"][0], &defs["issuer"]);
    fill_defaults(&mut explicit["routes"][0], &defs["route"]);
    fill_defaults(&mut explicit["routes"][0]["match"], &defs["match"]);
    fill_defaults(&mut explicit["routes"][0]["require"], &defs["requirement"]);
    fill_defaults(&mut explicit["default_route"], &defs["policy"]);
    fill_defaults(&mut explicit["identity"], &defs["identity"]);
    fill_defaults(&mut explicit["cache"], &defs["cache"]);

    assert_defaults_agree(&explicit, &minimal);
}

#[test]
fn introspection_schema_defaults_are_the_plugin_defaults() {
    let minimal = json!({
        "issuers": [{
            "name": "legacy",
            "issuer": "https://auth.example.com",
            "introspection": {
                "endpoint": "https://auth.example.com/introspect",
                "upstream": "legacy_as",
                "client_id": "gateway",
                "client_secret": "change-me"
            },
            "opaque_tokens": {"pattern": "[a-f0-9]{32}"}
        }],
        "default_route": {}
    });
    let schema = schema();
    let defs = &schema["$defs"];
    let mut explicit = minimal.clone();
    fill_defaults(&mut explicit["issuers"][0], &defs["issuer"]);
    fill_defaults(
        &mut explicit["issuers"][0]["introspection"],
        &defs["introspection"],
    );
    fill_defaults(
        &mut explicit["issuers"][0]["opaque_tokens"],
        &defs["opaqueTokens"],
    );
    assert_eq!(
        explicit["issuers"][0]["introspection"]["auth_method"],
        "client_secret_basic"
    );
    assert_eq!(
        explicit["issuers"][0]["opaque_tokens"]["prefixes"],
        json!([])
    );
    assert_defaults_agree(&explicit, &minimal);
}

#[test]
fn gateway_schema_defaults_are_the_plugin_defaults() {
    let minimal = json!({
        "issuers": [{
            "name": "corp",
            "issuer": "https://login.example.com",
            "jwks": {"discovery": true, "upstream": "corp_idp"},
            "gateway": {"metadata": true, "upstream": "corp_idp"}
        }],
        "gateway": {"base_path": "/oauth2", "public_origins": ["https://api.example.com"]}
    });
    let schema = schema();
    let defs = &schema["$defs"];
    let mut explicit = minimal.clone();
    fill_defaults(&mut explicit["gateway"], &defs["gateway"]);
    fill_defaults(
        &mut explicit["issuers"][0]["gateway"],
        &defs["issuerGateway"],
    );
    assert_eq!(explicit["gateway"]["route_header"], "x-tollgate-as");
    assert_eq!(explicit["gateway"]["max_body_bytes"], 65_536);
    assert_eq!(explicit["issuers"][0]["gateway"]["endpoints"], json!({}));
    assert_defaults_agree(&explicit, &minimal);
}

#[test]
fn sender_constraint_schema_defaults_are_the_plugin_defaults() {
    // Each section present but partly written, so the defaults of its members are filled in.
    let minimal = json!({
        "issuers": [{
            "name": "corp",
            "issuer": "https://login.example.com",
            "jwks": {"uri": "https://login.example.com/jwks", "upstream": "corp_idp"},
            "dpop": {"require_nonce": true},
            "mtls": {}
        }],
        "routes": [{"require": {"dpop": "required"}}],
        "sender_constraint": {"client_certificate": {"from": "xfcc"}}
    });
    let schema = schema();
    let defs = &schema["$defs"];
    let mut explicit = minimal.clone();
    fill_defaults(&mut explicit["issuers"][0]["dpop"], &defs["dpop"]);
    fill_defaults(&mut explicit["issuers"][0]["mtls"], &defs["mtls"]);
    fill_defaults(
        &mut explicit["sender_constraint"],
        &defs["senderConstraint"],
    );
    // The `xfcc` branch of clientCertificate.
    fill_defaults(
        &mut explicit["sender_constraint"]["client_certificate"],
        &defs["clientCertificate"]["oneOf"][1],
    );
    assert_eq!(
        explicit["issuers"][0]["dpop"]["algorithms"],
        json!(["ES256", "EdDSA"])
    );
    assert_eq!(explicit["issuers"][0]["mtls"]["mode"], "off");
    assert_eq!(
        explicit["sender_constraint"]["client_certificate"]["header"],
        "x-forwarded-client-cert"
    );
    assert_defaults_agree(&explicit, &minimal);
    // The client-cert branch's header default too.
    let mut minimal = minimal;
    minimal["sender_constraint"] = json!({"client_certificate": {"from": "client-cert"}});
    let mut explicit = minimal.clone();
    fill_defaults(
        &mut explicit["sender_constraint"]["client_certificate"],
        &defs["clientCertificate"]["oneOf"][2],
    );
    assert_eq!(
        explicit["sender_constraint"]["client_certificate"]["header"],
        "client-cert"
    );
    assert_defaults_agree(&explicit, &minimal);
}

/// Routes' upstream_token rules, with each sign rule's claim mapping in name order: the plugin
/// keeps its default mapping in its own order and a written one in name order, which is the
/// same mapping (the order of a JWT's claims means nothing).
fn upstream_rules(rules: &[UpstreamRule]) -> String {
    let rules: Vec<String> = rules
        .iter()
        .map(|r| match r {
            UpstreamRule::Exchange(x) => format!("{x:?}"),
            UpstreamRule::Sign(s) => {
                let mut claims = s.claims.clone();
                claims.sort();
                format!(
                    "Sign({:?}, {}, {:?}, {claims:?})",
                    s.audience, s.lifetime_s, s.placement
                )
            }
        })
        .collect();
    format!("{rules:?}")
}

#[test]
fn upstream_token_schema_defaults_are_the_plugin_defaults() {
    // Issue 17: an issuer's token_exchange, both kinds of route rule, backend_token and the
    // exchange cache, each written with only its required members.
    let minimal = json!({
        "issuers": [{
            "name": "corp",
            "issuer": "https://login.example.com",
            "jwks": {"uri": "https://login.example.com/jwks", "upstream": "corp_idp"},
            "token_exchange": {
                "endpoint": "https://login.example.com/token",
                "upstream": "corp_idp",
                "client_id": "gateway",
                "client_secret": "change-me"
            }
        }],
        "backend_token": {
            "issuer": "https://gateway.example.com",
            "keys": [{
                "kty": "OKP", "crv": "Ed25519", "kid": "k1",
                "x": "tWZDpF4-sJNVO1QzV1FC9s7AIrDoxW1XfVV7pmQOa1A",
                "d": "8Gw2AvLlLZJtFpY8Vqr9CrOtcL6DYugjgG--bbO6C5k"
            }]
        },
        "cache": {},
        "routes": [
            {"require": {"upstream_token": {"exchange": {"audience": "https://next.example.com"}}}},
            {"require": {"upstream_token": {"sign": {"audience": "orders"}}}}
        ]
    });
    let schema = schema();
    let defs = &schema["$defs"];
    let mut explicit = minimal.clone();
    fill_defaults(
        &mut explicit["issuers"][0]["token_exchange"],
        &defs["tokenExchange"],
    );
    fill_defaults(&mut explicit["backend_token"], &defs["backendToken"]);
    fill_defaults(&mut explicit["cache"], &defs["cache"]);
    fill_defaults(
        &mut explicit["routes"][0]["require"]["upstream_token"]["exchange"],
        &defs["exchange"],
    );
    fill_defaults(
        &mut explicit["routes"][1]["require"]["upstream_token"]["sign"],
        &defs["sign"],
    );
    assert_eq!(
        explicit["backend_token"]["jwks_path"],
        "/.well-known/tollgate/jwks.json"
    );
    assert_eq!(
        explicit["routes"][1]["require"]["upstream_token"]["sign"]["header"],
        "x-tollgate-jwt"
    );
    assert_eq!(explicit["cache"]["exchange_entries"], 4096);
    assert_defaults_agree(&explicit, &minimal);
}

/// The ```` ```json tollgate-config ```` blocks of a Markdown text.
fn tagged_config_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().starts_with("```");
        match current.as_mut() {
            Some(block) if fence => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None if fence => {
                let info = line.trim_start().trim_start_matches('`');
                let mut words = info.split_whitespace();
                if words.next() == Some("json") && words.any(|w| w == "tollgate-config") {
                    current = Some(String::new());
                }
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn readme_configuration_example_is_valid() {
    let Ok(readme) = fs::read_to_string(README) else {
        eprintln!("skipped: no README.md");
        return;
    };
    let blocks = tagged_config_blocks(&readme);
    if blocks.is_empty() {
        eprintln!("skipped: README.md has no ```json tollgate-config block");
        return;
    }
    let validator = validator();
    for (i, block) in blocks.iter().enumerate() {
        let value: Value =
            serde_json::from_str(block).unwrap_or_else(|e| panic!("README block {i}: {e}"));
        assert_no_failures(
            &format!("README block {i}: schema"),
            &schema_errors(&validator, &value),
        );
        if let Err(e) = FilterConfig::parse(block.as_bytes()) {
            panic!("README block {i}: plugin: {e}");
        }
    }
}

#[test]
fn readme_blocks_are_found() {
    let markdown = "text\n```json tollgate-config\n{\"a\": 1}\n```\n```json\n{}\n```\n";
    assert_eq!(
        tagged_config_blocks(markdown),
        vec!["{\"a\": 1}\n".to_owned()]
    );
}

/// `explicit` (a configuration with the schema's defaults written out) is valid and compiles to
/// the same as `minimal` (the same configuration relying on the plugin's defaults).
fn assert_defaults_agree(explicit: &Value, minimal: &Value) {
    assert_no_failures(
        "defaults written out",
        &schema_errors(&validator(), explicit),
    );
    for (with_defaults, without) in compiled(explicit).into_iter().zip(compiled(minimal)) {
        assert_eq!(
            with_defaults, without,
            "the schema's defaults differ from the plugin's"
        );
    }
}
