"""The TLS certificate SIP (runsip's tls: listeners) and the web process (wss) serve.

Production points SIP_TLS_CERT and SIP_TLS_KEY at PEM files (a chain and its key).
The embedded default sets neither: the first process that needs TLS generates a
self-signed certificate (EC P-256, ten years, SAN = SIP_DOMAIN, localhost, 127.0.0.1
and ::1) into ``DATA_DIR/tls/`` beside the SQLite database, and every later run reuses
it, so phones that pinned its fingerprint keep trusting it. A file lock keeps two
processes starting at once (serve's children, runsip --workers) from writing two
different certificates.
"""
from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALIDITY = datetime.timedelta(days=3650)
CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"


@dataclass(frozen=True)
class CertificateFiles:
    cert: Path
    key: Path
    generated: bool = False  # whether this call wrote them


def default_directory(data_dir) -> Path:
    return Path(data_dir) / "tls"


def configured_files(settings) -> CertificateFiles:
    """The certificate from SIP_TLS_CERT / SIP_TLS_KEY, or the self-signed default
    (generated now if it does not exist yet)."""
    if settings.SIP_TLS_CERT:
        return CertificateFiles(Path(settings.SIP_TLS_CERT), Path(settings.SIP_TLS_KEY))
    return ensure_self_signed(default_directory(settings.DATA_DIR), settings.SIP_DOMAIN)


def existing_files(settings) -> CertificateFiles | None:
    """The configured certificate, or the self-signed default if it exists; never generates."""
    if settings.SIP_TLS_CERT:
        return CertificateFiles(Path(settings.SIP_TLS_CERT), Path(settings.SIP_TLS_KEY))
    directory = default_directory(settings.DATA_DIR)
    files = CertificateFiles(directory / CERT_NAME, directory / KEY_NAME)
    return files if files.cert.exists() and files.key.exists() else None


def ensure_self_signed(directory: Path, domain: str) -> CertificateFiles:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cert_path.exists() and key_path.exists():
            return CertificateFiles(cert_path, key_path)
        cert_pem, key_pem = self_signed_certificate(domain)
        _write_private(key_path, key_pem)
        _write_private(cert_path, cert_pem, mode=0o644)
    return CertificateFiles(cert_path, key_path, generated=True)


def _write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    os.replace(temporary, path)


def self_signed_certificate(domain: str, now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for ``domain``, localhost and the loopback addresses."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Regis (self-signed)")])
    dns_names = list(dict.fromkeys([domain, "localhost"]))
    alternative_names = [x509.DNSName(dns) for dns in dns_names] + [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        # A leaf, not a CA: browsers refuse a CA certificate as a server's even when told to trust it.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def fingerprint(cert_path) -> str:
    """SHA-256 of the (first) certificate's DER, as AB:CD:... (what phones show and pin)."""
    certificate = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return ":".join(f"{byte:02X}" for byte in certificate.fingerprint(hashes.SHA256()))


def server_context(files: CertificateFiles) -> ssl.SSLContext:
    """TLS 1.2 or later; client certificates are not asked for (phones authenticate
    with digest, RFC 5630 §3.1)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.cert), str(files.key))
    return context
