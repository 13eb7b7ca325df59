"""An app no one here wrote the way it is used: Python's own http.server,
keeping connections alive (HTTP/1.1) and never reading a body it does not
need, as many small services do. Put behind the sidecar by the smuggling
tests: a body the sidecar forwards and the app leaves unread is parsed
as the next request on that connection.

Every request it parses is printed to stdout as one JSON line (the port
first), so a test can tell exactly what reached it. Each answer names the
request it answers (method, path, the caller's `x-caller` header), so a
test can tell whose answer a caller received.

Paths: GET /records/<id> (data), GET /secrets/<id> (data no route
covers), POST /read (reads its Content-Length body), POST /ignore
(answers without reading it), anything else: "ok".
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - http.server's name
        pass

    def answer(self, body_read=0):
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_read": body_read,
        }
        print(json.dumps(seen), flush=True)
        caller = self.headers.get("x-caller", "")
        if self.path.startswith("/secrets/"):
            text = "SECRET " + self.path
        elif self.path.startswith("/records/"):
            text = "record " + self.path
        else:
            text = "ok " + self.path
        body = json.dumps({"answer": text, "method": self.command,
                           "path": self.path, "caller": caller}).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        self.answer()

    do_HEAD = do_GET
    do_DELETE = do_GET
    do_OPTIONS = do_GET
    do_PUT = do_GET
    do_PATCH = do_GET

    def do_POST(self):
        if self.path == "/read":
            length = int(self.headers.get("content-length", "0") or "0")
            self.answer(len(self.rfile.read(length)))
        else:
            self.answer()


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
