"""A throwaway self-signed certificate for demos (``netpoll echo --tls``,
``examples/https_hello.py`` without --cert): made with the ``cryptography``
package when it is installed, else with the ``openssl`` command."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import ssl
import subprocess
import tempfile


def _with_cryptography(cert_path: str, key_path: str, host: str) -> bool:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return True


def _with_openssl(cert_path: str, key_path: str, host: str) -> bool:
    exe = shutil.which("openssl")
    if not exe:
        return False
    r = subprocess.run(
        [exe, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "7", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host},IP:127.0.0.1",
         "-keyout", key_path, "-out", cert_path], capture_output=True, timeout=60)
    return r.returncode == 0


def server_context(cert: str | None = None, key: str | None = None, host: str = "localhost",
                   alpn: list[str] | None = None) -> ssl.SSLContext:
    """A server context for ``cert``/``key``, or for a new self-signed
    certificate for ``host`` when ``cert`` is None (its files are deleted
    once loaded)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert is not None:
        ctx.load_cert_chain(cert, key)
        return ctx
    with tempfile.TemporaryDirectory(prefix="netpoll-cert-") as tmp:
        c, k = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        if not (_with_cryptography(c, k, host) or _with_openssl(c, k, host)):
            raise RuntimeError("no certificate given, and none can be made: install the "
                               "'cryptography' package or the openssl command, or pass CERT KEY")
        ctx.load_cert_chain(c, k)
    return ctx
