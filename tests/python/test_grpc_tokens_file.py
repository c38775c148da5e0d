"""Tokens from --grpc-tokens-file (a mounted Kubernetes Secret): each line is a token
the API accepts, alone or beside --grpc-tokens; comments and other strings are not."""

import os
import tempfile

import grpc
import pytest

import skein_node
from test_grpc_api import stubs  # noqa: F401  (fixture)


def call(pb, pb_grpc, addr, token):
    stub = pb_grpc.SkeinStub(grpc.insecure_channel(addr))
    return stub.ClusterInfo(pb.ClusterInfoRequest(), metadata=[("authorization", f"Bearer {token}")], timeout=5)


def test_every_token_of_the_file_authenticates(stubs):  # noqa: F811
    pb, pb_grpc = stubs
    d = tempfile.mkdtemp(prefix="skein-tokens-")
    path = os.path.join(d, "grpc-tokens")
    with open(path, "w") as f:
        f.write("# rotated in March\nnew-token\n\n  old-token  \n")
    n = skein_node.start("--grpc-tokens-file", path, "--grpc-tokens", "flag-token")
    try:
        for token in ("new-token", "old-token", "flag-token"):
            assert call(pb, pb_grpc, n["grpc"], token).server_count == 1
        for wrong in ("# rotated in March", "nope", ""):
            with pytest.raises(grpc.RpcError) as e:
                call(pb, pb_grpc, n["grpc"], wrong)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, wrong
    finally:
        skein_node.stop(n)
