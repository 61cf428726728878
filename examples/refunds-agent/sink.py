"""A tiny payments webhook for the example: applies each Idempotency-Key once.

Usage: python3 sink.py PORT   (prints one line per request)
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

applied = {}


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        key = self.headers.get("Idempotency-Key", "")
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        first = key not in applied
        applied.setdefault(key, body)
        args = body.get("arguments", {})
        print(f"sink: {'APPLIED' if first else 'duplicate ignored'} {body.get('tool')} "
              f"{args.get('order_id')} ${args.get('amount')} key={key}", flush=True)
        out = json.dumps({"refund_id": "rf-" + str(len(applied)), "applied": first}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
