"""Self-signed TLS files and SuperNode keys for a federation you run yourself.

For real devices, use certificates from your organisation's CA; these are what
``fedmtl deploy local`` generates so TLS and node authentication are on even on
one machine:

* a CA (``ca.crt``), and a server certificate signed by it (``server.pem``,
  ``server.key``) whose subject alternative names cover the SuperLink's
  addresses (IP addresses and DNS names);
* one ECDSA P-384 key pair per SuperNode in OpenSSH format (``node-<i>``,
  ``node-<i>.pub``), the format ``ssh-keygen -t ecdsa -b 384`` writes and
  ``flwr supernode register`` and ``flower-supernode`` read.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedmtl.atomic import atomic_write_text

_VALID_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the CA certificate and the SuperLink's certificate and key."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKey:
    """Paths of one SuperNode's private and public authentication keys."""

    private: Path
    public: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedmtl local federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _private_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _write_secret(path: Path, text: str) -> None:
    atomic_write_text(path, text)
    os.chmod(path, 0o600)


def _alternative_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def write_tls_files(
    directory: str | Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")
) -> TlsFiles:
    """Write a new CA and a SuperLink certificate for ``hosts`` into ``directory``.

    Parameters
    ----------
    directory : str or Path
        Created if missing; the keys are written readable by the owner only.
    hosts : sequence of str
        IP addresses and DNS names SuperNodes and the CLI use to reach the SuperLink.

    Returns
    -------
    TlsFiles
        ``ca.crt`` (give it to every SuperNode and to ``flwr``), ``server.pem``
        and ``server.key`` (the SuperLink's).
    """
    if not hosts:
        raise ValueError("write_tls_files needs at least one host for the certificate")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    not_before = now - dt.timedelta(minutes=5)  # tolerate small clock skew
    not_after = now + dt.timedelta(days=_VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = _name("fedmtl local CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
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
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_alternative_names(hosts), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )

    files = TlsFiles(folder / "ca.crt", folder / "server.pem", folder / "server.key")
    atomic_write_text(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    atomic_write_text(
        files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM).decode()
    )
    _write_secret(files.server_key, _private_pem(server_key))
    return files


def write_node_key(directory: str | Path, name: str) -> NodeKey:
    """Write an ECDSA P-384 key pair in OpenSSH format (as ``ssh-keygen -t ecdsa -b 384``).

    Parameters
    ----------
    directory : str or Path
        Created if missing.
    name : str
        File stem: ``<name>`` (private, owner-only) and ``<name>.pub``.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    files = NodeKey(folder / name, folder / f"{name}.pub")
    _write_secret(files.private, private)
    atomic_write_text(files.public, public.decode() + f" fedmtl-{name}\n")
    return files
