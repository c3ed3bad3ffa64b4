//! Keeps the Kong and APISIX examples in step with `plugin-config/schema.json` and the plugin:
//!
//! - `kong-example/tollgate.meta.json` is exactly what `scripts/gen-kong-meta` makes of
//!   schema.json (one source of truth);
//! - its `config_schema` is a draft-4 schema (Kong validates filter configuration with
//!   lua-resty-ljsonschema, draft 4 only) that uses only keywords that validator implements,
//!   and it gives the same verdict as schema.json on every example in `plugin-config/examples`;
//! - the Tollgate configurations in `kong-example/kong.yml` and `apisix-example/` pass the
//!   schema and the plugin, and name their upstreams as `host:port`, as those hosts need.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use jsonschema::Validator;
use serde_json::{json, Value};
use tollgate::config::FilterConfig;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const DRAFT_4: &str = "http://json-schema.org/draft-04/schema#";
const EXPECTED_PATHS: &str = "expected-paths.json";

/// The keywords lua-resty-ljsonschema (Kong's validator) implements, plus the annotations it
/// reads past. Anything else in a schema would be ignored there, i.e. not checked.
const KONG_KEYWORDS: [&str; 33] = [
    "$schema",
    "$ref",
    "definitions",
    "title",
    "description",
    "default",
    "format",
    "type",
    "enum",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "properties",
    "patternProperties",
    "additionalProperties",
    "required",
    "dependencies",
    "minProperties",
    "maxProperties",
    "items",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

fn path(relative: &str) -> PathBuf {
    Path::new(ROOT).join(relative)
}

fn read_text(relative: &str) -> String {
    fs::read_to_string(path(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn read_json(relative: &str) -> Value {
    serde_json::from_str(&read_text(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn source_validator() -> Validator {
    jsonschema::draft202012::new(&read_json("plugin-config/schema.json")).unwrap()
}

fn config_schema() -> Value {
    read_json("kong-example/tollgate.meta.json")["config_schema"].clone()
}

/// `schema` as Kong's validator reads it: draft 4, formats not checked (lua-resty-ljsonschema
/// checks only date and time formats; Tollgate's schema has none).
fn draft4_validator(schema: &Value) -> Validator {
    jsonschema::draft4::options()
        .should_validate_formats(false)
        .build(schema)
        .unwrap_or_else(|e| panic!("not a usable draft-4 schema: {e}"))
}

/// Every example configuration: (kind/name, JSON), `valid` first.
fn examples() -> Vec<(String, Value)> {
    let mut all = Vec::new();
    for kind in ["valid", "invalid"] {
        let dir = path(&format!("plugin-config/examples/{kind}"));
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json") && n != EXPECTED_PATHS)
            .collect();
        names.sort();
        for name in names {
            let value = read_json(&format!("plugin-config/examples/{kind}/{name}"));
            all.push((format!("{kind}/{name}"), value));
        }
    }
    all
}

fn assert_no_failures(what: &str, failures: &[String]) {
    assert!(failures.is_empty(), "{what}:\n  {}", failures.join("\n  "));
}

#[test]
fn meta_json_is_generated_from_schema_json() {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = Command::new(&python)
        .arg(path("scripts/gen-kong-meta"))
        .arg("--check")
        .output()
        .unwrap_or_else(|e| panic!("{python} (needed for scripts/gen-kong-meta): {e}"));
    assert!(
        out.status.success(),
        "scripts/gen-kong-meta --check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn meta_json_holds_a_draft4_config_schema() {
    let meta = read_json("kong-example/tollgate.meta.json");
    let keys: Vec<&String> = meta.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["config_schema"], "Kong reads config_schema only");
    let schema = config_schema();
    assert_eq!(schema["$schema"], DRAFT_4);
    // Kong checks config_schema against the draft-4 meta-schema when it starts.
    let meta_schema = jsonschema::draft4::new(&json!({ "$ref": DRAFT_4 })).unwrap();
    assert!(
        !meta_schema.is_valid(&json!({"type": "text"})),
        "the meta-schema check is not working"
    );
    let errors: Vec<String> = meta_schema
        .iter_errors(&schema)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert_no_failures("config_schema against the draft-4 meta-schema", &errors);
}

/// Walks every subschema of a draft-4 schema, with its JSON pointer.
fn each_subschema<'a>(node: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    let Some(object) = node.as_object() else {
        return;
    };
    out.push((at.clone(), node));
    for (key, value) in object {
        let here = format!("{at}/{key}");
        match key.as_str() {
            "properties" | "patternProperties" | "definitions" | "dependencies" => {
                for (name, sub) in value.as_object().unwrap() {
                    each_subschema(sub, format!("{here}/{name}"), out);
                }
            }
            "allOf" | "anyOf" | "oneOf" => {
                for (i, sub) in value.as_array().unwrap().iter().enumerate() {
                    each_subschema(sub, format!("{here}/{i}"), out);
                }
            }
            "not" | "items" | "additionalProperties" | "additionalItems" => {
                each_subschema(value, here, out)
            }
            _ => {}
        }
    }
}

#[test]
fn config_schema_uses_only_what_kongs_validator_implements() {
    let schema = config_schema();
    let definitions: BTreeSet<String> = schema["definitions"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut nodes = Vec::new();
    each_subschema(&schema, "#".to_owned(), &mut nodes);
    assert!(
        nodes.len() > 100,
        "the walk found only {} subschemas",
        nodes.len()
    );
    let mut failures = Vec::new();
    for (at, node) in nodes {
        let object = node.as_object().unwrap();
        for key in object.keys() {
            if !KONG_KEYWORDS.contains(&key.as_str()) {
                failures.push(format!("{at}: {key} (draft 4 / Kong would ignore it)"));
            }
        }
        if let Some(target) = object.get("$ref") {
            if object.len() > 1 {
                failures.push(format!("{at}: $ref with siblings (draft 4 ignores them)"));
            }
            let name = target.as_str().unwrap().strip_prefix("#/definitions/");
            if !name.is_some_and(|n| definitions.contains(n)) {
                failures.push(format!("{at}: $ref {target} is not one of the definitions"));
            }
        }
        // Kong matches patterns with PCRE (ngx.re), which has no \u escape.
        let patterns = object
            .get("pattern")
            .and_then(Value::as_str)
            .into_iter()
            .chain(
                object
                    .get("patternProperties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|p| p.keys().map(String::as_str)),
            );
        for pattern in patterns {
            if pattern.contains("\\u") {
                failures.push(format!("{at}: pattern {pattern:?} uses \\u"));
            }
        }
    }
    assert_no_failures("config_schema keywords", &failures);
}

#[test]
fn kong_schema_gives_schema_json_verdict_on_every_example() {
    let source = source_validator();
    let kong = draft4_validator(&config_schema());
    let examples = examples();
    assert!(examples.len() > 100, "only {} examples", examples.len());
    let mut failures = Vec::new();
    for (name, value) in &examples {
        let want = source.is_valid(value);
        let got = kong.is_valid(value);
        // Draft 4 as the jsonschema crate reads it: 300.0 is not an "integer" (draft 6 and later,
        // and Kong's validator with its math.fmod test, say it is). The plugin refuses it anyway.
        let float_integer = name == "invalid/semantic-integer-written-as-float.json";
        if want != got && !(float_integer && want && !got) {
            failures.push(format!(
                "{name}: schema.json says {}, config_schema says {}",
                verdict(want),
                verdict(got)
            ));
        }
        // The examples' own rules, restated: valid ones pass, refused ones are refused.
        let refused_by_schema =
            name.starts_with("invalid/") && !name.starts_with("invalid/semantic-");
        if name.starts_with("valid/") && !got || refused_by_schema && got {
            failures.push(format!("{name}: config_schema says {}", verdict(got)));
        }
    }
    assert_no_failures("verdicts that differ", &failures);
}

fn verdict(valid: bool) -> &'static str {
    if valid {
        "valid"
    } else {
        "invalid"
    }
}

/// The conversion matters: schema.json read as draft 4 without it (its `$schema` swapped, as
/// Kong does to any config_schema) lets through configurations the generated one refuses.
#[test]
fn without_the_conversion_kong_would_accept_invalid_examples() {
    let mut naive = read_json("plugin-config/schema.json");
    naive["$schema"] = json!(DRAFT_4);
    let naive = draft4_validator(&naive);
    let kong = draft4_validator(&config_schema());
    let slipped: Vec<String> = examples()
        .into_iter()
        .filter(|(name, v)| name.starts_with("invalid/") && naive.is_valid(v) && !kong.is_valid(v))
        .map(|(name, _)| name)
        .collect();
    // const, if/then, contains, propertyNames and dependentRequired each guard some of these.
    for expected in [
        "invalid/discovery-true-issuer-not-url.json",
        "invalid/anonymous-with-require.json",
        "invalid/opaque-tokens-without-introspection.json",
        "invalid/claim-name-empty-segment.json",
    ] {
        assert!(
            slipped.iter().any(|s| s == expected),
            "{expected} is not among the examples only the conversion catches: {slipped:?}"
        );
    }
}

/// The JSON objects written after each `config:` key of a YAML file (flow mappings in JSON
/// syntax, as kong.yml writes them).
fn yaml_json_configs(yaml: &str) -> Vec<Value> {
    let mut configs = Vec::new();
    let mut offset = 0;
    for line in yaml.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("config:") {
            let start = offset + (line.len() - rest.len());
            let mut stream =
                serde_json::Deserializer::from_str(&yaml[start..]).into_iter::<Value>();
            let value = stream
                .next()
                .unwrap_or_else(|| panic!("nothing after config: at byte {start}"))
                .unwrap_or_else(|e| panic!("config at byte {start} is not a JSON object: {e}"));
            configs.push(value);
        }
        offset += line.len();
    }
    configs
}

/// Every `upstream` value in a Tollgate configuration.
fn upstreams(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("upstream", Value::String(s)) => out.push(s.clone()),
                    _ => upstreams(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| upstreams(v, out)),
        _ => {}
    }
}

/// `host:port` or `[v6]:port`, what Kong's and APISIX's dispatch_http_call connect to.
fn is_host_port(upstream: &str) -> bool {
    let Some((host, port)) = upstream.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
}

#[test]
fn host_port_check_is_right() {
    for good in ["127.0.0.1:8080", "[::1]:8443", "as.example.com:443"] {
        assert!(is_host_port(good), "{good}");
    }
    for bad in [
        "as1",
        "as.example.com",
        "[::1]",
        "::1:8443",
        "as:0",
        "as:http",
        "a b:1",
    ] {
        assert!(!is_host_port(bad), "{bad}");
    }
}

/// A Tollgate configuration for Kong or APISIX: valid for the schema and the plugin, every
/// upstream `host:port`, and no empty list (Kong re-encodes `config` with lua-cjson before
/// the filter sees it, and lua-cjson may write an empty list as {}).
fn check_host_config(what: &str, config: &Value, failures: &mut Vec<String>) {
    for e in source_validator().iter_errors(config) {
        failures.push(format!("{what}: schema: {}: {e}", e.instance_path));
    }
    if let Err(e) = FilterConfig::parse(config.to_string().as_bytes()) {
        failures.push(format!("{what}: plugin: {e}"));
    }
    let mut names = Vec::new();
    upstreams(config, &mut names);
    if names.is_empty() {
        failures.push(format!("{what}: names no upstream"));
    }
    for name in names.iter().filter(|n| !is_host_port(n)) {
        failures.push(format!("{what}: upstream {name:?} is not host:port"));
    }
    if has_empty_list(config) {
        failures.push(format!("{what}: has an empty list"));
    }
}

fn has_empty_list(value: &Value) -> bool {
    match value {
        Value::Array(items) => items.is_empty() || items.iter().any(has_empty_list),
        Value::Object(map) => map.values().any(has_empty_list),
        _ => false,
    }
}

#[test]
fn kong_yml_filter_configs_pass_kongs_schema_and_the_plugin() {
    let yaml = read_text("kong-example/kong.yml");
    assert!(yaml.contains("_format_version: \"3.0\""));
    let configs = yaml_json_configs(&yaml);
    assert_eq!(configs.len(), 2, "kong.yml has two filter configurations");
    assert_eq!(
        yaml.matches("- name: tollgate\n").count(),
        configs.len(),
        "every filter is named tollgate, after tollgate.wasm / tollgate.meta.json"
    );
    let kong = draft4_validator(&config_schema());
    let mut failures = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        let what = format!("kong.yml config {i}");
        for e in kong.iter_errors(config) {
            failures.push(format!("{what}: config_schema: {}: {e}", e.instance_path));
        }
        check_host_config(&what, config, &mut failures);
    }
    // One JWT issuer with JWKS by discovery, one opaque-token issuer with introspection.
    let issuers = &configs[0]["issuers"];
    assert_eq!(issuers[0]["jwks"]["discovery"], true);
    assert!(issuers[1]["introspection"].is_object() && issuers[1].get("jwks").is_none());
    assert_no_failures("kong.yml", &failures);
}

#[test]
fn apisix_route_conf_passes_the_schema_and_the_plugin() {
    let route = read_json("apisix-example/route.json");
    let conf = route["plugins"]["tollgate"]["conf"]
        .as_str()
        .expect("APISIX takes the filter configuration as the string plugins.<name>.conf");
    let config: Value = serde_json::from_str(conf).unwrap();
    assert_eq!(
        config,
        read_json("apisix-example/tollgate.json"),
        "route.json's conf is not tollgate.json (see apisix-example/README.md to rebuild it)"
    );
    let mut failures = Vec::new();
    check_host_config("route.json conf", &config, &mut failures);
    assert_no_failures("apisix-example", &failures);
    let issuers = &config["issuers"];
    assert_eq!(issuers[0]["jwks"]["discovery"], true);
    assert!(issuers[1]["introspection"].is_object());
    let yaml = read_text("apisix-example/config.yaml");
    assert!(
        yaml.contains("wasm:\n  plugins:\n    - name: tollgate "),
        "config.yaml loads a wasm plugin named tollgate"
    );
}
