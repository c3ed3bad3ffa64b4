"""DPoP proofs (RFC 9449 §4) and a test PKI for the bench's sender-constrained rows.

wrk's Lua cannot sign ES256 at the rate Envoy verifies it, so the DPoP rows send proofs made
beforehand with `cryptography` (OpenSSL's ECDSA; a dependency of the bench's jwcrypto), each
exactly once (bench/proofs.lua).

**Why the proofs are dated in one-second slots.** Tollgate's replay store
(crates/tollgate-core/src/flow/replay.rs) keeps every accepted proof until the end of its `iat`
window (`iat + iat_window_s + 1 s`, at least 1 s from now) in 8,192 buckets of 8 entries, and
refuses a proof whose bucket is full (fail closed). A pool of proofs all dated "now" would keep
every proof of the run alive: at a few thousand requests per second the store fills within
seconds and refuses requests. So the pool is cut into slots, one per second of the row's run:
the proofs of slot `s` carry `iat = s - window + 1`, so they are valid until second `s + 1` and
their entry dies at `s + 2`. The Lua script sends, at wall-clock second `t`, proofs of slot `t`
(and of later slots if slot `t` is used up), skipping the proofs of slots that have passed:
each entry is alive 1-2 s, and the store holds about 1.5 s of requests (a few thousand ids,
not tens of thousands). The window itself stays Tollgate's default, 60 s: a proof of slot `s`
is valid from `s - 119` on, so a pool made just before its row is good for it.

The bench makes each pool in a process of its own (pool_in_subprocess: `proofs.py pool ...`),
which forks its workers: forking the bench itself, which runs threads, once left a worker
deadlocked on a lock a thread held at the fork.

Usable from the command line to time the generator:
    .venv/bin/python bench/proofs.py 100000
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import argparse
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


# --- DPoP ---------------------------------------------------------------------------------------

class ProofKey:
    """A client's DPoP key pair (P-256, ES256)."""

    def __init__(self, pem: bytes | None = None):
        self.key = (serialization.load_pem_private_key(pem, None) if pem
                    else ec.generate_private_key(ec.SECP256R1()))
        nums = self.key.public_key().public_numbers()
        self.jwk = {"kty": "EC", "crv": "P-256",
                    "x": b64(nums.x.to_bytes(32, "big")), "y": b64(nums.y.to_bytes(32, "big"))}

    def pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def jkt(self) -> str:
        """RFC 7638 thumbprint: the token's cnf.jkt."""
        canonical = json.dumps({m: self.jwk[m] for m in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        return b64(hashlib.sha256(canonical.encode()).digest())

    def sign(self, signing_input: bytes) -> str:
        r, s = decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def proof(self, *, htm: str, htu: str, token: str, iat: int, jti: str) -> str:
        head = b64json({"typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk})
        body = b64json({"jti": jti, "htm": htm, "htu": htu, "iat": iat, "ath": ath(token)})
        signing_input = f"{head}.{body}"
        return f"{signing_input}.{self.sign(signing_input.encode())}"


def ath(token: str) -> str:
    return b64(hashlib.sha256(token.encode()).digest())


def _part(job: tuple) -> str:
    """Worker: the lines `<slot> <proof>` of a run of slots (see pool())."""
    pem, htm, htu, token, window, tag, slots = job
    key = ProofKey(pem)
    head = b64json({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk})
    token_ath = ath(token)
    lines = []
    for slot, start, count in slots:
        iat = slot - window + 1
        for i in range(start, start + count):
            body = b64json({"jti": f"{tag}-{slot}-{i}", "htm": htm, "htu": htu, "iat": iat, "ath": token_ath})
            signing_input = f"{head}.{body}"
            lines.append(f"{slot} {signing_input}.{key.sign(signing_input.encode())}\n")
    return "".join(lines)


def pool(path: Path, key: ProofKey, *, htm: str, htu: str, token: str, window: int, first_slot: int,
         seconds: int, per_slot: int, procs: int | None = None, append: bool = False) -> int:
    """Writes `seconds` slots of `per_slot` proofs each, from wall-clock second `first_slot` on,
    to path as lines `<slot> <proof>` in slot order (append: after what path holds, whose slots
    must come before first_slot); every jti is new (a random tag per call). Returns the number of
    proofs. Made by `procs` processes (default: the CPU count)."""
    procs = procs or os.cpu_count() or 1
    tag = os.urandom(6).hex()
    pem = key.pem()
    # Each slot is split over the processes, so the parts of every slot come out in order.
    jobs = []
    share = -(-per_slot // procs)
    for p in range(procs):
        start, count = p * share, max(0, min(share, per_slot - p * share))
        if count:
            jobs.append((pem, htm, htu, token, window, tag,
                         [(first_slot + s, start, count) for s in range(seconds)]))
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(len(jobs)) as workers:
        parts = workers.map(_part, jobs)
    by_slot: dict[int, list[str]] = {}
    for part in parts:
        for line in part.splitlines(keepends=True):
            by_slot.setdefault(int(line.split(" ", 1)[0]), []).append(line)
    with path.open("a" if append else "w") as f:
        for slot in sorted(by_slot):
            f.writelines(by_slot[slot])
    return seconds * per_slot


def pool_in_subprocess(path: Path, key: ProofKey, *, htm: str, htu: str, token: str, window: int,
                       first_slot: int, seconds: int, per_slot: int, append: bool = False) -> int:
    """pool(), in a fresh single-threaded Python process (see the module's docstring)."""
    key_file, token_file = path.with_suffix(".key.pem"), path.with_suffix(".token")
    key_file.write_bytes(key.pem())
    token_file.write_text(token)
    argv = [sys.executable, __file__, "pool", "--out", str(path), "--key", str(key_file), "--htm", htm,
            "--htu", htu, "--token-file", str(token_file), "--window", str(window), "--first-slot", str(first_slot),
            "--seconds", str(seconds), "--per-slot", str(per_slot)] + (["--append"] if append else [])
    subprocess.run(argv, check=True, timeout=600)
    return seconds * per_slot


# --- mTLS ---------------------------------------------------------------------------------------

def test_pki(out: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate (P-256, a day),
    as PEM files under out: ca.pem, server.pem, server.key, client.pem (the certificate then
    its key, the form ab -E reads), client-cert.pem. The client certificate's x5t#S256 is
    client_x5t(out)."""
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tollgate bench CA")])

    def cert(subject: str, key, *, ca: bool, san: x509.GeneralName | None = None, client: bool = False):
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]) if not ca else ca_name)
             .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san is not None:
            b = b.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        if not ca:
            usage = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return b.sign(ca_key, hashes.SHA256())

    import ipaddress
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("", ca_key, ca=True)
    server_cert = cert("127.0.0.1", server_key, ca=False, san=x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    client_cert = cert("bench-client", client_key, ca=False, client=True)

    def pem_key(k) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    files = {"ca": out / "ca.pem", "server_cert": out / "server.pem", "server_key": out / "server.key",
             "client": out / "client.pem", "client_cert": out / "client-cert.pem"}
    files["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files["server_cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files["server_key"].write_bytes(pem_key(server_key))
    client_pem = client_cert.public_bytes(serialization.Encoding.PEM)
    files["client_cert"].write_bytes(client_pem)
    files["client"].write_bytes(client_pem + pem_key(client_key))
    return files


def client_x5t(client_cert_pem: Path) -> str:
    """x5t#S256 of a PEM certificate: base64url(SHA-256(DER)), RFC 8705 §3.1."""
    der = x509.load_pem_x509_certificate(client_cert_pem.read_bytes()).public_bytes(serialization.Encoding.DER)
    return b64(hashlib.sha256(der).digest())


def main_pool(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="proofs.py pool")
    for name in ("--out", "--key", "--htm", "--htu", "--token-file"):
        ap.add_argument(name, required=True)
    for name in ("--window", "--first-slot", "--seconds", "--per-slot"):
        ap.add_argument(name, type=int, required=True)
    ap.add_argument("--append", action="store_true")
    a = ap.parse_args(argv)
    pool(Path(a.out), ProofKey(Path(a.key).read_bytes()), htm=a.htm, htu=a.htu,
         token=Path(a.token_file).read_text().strip(), window=a.window, first_slot=a.first_slot,
         seconds=a.seconds, per_slot=a.per_slot, append=a.append)


if __name__ == "__main__" and sys.argv[1:2] == ["pool"]:
    main_pool(sys.argv[2:])
elif __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    key = ProofKey()
    t0 = time.monotonic()
    out = Path("/tmp/bench-proofs-timing.txt")
    made = pool(out, key, htm="GET", htu="http://127.0.0.1:1/api/bench", token="x" * 600, window=60,
                first_slot=int(time.time()), seconds=10, per_slot=n // 10)
    dt = time.monotonic() - t0
    print(f"{made:,} proofs in {dt:.2f}s ({made / dt:,.0f}/s, {os.cpu_count()} processes), "
          f"{out.stat().st_size / made:.0f} bytes each")
    out.unlink()
