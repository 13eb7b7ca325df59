"""A gRPC service no one here wrote: Python's grpcio, with raw bytes for
messages (no generated code), put behind the sidecar by the isolation
tests.

Methods of `/test.v1.Feed/`:
- `Get` (unary): answers the request's bytes back, prefixed with `got:`.
- `Stream` (server streaming): the request is `<count>:<size>`; answers
  `count` messages, each `size` bytes long, starting with its number.

The port is printed first, as one JSON line; then one line per call.
"""

import json
import sys
from concurrent import futures

import grpc


def get(request, context):
    print(json.dumps({"method": "Get", "bytes": len(request)}), flush=True)
    return b"got:" + request


def stream(request, context):
    count, size = (int(x) for x in request.decode().split(":"))
    print(json.dumps({"method": "Stream", "count": count, "size": size}), flush=True)
    for n in range(count):
        head = b"%d:" % n
        yield head + b"x" * max(0, size - len(head))


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    handlers = {
        "Get": grpc.unary_unary_rpc_method_handler(get),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.v1.Feed", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"port": port}), flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
