"""Local servers for the tests, on 127.0.0.1 only: the app's ASGI app under uvicorn in a thread, a file server
that stands in for the model hub, and free or closed ports."""
from __future__ import annotations

import http.server
import socket
import threading
import time


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now (for a process that binds it itself)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port_url() -> str:
    """http://127.0.0.1:PORT where nothing listens: a connection there is refused at once (no internet needed)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def no_sleep(_seconds):
    """A `sleep` for retry loops under test: the retries without the waiting."""


class LiveServer:
    """uvicorn serving `app` in a thread on a free port of 127.0.0.1; `config`: a uvicorn.Config of it to serve
    with instead of the plain one."""

    def __init__(self, app, config=None):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = config or uvicorn.Config(app, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)

    def close(self):
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()


class FileServer:
    """Serves `files` {url path: bytes}. `drop_after` {path: n}: the first GET of that path sends only n bytes
    of the body, then closes the connection. `ranges=False`: ignores Range headers (answers 200). `gate(path,
    authorization)`: an HTTP status to answer instead (a gated repo), or None; `auth` records (path, the
    Authorization header) of every request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, int] = {}
        self.ranges = True
        self.gate = None
        self.requests: list[tuple[str, str | None]] = []
        self.auth: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path
                rng = self.headers.get("Range")
                server.requests.append((path, rng))
                server.auth.append((path, self.headers.get("Authorization")))
                body = server.files.get(path) if path in server.files else server.files.get(path.split("?")[0])
                refused = server.gate(path, self.headers.get("Authorization")) if server.gate else None
                if refused is not None or body is None:
                    self.send_response(refused or 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if rng and server.ranges:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                cut = server.drop_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(part[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(part)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
