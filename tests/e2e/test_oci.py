"""The OCI artifact: scripts/build-oci's two image layouts, round-tripped through a real registry
and loaded, as pulled, into the real Envoy.

What runs: Debian's `docker-registry` (distribution 2.8), started here with its own config file
(storage in a temp dir, `http.addr` 127.0.0.1 on a free port) and stopped by PID; `skopeo` (Debian
1.9.3) pushes each layout (`oci:<layout>:<tag>` -> `docker://127.0.0.1:P/tollgate:<tag>`) and pulls
it back into a fresh layout; the registry's HTTP API is read directly; the module extracted from
each pulled layout runs in Envoy 1.40 in front of the real oidc-provider and the echoing upstream.
`scripts/setup` installs the two Debian packages.

skopeo and the "oci" variant (config and layers of media types no container tool knows): older
skopeo (1.4) refused to copy such images ("unsupported MIME type for compression:
application/vnd.wasm.content.layer.v1+wasm", containers/skopeo#1438) because it wanted to gzip the
uncompressed layer for a registry destination and could not rename the layer's MIME type. The
containers/image 5.23 that Debian's skopeo 1.9.3 is built with first asks the manifest whether a
layer's compression may change (`OCI1.CanChangeLayerCompression`), which is false for any manifest
whose config is not an OCI image config and for unknown layer types; `skopeo --debug copy` says
`Compression change for blob ... ("application/vnd.module.wasm.content.layer.v1+wasm") not
supported` and copies it unmodified. So no special option is needed; every copy here still passes
`--preserve-digests`, which makes skopeo fail rather than rewrite a manifest or blob, and the test
checks the digests the registry and the pulled layouts hold against the built ones.

The digest Istio checks: for an `oci://` url, istio-agent compares `WasmPlugin.sha256` with the
hex digest of the image *manifest* it fetched (pkg/wasm/cache.go compares it with what
`ImageFetcher.PrepareFetch` returns, `img.Digest()`), not with the module's sha256 (which is what it
checks for http(s) urls). `test_rendered_wasmplugin_pins_the_served_manifest` checks the rendered
manifest against the digest the registry serves for exactly the url in it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

import envoy
import servers
import tokens
from procs import ROOT, Proc, free_port

BUILD_OCI = ROOT / "scripts" / "build-oci"
TEMPLATE = ROOT / "istio-example" / "wasmplugin.yaml"
REPO = "tollgate"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"
WASM_CONFIG = "application/vnd.module.wasm.config.v1+json"
WASM_CONTENT = "application/vnd.module.wasm.content.layer.v1+wasm"
VARIANTS = ("compat", "oci")


def crate_version() -> str:
    m = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "Cargo.toml").read_text(), re.M)
    assert m, "no version in Cargo.toml"
    return m.group(1)


VERSION = crate_version()
# Both variants go to one repository: the compat image under the crate version (what the Istio
# example points at), the oci variant under "<version>-oci" (istio-example/README.md does the same).
TAGS = {"compat": VERSION, "oci": f"{VERSION}-oci"}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed: run scripts/setup (Debian packages docker-registry, skopeo)")
    return path


# --- the layouts ------------------------------------------------------------------------------


class Layout:
    """An OCI image layout on disk, read the way a registry client reads it."""

    def __init__(self, path: Path):
        self.path = path

    def blob(self, digest: str) -> bytes:
        algo, hex_ = digest.split(":", 1)
        assert algo == "sha256"
        data = (self.path / "blobs" / "sha256" / hex_).read_bytes()
        assert sha256_hex(data) == hex_, f"blob {digest} in {self.path} does not match its digest"
        return data

    def index(self) -> dict:
        return json.loads((self.path / "index.json").read_text())

    def manifest_descriptor(self, tag: str) -> dict:
        found = [m for m in self.index()["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag]
        assert len(found) == 1, f"{self.path}: {len(found)} manifests tagged {tag}"
        return found[0]

    def manifest(self, tag: str) -> tuple[str, bytes]:
        desc = self.manifest_descriptor(tag)
        data = self.blob(desc["digest"])
        assert len(data) == desc["size"]
        return desc["digest"], data


def build_oci(wasm: Path, out: Path, image: str | None = None, epoch: str | None = None,
              istio_variant: str | None = None) -> dict[str, str]:
    """Runs scripts/build-oci on the given module; returns {variant: manifest digest} read back from
    the layouts (and checks the script printed the same)."""
    argv = [str(BUILD_OCI), "--wasm", str(wasm), "--out", str(out)]
    if image:
        argv += ["--image", image]
    if istio_variant:
        argv += ["--istio-variant", istio_variant]
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    if epoch is not None:
        env["SOURCE_DATE_EPOCH"] = epoch
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    digests = {v: Layout(out / v).manifest_descriptor(VERSION)["digest"] for v in VARIANTS}
    for variant, digest in digests.items():
        assert re.search(rf"^{variant}\s+{digest}\s", r.stdout, re.M), r.stdout
    assert f"sha256:{sha256_hex(wasm.read_bytes())}" in r.stdout
    return digests


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def extract_module(layout: Layout, tag: str) -> bytes:
    """The Wasm module, taken out the way Istio's image fetcher accepts the two variants: compat =
    exactly one tar+gzip layer with a file named plugin.wasm; oci = exactly two layers, one of
    them the raw module."""
    _, data = layout.manifest(tag)
    manifest = json.loads(data)
    assert manifest["mediaType"] == OCI_MANIFEST
    layers = manifest["layers"]
    if manifest["config"]["mediaType"] == OCI_CONFIG:
        assert manifest["annotations"]["module.wasm.image/variant"] == "compat"
        assert len(layers) == 1 and layers[0]["mediaType"] == OCI_LAYER_TGZ
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layout.blob(layers[0]["digest"])))) as tar:
            members = tar.getmembers()
            assert [m.name for m in members] == ["plugin.wasm"]
            m = members[0]
            assert m.isreg() and m.mode == 0o644 and (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
            return tar.extractfile(m).read()
    assert manifest["config"]["mediaType"] == WASM_CONFIG
    assert [layer["mediaType"] for layer in layers] == [WASM_CONFIG, WASM_CONTENT]
    runtime = json.loads(layout.blob(layers[0]["digest"]))
    assert runtime["type"] == "envoy_proxy"
    return layout.blob(layers[1]["digest"])


@pytest.fixture(scope="module")
def layouts(wasm, registry, tmp_path_factory) -> dict:
    """Two builds of the same module into two directories (the first renders the Istio manifest
    for this test's registry)."""
    base = tmp_path_factory.mktemp("oci-build")
    image = f"{registry.host}/{REPO}"
    first = build_oci(wasm, base / "a", image=image)
    second = build_oci(wasm, base / "b", image=image)
    return {"a": base / "a", "b": base / "b", "digests": first, "digests_b": second, "image": image}


def test_build_is_reproducible(wasm, layouts, tmp_path):
    """Same module in, same bytes out: both layouts, every blob, and the rendered manifest."""
    assert layouts["digests"] == layouts["digests_b"]
    a, b = files_under(layouts["a"]), files_under(layouts["b"])
    assert sorted(a) == sorted(b)
    assert a == b
    # Only the two variants' blobs, the index and the marker, and the rendered manifest.
    for variant in VARIANTS:
        assert (layouts["a"] / variant / "oci-layout").read_text() == '{"imageLayoutVersion":"1.0.0"}'
        assert len(list((layouts["a"] / variant / "blobs" / "sha256").iterdir())) == 3

    # SOURCE_DATE_EPOCH is the one input besides the module: it sets the tar mtime and `created`,
    # and builds with the same value agree again.
    e1 = build_oci(wasm, tmp_path / "e1", epoch="1700000000")
    e2 = build_oci(wasm, tmp_path / "e2", epoch="1700000000")
    assert e1 == e2 and files_under(tmp_path / "e1") == files_under(tmp_path / "e2")
    assert e1["compat"] != layouts["digests"]["compat"] and e1["oci"] != layouts["digests"]["oci"]
    compat = Layout(tmp_path / "e1" / "compat")
    manifest = json.loads(compat.manifest(VERSION)[1])
    assert manifest["annotations"]["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    layer = gzip.decompress(compat.blob(manifest["layers"][0]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        assert tar.getmembers()[0].mtime == 1700000000
    # Without SOURCE_DATE_EPOCH nothing carries a time: mtime 0, no created field.
    plain = Layout(layouts["a"] / "compat")
    manifest = json.loads(plain.manifest(VERSION)[1])
    assert "org.opencontainers.image.created" not in manifest["annotations"]
    assert "created" not in json.loads(plain.blob(manifest["config"]["digest"]))


def test_layouts_hold_the_module(wasm, layouts):
    module = wasm.read_bytes()
    for variant in VARIANTS:
        layout = Layout(layouts["a"] / variant)
        assert extract_module(layout, VERSION) == module
        manifest = json.loads(layout.manifest(VERSION)[1])
        ann = manifest["annotations"]
        assert ann["org.opencontainers.image.version"] == VERSION
        assert ann["org.opencontainers.image.title"] == "tollgate"
    config = Layout(layouts["a"] / "compat")
    manifest = json.loads(config.manifest(VERSION)[1])
    image_config = json.loads(config.blob(manifest["config"]["digest"]))
    assert (image_config["architecture"], image_config["os"]) == ("wasm", "wasip1")
    layer = gzip.decompress(config.blob(manifest["layers"][0]["digest"]))
    assert image_config["rootfs"]["diff_ids"] == [f"sha256:{sha256_hex(layer)}"]


# --- the registry -----------------------------------------------------------------------------


@dataclass
class Registry:
    proc: Proc
    port: int
    workdir: Path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def skopeo_copy(self, src: str, dest: str) -> str:
        """skopeo copy, plain HTTP to this registry, failing instead of changing any digest."""
        argv = [tool("skopeo"), "--policy", str(self.workdir / "policy.json"), "copy", "--preserve-digests",
                "--src-tls-verify=false", "--dest-tls-verify=false", src, dest]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=180,
                           env={**os.environ, "HOME": str(self.workdir)})
        assert r.returncode == 0, f"{' '.join(argv)}\n{r.stdout}{r.stderr}"
        return r.stdout + r.stderr

    def manifest(self, name: str, reference: str, method: str = "GET") -> requests.Response:
        return requests.request(method, f"{self.url}/v2/{name}/manifests/{reference}",
                                headers={"Accept": OCI_MANIFEST}, timeout=10)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    binary = tool("docker-registry")
    tool("skopeo")
    workdir = tmp_path_factory.mktemp("registry")
    port = free_port()
    # Distribution's config format; nothing from /etc/docker/registry is used.
    (workdir / "config.yml").write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'storage'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: tollgate-test-only\n"
    )
    # skopeo's signature policy for this test only: accept any image (a local test registry).
    (workdir / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}\n')
    proc = Proc("registry", [binary, "serve", str(workdir / "config.yml")], port, workdir / "registry.log")
    proc.start()
    try:
        yield Registry(proc, port, workdir)
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def pushed(registry, layouts) -> dict[str, str]:
    for variant in VARIANTS:
        registry.skopeo_copy(f"oci:{layouts['a'] / variant}:{VERSION}",
                             f"docker://{registry.host}/{REPO}:{TAGS[variant]}")
    return layouts["digests"]


