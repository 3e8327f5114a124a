"""The local cluster's certificates: one CA per cluster and the leaf certificates it signs.

Used when the API server enforces RBAC (``pot local up --authorization-mode
RBAC``): client-go (kubectl, helm) sends bearer tokens only over TLS, so that
mode serves HTTPS. Everything lives in ``DIR/pki/`` (keys 0600):

* ``ca.crt``/``ca.key``: the cluster CA (ECDSA P-256, 10 years), made on first
  use; kubeconfigs carry ``ca.crt`` as ``certificate-authority-data``;
* ``apiserver.crt``/``.key``: the API server on 127.0.0.1 / localhost;
* ``relay-IP.crt``/``.key``: a kubelet's relay on the pod network's gateway,
  which pods reach the API server through (:mod:`apiforward`). The kubelet
  issues it itself, as a node's kubelet gets its serving certificate from the
  cluster CA.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pot import errors, files

VALIDITY = datetime.timedelta(days=3650)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def ca_pem(directory: Path) -> bytes:
    """The cluster CA's certificate (PEM), which kubeconfigs carry."""
    return (directory / "pki" / "ca.crt").read_bytes()


def ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The cluster CA under ``directory/pki``, made on first use."""
    crt, key_path = directory / "pki" / "ca.crt", directory / "pki" / "ca.key"
    if crt.exists() and key_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            cert = x509.load_pem_x509_certificate(crt.read_bytes())
        except ValueError as exc:
            raise errors.ConfigError(f"{crt}: not a usable CA ({exc})") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise errors.ConfigError(f"{key_path}: not an ECDSA key")
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("pot-local-ca"))
        .issuer_name(_name("pot-local-ca"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    files.write_atomic(key_path, _pem_key(key))  # 0600 (mkstemp)
    files.write_atomic(crt, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(directory: Path, name: str, *, ips: list[str], dns: list[str]) -> tuple[Path, Path]:
    """A serving certificate signed by the cluster CA, for these addresses; reused while it
    still names them. Returns (certificate path, key path)."""
    crt, key_path = directory / "pki" / f"{name}.crt", directory / "pki" / f"{name}.key"
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if crt.exists() and key_path.exists():
        try:
            have = x509.load_pem_x509_certificate(crt.read_bytes())
            names = have.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            if set(names) == set(sans):
                return crt, key_path
        except (ValueError, x509.ExtensionNotFound):
            pass  # unreadable or for other addresses: issue a new one
    ca_cert, ca_key = ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files.write_atomic(key_path, _pem_key(key))
    files.write_atomic(crt, cert.public_bytes(serialization.Encoding.PEM))
    return crt, key_path


def server_context(crt: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(crt, key)
    return ctx


def client_context(directory: Path) -> ssl.SSLContext:
    """Trusts the cluster CA only."""
    ctx = ssl.create_default_context(cadata=ca_pem(directory).decode())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
