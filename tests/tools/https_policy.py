#!/usr/bin/python3
"""A real HTTPS server (Python's http.server over ssl) serving MTA-STS
policy files, for Postern's tests.

    https_policy.py IP PORT CHAIN KEY DIR

GET /.well-known/mta-sts.txt answers DIR/<host>.txt (the Host header's
name, e.g. mta-sts.example.test.txt) as text/plain, or 404 when there is
no such file. DIR/<host>.type, when present, is sent as the Content-Type
instead (to serve a policy as something else). Every request's host is
appended to DIR/requests.log. DIR/ready appears once it listens. The file
is read at each request, so a test changes a policy by rewriting it.

POST (a TLS-RPT report) writes the body to DIR/post-N with its
Content-Type in DIR/post-N.type, and answers 201.
"""
import http.server, os, ssl, sys

ip, port, chain, key, root = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        with open(os.path.join(root, "requests.log"), "a") as log:
            log.write(host + "\n")
        path = os.path.join(root, host + ".txt")
        if self.path != "/.well-known/mta-sts.txt" or "/" in host or not os.path.exists(path):
            self.send_error(404)
            return
        body = open(path, "rb").read()
        ctype = "text/plain"
        tpath = os.path.join(root, host + ".type")
        if os.path.exists(tpath):
            ctype = open(tpath).read().strip()
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = len([f for f in os.listdir(root) if f.startswith("post-") and not f.endswith(".type")])
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        base = os.path.join(root, "post-%d" % (n + 1))
        with open(base + ".type", "w") as f:
            f.write((self.headers.get("Content-Type") or "") + " " + self.path)
        with open(base + ".tmp", "wb") as f:
            f.write(body)
        os.rename(base + ".tmp", base)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer((ip, port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(chain, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
open(os.path.join(root, "ready"), "w").close()
server.serve_forever()
