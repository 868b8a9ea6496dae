"""A small application backend for the proxy tests: answers Switchyard's proxy calls in
Centrifugo's proxy format, like an application would, and records every call.

Run: python3 backend.py [--tls CERT KEY]  -> prints the port it listens on (127.0.0.1, chosen
by the OS); with --tls it speaks HTTPS.

  POST /connect      a Cookie "session=<user>" or data {"user": U} authenticates U, with
                     server-side channels ["proxied:server-<U>"] and meta {"tier": "gold"}; data {"ttl": N} sets
                     expire_at now+N; data {"deny": true} -> disconnect 4501; no user ->
                     error 1001; data {"secret": ...} echoed back as connect data.
  POST /refresh      extends by 2 s (mode "expire": expired).
  POST /subscribe    proxied:forbidden* -> error 403; others allowed with info and data
                     (proxied:jl*: override join_leave and presence on);
                     data {"ttl": N} sets expire_at now+N.
  POST /sub_refresh  extends by 2 s (mode "expire": expired).
  POST /publish      {"text": T} -> rewritten to {"text": T.upper(), "by": "backend"};
                     {"reject": true} -> error 1002.
  POST /rpc          method "echo" -> data {"echo": data, "user": U}; "fail" -> error 1003;
                     "bye" -> disconnect 4500.
  POST /control      {"mode": "ok" | "500" | "timeout" | "expire" | "garbage"}: how later
                     calls are answered.
  GET  /calls        every call so far: [{"path", "headers", "body"}].
"""

import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
CALLS = []
STATE = {"mode": "ok"}


def user_of(headers, body):
    for part in headers.get("Cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == "session" and v:
            return v
    data = body.get("data") or {}
    return data.get("user", "") if isinstance(data, dict) else ""


def connect(headers, body):
    data = body.get("data") or {}
    if data.get("deny"):
        return {"disconnect": {"code": 4501, "reason": "unauthorized"}}
    user = user_of(headers, body)
    if not user:
        return {"error": {"code": 1001, "message": "who are you?"}}
    result = {"user": user, "info": {"name": user.title()},
              "channels": ["proxied:server-" + user], "meta": {"tier": "gold"}}
    if "ttl" in data:
        result["expire_at"] = int(time.time()) + int(data["ttl"])
    if "secret" in data:
        result["data"] = {"secret": data["secret"]}
    return {"result": result}


def refresh(_headers, _body):
    if STATE["mode"] == "expire":
        return {"result": {"expired": True}}
    return {"result": {"expire_at": int(time.time()) + 2, "info": {"refreshed": True}}}


def subscribe(_headers, body):
    channel = body.get("channel", "")
    if channel.startswith("proxied:forbidden"):
        return {"error": {"code": 403, "message": "permission denied"}}
    result = {"info": {"role": "member"}, "data": {"welcome": channel}}
    if channel.startswith("proxied:jl"):
        result["override"] = {"join_leave": {"value": True}, "presence": {"value": True}}
    data = body.get("data") or {}
    if isinstance(data, dict) and "ttl" in data:
        result["expire_at"] = int(time.time()) + int(data["ttl"])
    return {"result": result}


def publish(_headers, body):
    data = body.get("data")
    if isinstance(data, dict) and data.get("reject"):
        return {"error": {"code": 1002, "message": "not in this channel"}}
    if isinstance(data, dict) and "text" in data:
        return {"result": {"data": {"text": str(data["text"]).upper(), "by": "backend"}}}
    return {"result": {}}


def rpc(_headers, body):
    method = body.get("method", "")
    if method.endswith("fail"):
        return {"error": {"code": 1003, "message": "backend says no"}}
    if method.endswith("bye"):
        return {"disconnect": {"code": 4500, "reason": "rpc said bye"}}
    return {"result": {"data": {"echo": body.get("data"), "user": body.get("user"),
                                "method": method}}}


ROUTES = {"/connect": connect, "/refresh": refresh, "/subscribe": subscribe,
          "/sub_refresh": refresh, "/publish": publish, "/rpc": rpc}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args):
        pass

    def reply(self, status, payload):
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        if self.path == "/calls":
            with LOCK:
                self.reply(200, CALLS)
        else:
            self.reply(404, {})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self.reply(400, {})
            return
        if self.path == "/control":
            STATE.update(body)
            self.reply(200, {})
            return
        with LOCK:
            # A header sent twice is recorded with its values joined by ", ".
            headers = {k: ", ".join(self.headers.get_all(k)) for k in set(self.headers.keys())}
            CALLS.append({"path": self.path, "headers": headers, "body": body})
            mode = STATE["mode"]
        if self.path.split("?")[0] not in ("/refresh", "/sub_refresh"):
            if mode == "500":
                self.reply(500, b"Traceback (most recent call last): secret internals")
                return
            if mode == "timeout":
                time.sleep(3)
            if mode == "garbage":
                self.reply(200, b"<html>not json</html>")
                return
        handler = ROUTES.get(self.path.split("?")[0])
        if handler is None:
            self.reply(404, {})
            return
        self.reply(200, handler(self.headers, body))


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if len(sys.argv) == 4 and sys.argv[1] == "--tls":
        # HTTPS with this certificate chain and key: python3 backend.py --tls CERT KEY
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
