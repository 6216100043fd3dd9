"""TLS on every gRPC hop, with certificates made at test time: client -> gateway -> each layer."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.support.stack import run_stack


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "strata test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_path, cert_path, key_path


def test_every_hop_over_tls(tmp_path: Path) -> None:
    ca, cert, key = make_certificates(tmp_path)
    tls = {"tls_cert_file": str(cert), "tls_key_file": str(key)}
    with run_stack(tmp_path / "data", layer_overrides=tls, tls_ca_file=str(ca), **tls) as stack:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        with grpc.secure_channel(stack.gateway, credentials) as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name="secure"))
            gateway.PutDocument(
                gateway_pb2.PutDocumentRequest(collection="secure", document_id="d", text="Ciphers protect secrets.")
            )
            hits = gateway.Search(gateway_pb2.SearchRequest(collection="secure", query="encryption")).results
            assert hits[0].document_id == "d"
        # A plaintext client cannot talk to a TLS server.
        with grpc.insecure_channel(stack.gateway) as channel, pytest.raises(grpc.RpcError) as caught:
            gateway_pb2_grpc.GatewayServiceStub(channel).ListCollections(
                gateway_pb2.ListCollectionsRequest(), timeout=2
            )
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_unreadable_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    from services.runtime.settings import ConfigError
    from tests.support.stack import serve_layer

    with pytest.raises(ConfigError, match="STRATA_TLS_CERT_FILE"):
        with serve_layer("blob", tmp_path, tls_cert_file=str(tmp_path / "missing.pem"), tls_key_file="x"):
            pass


def test_health_check_command_speaks_tls_when_the_server_does(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.support.servers import REPO_ROOT
    from tests.support.stack import serve_layer

    ca, cert, key = make_certificates(tmp_path)
    with serve_layer("blob", tmp_path / "data", tls_cert_file=str(cert), tls_key_file=str(key)) as address:
        env = {**os.environ, "STRATA_TLS_CERT_FILE": str(cert), "STRATA_TLS_CA_FILE": str(ca)}
        result = subprocess.run(
            [sys.executable, "-m", "services.runtime.healthcheck", address],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    assert "SERVING" in result.stdout
