"""The browser app's page server gets the REST API's protection from slow and many clients (desktop/ui/server.py
launches gradio inside connections.guarded_configs): gradio's own start_server, as the app's launch calls it, on
127.0.0.1 with short deadlines, cuts a slowloris. Should a gradio upgrade stop making its uvicorn.Config where the
context can reach it, this fails instead of the page quietly losing the protection."""
import json
import socket
import time

import uvicorn

from desktop.api import connections
from desktop.api.connections import ConnectionLimits
from desktop.ui.lazy import load_gradio


async def page(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"page"})


def test_gradio_servers_launched_in_the_context_are_guarded():
    load_gradio()
    from gradio import http_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with connections.guarded_configs(ConnectionLimits(header_timeout_s=0.5, per_client=4)):
        _, _, url, server = http_server.start_server(page, server_name="127.0.0.1", server_port=port)
    try:
        assert uvicorn.Config is not server.config.__class__                   # the context is over
        assert issubclass(server.config.http, connections.GuardedH11Protocol)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            start = time.monotonic()
            c.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            data = b""
            while chunk := c.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 5
            assert "headers" in json.loads(data.partition(b"\r\n\r\n")[2])["detail"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert c.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        server.close()
