#!/usr/bin/env python3
"""Ask a purposegate decision server whether data may be processed for a purpose.

    pip install -r examples/python/requirements.txt
    python3 examples/python/check.py --purpose provide --category customer-data

The Python stubs are generated from proto/purposegate/v1/decision.proto with
grpcio-tools at each run (into a temporary directory, removed again once
they are imported), so nothing generated is checked in or left behind.
Prints the CheckResponse as JSON; exits 0 on PERMIT and 3 on any other
decision, so a shell script can gate on it.
"""

import argparse
import importlib
import pathlib
import sys
import tempfile

import grpc
from google.protobuf import json_format
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
PROTO = "purposegate/v1/decision.proto"


def load_stubs():
    """Generates and imports decision_pb2 and decision_pb2_grpc; the
    generated files are removed once imported."""
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="purposegate-py-") as out:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_DIR}",
                f"-I{include}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                PROTO,
            ]
        )
        if code != 0:
            sys.exit(f"cannot compile {PROTO} (protoc exit {code})")
        sys.path.insert(0, out)
        try:
            pb2 = importlib.import_module("purposegate.v1.decision_pb2")
            pb2_grpc = importlib.import_module("purposegate.v1.decision_pb2_grpc")
        finally:
            sys.path.remove(out)
    return pb2, pb2_grpc


STATES = ["IDENTIFIED", "PSEUDONYMIZED", "UNLINKED_PSEUDONYMIZED", "ANONYMIZED", "AGGREGATED"]


def deidentification(text):
    """A de-identification state in the policy's spelling (`anonymized`,
    `unlinked-pseudonymized`) or the API's (`ANONYMIZED`)."""
    name = text.strip().upper().replace("-", "_")
    if name in ("", "DEIDENTIFICATION_UNSPECIFIED", "UNSPECIFIED"):
        return "DEIDENTIFICATION_UNSPECIFIED"
    if name not in STATES:
        raise argparse.ArgumentTypeError(
            f"`{text}` is not a de-identification state; use one of "
            + ", ".join(s.lower().replace("_", "-") for s in STATES)
        )
    return name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="localhost:50051", help="server host:port")
    parser.add_argument("--purpose", required=True, help="e.g. troubleshoot.security-incident")
    parser.add_argument("--category", required=True, help="e.g. customer-data")
    parser.add_argument("--subject", default="python-example", help="subject id")
    parser.add_argument("--tenant", default="", help="the customer the subject acts for")
    parser.add_argument("--owner-tenant", default="", help="the customer who owns the data")
    parser.add_argument(
        "--deidentification",
        type=deidentification,
        default="DEIDENTIFICATION_UNSPECIFIED",
        help="identified, pseudonymized, unlinked-pseudonymized, anonymized or aggregated",
    )
    parser.add_argument("--group-size", type=int, default=0, help="k of an aggregate")
    parser.add_argument("--origin", action="append", default=[], help="category derived from")
    parser.add_argument("--request-id", default="", help="correlation id")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds")
    args = parser.parse_args()

    pb2, pb2_grpc = load_stubs()
    request = pb2.CheckRequest(
        purpose=args.purpose,
        subject=pb2.Subject(id=args.subject, tenant=args.tenant),
        resource=pb2.Resource(
            category=args.category,
            owner_tenant=args.owner_tenant,
            deidentification=pb2.Deidentification.Value(args.deidentification),
            group_size=args.group_size,
            origin=args.origin,
        ),
        request_id=args.request_id,
    )
    with grpc.insecure_channel(args.target) as channel:
        stub = pb2_grpc.DecisionServiceStub(channel)
        try:
            response = stub.Check(request, timeout=args.timeout)
        except grpc.RpcError as err:
            sys.exit(f"Check failed: {err.code().name}: {err.details()}")
    print(json_format.MessageToJson(response, indent=2))
    return 0 if response.decision == pb2.PERMIT else 3


if __name__ == "__main__":
    sys.exit(main())
