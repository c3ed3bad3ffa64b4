"""The shipped example and configuration handling, checked with the real Envoy binary."""

from __future__ import annotations

import json
import subprocess

import pytest

import envoy
import stack as rig_stack
from procs import ROOT, port_open

EXAMPLE = ROOT / "envoy-example" / "envoy.yaml"
DEMO_PORTS = (10000, 9901, 9100, 9200, 9300)


def embedded_plugin_config(yaml_text: str) -> dict:
    """The JSON block under `value: |` in envoy.yaml (no YAML library needed for one block)."""
    lines = yaml_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "value: |") + 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for line in lines[start:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line)
    return json.loads("\n".join(block))


def test_example_plugin_config_is_the_tested_one():
    """The demo runs exactly the configuration the end-to-end tests exercise."""
    assert embedded_plugin_config(EXAMPLE.read_text()) == rig_stack.plugin_config(9100, 9200, 10000)


def test_example_passes_envoy_validate(wasm):
    r = subprocess.run(
        [str(envoy.envoy_binary()), "--mode", "validate", "-c", str(EXAMPLE), "--disable-hot-restart"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout + r.stderr


@pytest.mark.parametrize(
    "config, path",
    [
        ({"issuers": []}, "issuers"),
        ({"issuers": [{"name": "a", "issuer": "https://a", "jwks": {"uri": "https://a/k", "upstream": "a"},
                       "algorithms": ["none"]}]}, "issuers[0].algorithms[0]"),
        ({"issuers": [{"name": "a", "issuer": "https://a", "jwks": {"uri": "https://a/k"}}]},
         "issuers[0].jwks.upstream"),
        ({"issuers": [{"name": "a", "issuer": "https://a", "jwks": {"uri": "https://a/k", "upstream": "a"}}],
          "routes": [{"match": {"prefix": "/"}, "requires": {}}]}, "routes[0].requires"),
    ],
)
def test_bad_configuration_is_refused_with_its_json_path(wasm, tmp_path, config, path):
    bootstrap = envoy.render(1, 2, wasm, config, {"a": None, "upstream": None})
    envoy.assert_refused_at(bootstrap, tmp_path, path)


def test_unparseable_configuration_is_refused(wasm, tmp_path):
    bootstrap = envoy.render(1, 2, wasm, "{not json", {"upstream": None})
    ok, output = envoy.validate(bootstrap, tmp_path)
    assert not ok
    assert "invalid configuration" in output and "panic" not in output


def test_demo_runs(wasm):
    busy = [p for p in DEMO_PORTS if port_open(p)]
    if busy:
        pytest.skip(f"demo ports in use: {busy}")
    r = subprocess.run([str(ROOT / "envoy-example" / "run"), "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" ok ") == 9, r.stdout
    assert not any(port_open(p) for p in DEMO_PORTS), "the demo left a server running"
