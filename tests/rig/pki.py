"""A throw-away test PKI for the mTLS half of issue 15 (RFC 8705 certificate-bound tokens),
made with PyPI `cryptography` and written as PEM files:

    ca.pem                                  the test CA (EC P-256, self-signed, CA:TRUE)
    server.pem, server-key.pem              Envoy's TLS listener: SAN IP 127.0.0.1, DNS localhost
    client-a.pem, client-a-key.pem          client A, signed by the CA (clientAuth)
    client-b.pem, client-b-key.pem          client B, signed by the CA (clientAuth)
    client-self.pem, client-self-key.pem    a self-signed client certificate (no CA knows it)

    p = pki.make(tmp_dir)           # a Pki; certificates are valid from an hour ago for a day
    p.a.cert, p.a.key               # paths (e.g. requests' cert=(cert, key))
    pki.x5t_s256(p.a.pem)           # RFC 8705 §3.1 thumbprint: base64url(SHA-256(DER)), no padding

The thumbprint and the header forms (XFCC, RFC 9440 Client-Cert) are computed here with
`cryptography` and the standard library, independently of Tollgate's own code, so the tests
check Tollgate against them.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    """One certificate and its private key, as PEM files."""

    name: str
    cert: Path
    key: Path

    @property
    def pem(self) -> str:
        return self.cert.read_text()

    @property
    def der(self) -> bytes:
        return der_of(self.pem)

    @property
    def x5t(self) -> str:
        return x5t_s256(self.pem)

    @property
    def pair(self) -> tuple[str, str]:
        """(cert, key) paths as requests' and httpx's `cert=` take them."""
        return (str(self.cert), str(self.key))


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Path
    server: Identity
    a: Identity
    b: Identity
    self_signed: Identity


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tollgate test rig"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Identity:
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return Identity(name, cert_path, key_path)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, now: datetime.datetime) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1)))


def _leaf(cn: str, ca_name: x509.Name, ca_key, now, *, server: bool) -> tuple:
    """A leaf certificate and its key; signed by ca_key, or self-signed when ca_key is None."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = ca_name if ca_key is not None else _name(cn)
    b = (_builder(_name(cn), issuer, key.public_key(), now)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                      data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                      crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                               else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{cn}.clients.test")]), critical=False)
    if ca_key is not None:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    return b.sign(ca_key if ca_key is not None else key, hashes.SHA256()), key


def make(directory: Path | str) -> Pki:
    """Writes a new CA, server certificate and three client certificates into directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Tollgate test CA")
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), now)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "ca-key.pem").write_bytes(ca_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return Pki(
        dir=directory,
        ca=ca_path,
        server=_write(directory, "server", *_leaf("127.0.0.1", ca_name, ca_key, now, server=True)),
        a=_write(directory, "client-a", *_leaf("client-a", ca_name, ca_key, now, server=False)),
        b=_write(directory, "client-b", *_leaf("client-b", ca_name, ca_key, now, server=False)),
        self_signed=_write(directory, "client-self", *_leaf("client-self", ca_name, None, now, server=False)),
    )


# ------------------------------------------------------------------ thumbprints and header forms


def der_of(pem: str | bytes) -> bytes:
    """The DER of the first certificate in PEM text."""
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)


def x5t_s256(cert: str | bytes) -> str:
    """RFC 8705 §3.1 `x5t#S256`: base64url, without padding, of the SHA-256 of the certificate's
    DER. cert: PEM text, or DER bytes."""
    der = cert if isinstance(cert, bytes) and not cert.startswith(b"-----") else der_of(cert)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def sha256_hex(cert: str | bytes) -> str:
    """Lower-case hex SHA-256 of the DER (Envoy's XFCC `Hash=` and
    `connection.sha256_peer_certificate_digest`)."""
    der = cert if isinstance(cert, bytes) and not cert.startswith(b"-----") else der_of(cert)
    return hashlib.sha256(der).hexdigest()


def url_encoded_pem(pem: str) -> str:
    """The PEM as Envoy puts it in XFCC `Cert="..."` (every reserved character escaped)."""
    return quote(pem, safe="")


def xfcc(pem: str, *, hash_: bool = True, cert: bool = True) -> str:
    """One XFCC element for this certificate, as Envoy's SANITIZE_SET with `cert: true` builds it
    (`Hash=<hex>;Cert="<url-encoded PEM>"`), or only one of the two."""
    parts = []
    if hash_:
        parts.append(f"Hash={sha256_hex(pem)}")
    if cert:
        parts.append(f'Cert="{url_encoded_pem(pem)}"')
    return ";".join(parts)


def client_cert_header(pem: str) -> str:
    """RFC 9440 `Client-Cert`: the DER as a structured-field byte sequence, `:<base64>:`."""
    return f":{base64.b64encode(der_of(pem)).decode()}:"


if __name__ == "__main__":  # pragma: no cover
    import sys
    import tempfile

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="tollgate-pki-"))
    p = make(out)
    for ident in (p.server, p.a, p.b, p.self_signed):
        print(f"{ident.name:12} {ident.cert}  x5t#S256={ident.x5t}")
    print(f"{'ca':12} {p.ca}")