def test_registry_serves_the_built_manifests(registry, layouts, pushed):
    assert requests.get(f"{registry.url}/v2/", timeout=5).status_code == 200
    tags = requests.get(f"{registry.url}/v2/{REPO}/tags/list", timeout=5).json()
    assert sorted(tags["tags"]) == sorted(TAGS.values())
    for variant in VARIANTS:
        layout = Layout(layouts["a"] / variant)
        digest, local = layout.manifest(VERSION)
        assert digest == pushed[variant]
        r = registry.manifest(REPO, TAGS[variant])
        assert r.status_code == 200, r.text
        assert r.headers["Docker-Content-Digest"] == digest
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.content == local  # byte for byte: skopeo pushed the manifest as built
        head = registry.manifest(REPO, digest, method="HEAD")
        assert head.status_code == 200 and head.headers["Docker-Content-Digest"] == digest
        manifest = r.json()
        if variant == "compat":
            assert manifest["config"]["mediaType"] == OCI_CONFIG
            assert [m["mediaType"] for m in manifest["layers"]] == [OCI_LAYER_TGZ]
        else:
            assert manifest["config"]["mediaType"] == WASM_CONFIG
            assert [m["mediaType"] for m in manifest["layers"]] == [WASM_CONFIG, WASM_CONTENT]
        for desc in [manifest["config"], *manifest["layers"]]:
            blob = requests.get(f"{registry.url}/v2/{REPO}/blobs/{desc['digest']}", timeout=10)
            assert blob.status_code == 200
            assert f"sha256:{sha256_hex(blob.content)}" == desc["digest"] and len(blob.content) == desc["size"]
            assert blob.content == layout.blob(desc["digest"])


