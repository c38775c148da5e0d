"""The gRPC API over TLS, with a certificate made for the test."""

import os
import subprocess
import tempfile

import grpc
import pytest

import skein_node
from test_grpc_api import AUTH, TOKEN, stubs  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def tls_node():
    d = tempfile.mkdtemp(prefix="skein-tls-")
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    n = skein_node.start("--grpc-tokens", TOKEN, "--grpc-tls-cert", cert, "--grpc-tls-key", key)
    yield n["grpc"].replace("127.0.0.1", "localhost"), open(cert, "rb").read()
    skein_node.stop(n)


def test_tls_serves_and_plaintext_is_refused(stubs, tls_node):  # noqa: F811
    pb, pb_grpc = stubs
    addr, cert = tls_node
    secure = grpc.secure_channel(addr, grpc.ssl_channel_credentials(root_certificates=cert))
    info = pb_grpc.SkeinStub(secure).ClusterInfo(pb.ClusterInfoRequest(), metadata=AUTH, timeout=5)
    assert info.server_count == 1
    plain = pb_grpc.SkeinStub(grpc.insecure_channel(addr))
    with pytest.raises(grpc.RpcError) as e:
        plain.ClusterInfo(pb.ClusterInfoRequest(), metadata=AUTH, timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
