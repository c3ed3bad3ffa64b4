"""The shipped example and configuration handling, checked with the real Envoy binary."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import time

import pytest
from jwcrypto import jwk

import envoy
import pki
import stack as rig_stack
from procs import ROOT, port_open

EXAMPLE = ROOT / "envoy-example" / "envoy.yaml"
DEMO_PORTS = (10000, 10443, 9901, 9100, 9200, 9300, 9400)
README = ROOT / "README.md"


def load_demo():
    """envoy-example/demo.py as a module (its DPOP_FN, the one-line proof generator)."""
    spec = importlib.util.spec_from_file_location("tollgate_demo", ROOT / "envoy-example" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def readme_block(tag: str) -> str:
    """The README's ```sh <tag> block."""
    m = re.search(r"^```sh " + re.escape(tag) + r"\n(.*?)^```$", README.read_text(), re.S | re.M)
    assert m, f"README.md has no ```sh {tag} block"
    return m.group(1)


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
    """The demo runs exactly the configuration the end-to-end tests exercise: the standard
    stack's, plus the authorization routes (stack.with_authorization) and the upstream-token
    routes (stack.with_upstream_tokens) its own check calls: stack.demo_plugin_config()."""
    tested = rig_stack.demo_plugin_config()
    assert embedded_plugin_config(EXAMPLE.read_text()) == tested


def test_example_passes_envoy_validate(wasm, tmp_path):
    """Validated where the demo runs it from (its files relative to the working directory):
    here a copy of that layout, the wasm and a PKI such as the demo makes at start
    (target/demo/pki), so a running demo's files are left alone."""
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "tollgate.wasm").symlink_to(wasm)
    pki.make(tmp_path / "target" / "demo" / "pki")
    r = subprocess.run(
        [str(envoy.envoy_binary()), "--mode", "validate", "-c", str(EXAMPLE), "--disable-hot-restart"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
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
    # 9 bearer calls, 6 on the DPoP route, 5 on the mTLS route, 11 on the AuthZEN, step-up and
    # subscription routes, 2 for the protected-resource metadata, 5 for the upstream tokens
    # (envoy-example/demo.py check())
    assert r.stdout.count(" ok ") == 38 and "BAD" not in r.stdout, r.stdout
    for name in ("DPoP token with its proof", "opaque DPoP token with its proof",
                 "mTLS token with its certificate", "opaque mTLS token with its certificate"):
        assert f"ok  {name}: " in r.stdout, r.stdout
    assert not any(port_open(p) for p in DEMO_PORTS), "the demo left a server running"


def test_readme_dpop_and_mtls_commands(wasm, tmp_path):
    """README's DPoP and mTLS commands, run as written (bash, from the repository root)
    against the running demo: each bound token passes with its proof or certificate, and the
    upstream sees the binding; without them it is refused. The demo prints the same one-line
    proof generator as README."""
    busy = [p for p in DEMO_PORTS if port_open(p)]
    if busy:
        pytest.skip(f"demo ports in use: {busy}")
    dpop_fn = load_demo().DPOP_FN
    dpop_block, mtls_block = readme_block("demo-dpop"), readme_block("demo-mtls")
    authz_block = readme_block("demo-authz")
    upstream_block = readme_block("demo-upstream")
    assert dpop_fn in dpop_block.splitlines()
    out_path = tmp_path / "demo.out"
    with open(out_path, "wb") as out:
        demo = subprocess.Popen([str(ROOT / "envoy-example" / "run")], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops everything" not in out_path.read_text():
            assert demo.poll() is None, out_path.read_text()
            assert time.monotonic() < deadline, out_path.read_text()
            time.sleep(0.2)
        assert any(line.strip() == dpop_fn for line in out_path.read_text().splitlines())
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", dpop_block + mtls_block], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        authz = subprocess.run(["bash", "-euo", "pipefail", "-c", authz_block], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
        upstream = subprocess.run(["bash", "-euo", "pipefail", "-c", upstream_block], cwd=ROOT,
                                  capture_output=True, text=True, timeout=120)
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    jkt = re.search(r"^dpop;jkt=([A-Za-z0-9_-]{43})$", out, re.M)
    key = jwk.JWK.from_pem((ROOT / "target" / "demo" / "dpop-key.pem").read_bytes())
    assert jkt and jkt.group(1) == key.thumbprint(), out  # the README key's RFC 7638 thumbprint
    # (after the DPoP refusal's body, which ends without a newline)
    x5t = re.search(r"mtls;x5t=([A-Za-z0-9_-]{43})\n([A-Za-z0-9_-]{43})$", out, re.M)
    assert x5t and x5t.group(1) == x5t.group(2), out  # Tollgate's binding is openssl's thumbprint
    assert out.count("HTTP/1.1 401 ") + out.count("HTTP/2 401 ") == 4, out
    assert 'error="invalid_dpop_proof", error_description="the request carries no DPoP proof"' in out
    assert 'error_description="the token is DPoP-bound: present it with the DPoP scheme"' in out
    assert out.count('error_description="the token is bound to a client certificate, and none was presented"') == 2
    # The authorization block: owner 200, another's document 403, admin 200, the step-up
    # challenge, subscribed client with its header 200, without it 400.
    assert authz.returncode == 0, authz.stdout + authz.stderr
    lines = authz.stdout.splitlines()
    assert lines[0] == "200" and lines[2] == "200" and lines[5:] == ["200", "400"], authz.stdout
    assert json.loads(lines[4]) == ["http://127.0.0.1:10000/api",
                                    ["http://127.0.0.1:9100", "http://127.0.0.1:9200/o"]], lines[4]
    assert 'resource_metadata="http://127.0.0.1:10000/.well-known/oauth-protected-resource/api"' in lines[3]
    assert json.loads(lines[1]) == {"error": "insufficient_permissions",
                                    "error_description": "the policy decision point denied this request"}
    assert lines[3].lower().startswith("www-authenticate: bearer realm=\"tollgate\", "
                                       "error=\"insufficient_user_authentication\""), lines[3]
    assert 'acr_values="urn:tollgate:loa:2"' in lines[3] and 'max_age="300"' in lines[3], lines[3]
    # The upstream-token block (issue 17): the exchanged token's aud, sub and act; the caller's
    # identity headers; the JWKS' Cache-Control; the signed token's iss, aud, orig_iss and
    # client_id, as joserfc verified them with the gateway's JWKS.
    assert upstream.returncode == 0, upstream.stdout + upstream.stderr
    assert upstream.stdout.splitlines() == [
        '["https://next.test","demo-client",{"sub":"tollgate-exchanger"}]',
        '["demo-client","http://127.0.0.1:9100"]',
        "cache-control: public, max-age=300",
        '["http://127.0.0.1:10000", "demo-upstream", "http://127.0.0.1:9200/o", "dot-opaque"]',
    ], upstream.stdout
    assert not any(port_open(p) for p in DEMO_PORTS), "the demo left a server running"