@pytest.fixture(scope="module")
def pulled(registry, pushed, wasm, tmp_path_factory) -> dict[str, Path]:
    """Each variant pulled by skopeo into a fresh layout; the module taken out to a file."""
    base = tmp_path_factory.mktemp("oci-pull")
    modules = {}
    for variant in VARIANTS:
        dest = base / variant
        registry.skopeo_copy(f"docker://{registry.host}/{REPO}:{TAGS[variant]}", f"oci:{dest}:{VERSION}")
        layout = Layout(dest)
        digest, _ = layout.manifest(VERSION)
        assert digest == pushed[variant], f"{variant}: pulled manifest {digest} != pushed {pushed[variant]}"
        modules[variant] = base / f"{variant}-plugin.wasm"
        modules[variant].write_bytes(extract_module(layout, VERSION))
    return modules


def test_pulled_module_is_the_built_one(wasm, pulled):
    want = sha256_hex(wasm.read_bytes())
    for variant in VARIANTS:
        assert sha256_hex(pulled[variant].read_bytes()) == want, variant


# --- the pulled module in Envoy ---------------------------------------------------------------


@pytest.fixture(scope="module")
def servers_up(tmp_path_factory):
    """oidc-provider and the echoing upstream, for Envoys running the pulled modules."""
    workdir = tmp_path_factory.mktemp("oci-rig")
    started = []
    try:
        as1_port, up_port = free_port(), free_port()
        started.append(servers.start_upstream(up_port, workdir))
        started.append(servers.start_oidc(as1_port, workdir / "as1-state", workdir))
        yield {"as1": as1_port, "upstream": up_port, "workdir": workdir}
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.mark.parametrize("variant", VARIANTS)
def test_pulled_module_runs_in_envoy(pulled, servers_up, variant):
    issuer = f"http://127.0.0.1:{servers_up['as1']}"
    config = {
        "issuers": [{
            "name": "as1",
            "issuer": issuer,
            "jwks": {"discovery": True, "upstream": "as1"},
            "audiences": ["https://api.test"],
            "algorithms": ["RS256"],
            "require_at_jwt": True,
        }],
        "routes": [{"name": "api", "match": {"prefix": "/api"}, "require": {"scopes": ["read"]}}],
    }
    proc = envoy.start_envoy(pulled[variant], config, {"as1": servers_up["as1"], "upstream": servers_up["upstream"]},
                             log_dir=servers_up["workdir"], name=f"envoy-{variant}")
    try:
        vm = json.loads(proc.config_path.read_text())["static_resources"]["listeners"][0]["filter_chains"][0][
            "filters"][0]["typed_config"]["http_filters"][0]["typed_config"]["config"]["vm_config"]
        assert vm["code"]["local"]["filename"] == str(pulled[variant].resolve())  # the pulled file
        token = tokens.client_credentials(f"{issuer}/token", "demo-client", "demo-secret",
                                          scope="read", resource="https://api.test/jwt")["access_token"]
        ok = requests.get(f"{proc.url}/api/orders", headers={"Authorization": f"Bearer {token}"}, timeout=15)
        assert ok.status_code == 200, ok.text
        seen = ok.json()
        assert seen["path"] == "/api/orders"  # the upstream's echo, not a local reply
        assert seen["headers"]["x-tollgate-issuer"] == "as1"
        assert seen["headers"]["x-tollgate-client-id"] == "demo-client"

        missing = requests.get(f"{proc.url}/api/orders", timeout=15)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        head, payload, sig = token.split(".")
        sig = sig[:10] + ("B" if sig[10] == "A" else "A") + sig[11:]  # a changed signature byte
        forged = requests.get(f"{proc.url}/api/orders", headers={"Authorization": f"Bearer {head}.{payload}.{sig}"},
                              timeout=15)
        assert forged.status_code == 401
        assert envoy.stats(proc.admin_port, "tollgate.").get("tollgate.issuer.as1.allowed") == 1
    finally:
        proc.stop()


# --- the Istio example ------------------------------------------------------------------------


def spec_field(text: str, name: str) -> str:
    m = re.search(rf"^  {name}: *(\S+) *$", text, re.M)
    assert m, f"no spec.{name} in the rendered WasmPlugin"
    return m.group(1).strip('"')


def plugin_config_block(text: str) -> dict:
    """pluginConfig is written in YAML flow style, i.e. JSON: the indented block after the key."""
    lines = text.splitlines()
    start = lines.index("  pluginConfig:") + 1
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    return json.loads("\n".join(block))


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_wasmplugin_pins_the_served_manifest(registry, layouts, pushed, wasm, tmp_path, variant):
    if variant == "compat":  # the default rendering, from the layouts pushed above
        text = (layouts["a"] / "wasmplugin.yaml").read_text()
    else:
        assert build_oci(wasm, tmp_path, image=layouts["image"], istio_variant="oci") == pushed
        text = (tmp_path / "wasmplugin.yaml").read_text()
    assert not re.search(r"@[A-Z0-9]+@", text), "a placeholder was left unfilled"
    assert "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\n" in text
    for field, value in {"phase": "AUTHN", "failStrategy": "FAIL_CLOSE", "imagePullPolicy": "IfNotPresent"}.items():
        assert spec_field(text, field) == value
    url, sha = spec_field(text, "url"), spec_field(text, "sha256")
    assert url == f"oci://{layouts['image']}:{TAGS[variant]}"
    assert re.fullmatch(r"[a-f0-9]{64}", sha)  # the pattern the WasmPlugin CRD enforces
    # What istio-agent does with this url: fetch the manifest, compare its digest with sha256.
    repo, tag = url.removeprefix(f"oci://{registry.host}/").rsplit(":", 1)
    r = registry.manifest(repo, tag)
    assert r.status_code == 200
    assert sha256_hex(r.content) == sha
    assert r.headers["Docker-Content-Digest"] == f"sha256:{sha}" == pushed[variant]
    assert sha != sha256_hex(wasm.read_bytes())  # not the module's own digest
    # The template itself differs only in the three placeholders.
    template = TEMPLATE.read_text()
    assert text == (template.replace("@IMAGE@", layouts["image"]).replace("@TAG@", TAGS[variant])
                    .replace("@SHA256@", sha))


def test_istio_plugin_config_is_accepted_by_the_pulled_module(pulled, tmp_path):
    """The example's pluginConfig, as Istio hands it to the plugin (JSON in the filter's
    configuration), loads in Envoy: `envoy --mode validate` runs the plugin's on_configure."""
    config = plugin_config_block(TEMPLATE.read_text())
    upstreams = sorted({i["jwks"]["upstream"] for i in config["issuers"]})
    assert upstreams == ["outbound|80||auth.partner.example", "outbound|80||keycloak.example.com"]
    clusters = {name: None for name in upstreams} | {"upstream": None}
    ok, output = envoy.validate(envoy.render(1, 2, pulled["compat"], config, clusters), tmp_path)
    assert ok, output[-3000:]
    # And a broken one is refused, naming the field (FAIL_CLOSE then keeps traffic out).
    config["issuers"][1]["algorithms"] = ["none"]
    ok, output = envoy.validate(envoy.render(1, 2, pulled["compat"], config, clusters), tmp_path, name="bad")
    assert not ok
    assert "invalid configuration at issuers[1].algorithms[0]" in output


def test_envoy_remote_source_loads_the_oci_variant_layer(registry, pushed, servers_up, wasm):
    """Plain Envoy cannot pull an image, but its `remote` data source (an HTTP URL through a
    cluster, plus the module's sha256) can fetch the oci variant's raw module layer straight from
    a registry that serves blobs without authentication, as this one does."""
    module_sha = sha256_hex(wasm.read_bytes())
    manifest = registry.manifest(REPO, TAGS["oci"]).json()
    assert manifest["layers"][1]["digest"] == f"sha256:{module_sha}"
    config = {
        "issuers": [{"name": "as1", "issuer": f"http://127.0.0.1:{servers_up['as1']}",
                     "jwks": {"discovery": True, "upstream": "as1"}}],
        "routes": [{"match": {"prefix": "/"}}],
    }
    listener, admin = free_port(), free_port()
    clusters = {"as1": servers_up["as1"], "upstream": servers_up["upstream"], "registry": registry.port}
    bootstrap = envoy.render(listener, admin, wasm, config, clusters)
    vm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]["config"]["vm_config"]
    vm["code"] = {"remote": {
        "http_uri": {"uri": f"{registry.url}/v2/{REPO}/blobs/sha256:{module_sha}", "cluster": "registry",
                     "timeout": "10s"},
        "sha256": module_sha,
    }}
    proc = envoy.start_envoy(config=bootstrap, log_dir=servers_up["workdir"], name="envoy-remote")
    try:
        assert requests.get(f"{proc.url}/api/x", timeout=15).status_code == 401
        assert envoy.stats(proc.admin_port, "tollgate.").get("tollgate.denied.missing_token") == 1
    finally:
        proc.stop()
