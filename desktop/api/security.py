"""Who may talk to the REST server: origins, tokens, the cross-site guard and the body read timeout
(ASGI middleware added by server.create_app). The rules are in server.py's docstring, under Security.
"""

import argparse
import ipaddress
import secrets
from typing import Optional

from .common import BodyTimeout

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})     # what the cross-site guard checks

# A request body that stops arriving (shorter than its Content-Length, a stalled upload) is given up
# after this many seconds without a byte: 408 and the connection closed (BodyReadTimeout). Read from
# here at each request (tests patch it here).
BODY_READ_TIMEOUT_S = 30.0


def parse_origin(text: str) -> Optional[tuple]:
    """'scheme://host[:port]' -> (scheme, host, port), lower-case, the default port filled in; None
    when `text` is not an http(s) origin (e.g. "null", a path, a user name)."""
    from urllib.parse import urlsplit

    try:
        u = urlsplit(text.strip())
        port = u.port
    except ValueError:
        return None
    if (u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/") or u.query or u.fragment
            or u.username is not None or u.password is not None):
        return None
    return u.scheme, u.hostname.lower(), port or (443 if u.scheme == "https" else 80)


def format_origin(origin: tuple) -> str:
    """(scheme, host, port) -> the origin as browsers write it (no default port, IPv6 in brackets)."""
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port == (443 if scheme == "https" else 80) else f":{port}")


def origin_arg(text: str) -> str:
    """argparse type of --allow-origin: an origin, normalised."""
    origin = parse_origin(text)
    if origin is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an origin: give scheme://host[:port], e.g. "
                                         "http://localhost:3000 (no path)")
    return format_origin(origin)


def token_given(headers) -> Optional[str]:
    """The token a request sends (Authorization: Bearer TOKEN or X-API-Key: TOKEN), if any."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key") or None


class CrossSiteGuard:
    """ASGI middleware: refuses (403) state-changing requests that a web page of another site sent.

    A POST/PUT/PATCH/DELETE passes when its Origin is one of `allowed` or the server's own origin
    (the request's scheme, its Host header and port; loopback names are one host), or when it has no
    Origin and is not marked `Sec-Fetch-Site: cross-site` (programs: StableProjectorz, curl, Python),
    or when it carries the server's valid token. GET, HEAD and OPTIONS always pass. A header sent more
    than once counts with every value: one foreign Origin (or one `cross-site`) among them refuses the
    request, and several Host headers leave no own origin to compare with."""

    def __init__(self, app, allowed=(), token: Optional[str] = None):
        self.app = app
        self.allowed = {parse_origin(o) for o in allowed}
        self.token = token.encode("utf-8") if token else None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] in UNSAFE_METHODS:
            reason = self.refusal(scope)
            if reason is not None:
                from starlette.responses import JSONResponse

                await JSONResponse({"detail": reason}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def own_origin(self, scope, headers) -> Optional[tuple]:
        hosts = headers.getlist("host")
        if len(set(hosts)) != 1:
            return None                                     # no Host, or two that disagree: no own origin
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        return parse_origin(f"{scheme}://{hosts[0]}")

    def refusal(self, scope) -> Optional[str]:
        """None when the request may go on, else the 403 message."""
        from starlette.datastructures import Headers

        headers = Headers(scope=scope)
        origins = headers.getlist("origin")
        cross_site = any(v.strip().lower() == "cross-site" for v in headers.getlist("sec-fetch-site"))
        if not origins and not cross_site:
            return None                                     # not a cross-site page: a program, a form of ours
        given = token_given(headers)
        if self.token is not None and given and secrets.compare_digest(given.encode("utf-8"), self.token):
            return None
        own = self.own_origin(scope, headers)
        # Every Origin value must pass on its own: the first foreign one is the one refused.
        origin_text = next((t for t in origins if not self._passes(parse_origin(t), own, cross_site)), None)
        if origins and origin_text is None:
            return None
        origin = parse_origin(origin_text) if origin_text is not None else None
        if origin_text is not None and origin is None:
            who = f"a page with Origin {origin_text!r} (a sandboxed page or a local file)"
            fix = ("open the page from a web server and start this server with --allow-origin "
                   "scheme://host:port of that page")
        else:
            shown = format_origin(origin) if origin is not None else "another site"
            who = f"a web page at {shown}" if origin is not None else \
                "a web page of another site (Sec-Fetch-Site: cross-site)"
            fix = (f"if you trust that page, start the server with --allow-origin {shown}" if origin is not None
                   else "if you trust that page, start the server with --allow-origin scheme://host:port of that page")
        return (f"cross-site request refused: {who} may not change anything on this server "
                f"(its own pages are {format_origin(own) if own else 'on the address it is reached at'}). "
                f"To allow it, {fix}" + (", or send the server's token" if self.token else "")
                + ". Programs that send no Origin header (StableProjectorz, curl, Python) are not affected.")

    def _passes(self, origin: Optional[tuple], own: Optional[tuple], cross_site: bool) -> bool:
        """Whether one Origin value may change things: an allowed origin, or the server's own page."""
        if origin is None:
            return False
        if origin in self.allowed:
            return True
        return own is not None and not cross_site and _same_origin(origin, own)


class BodyReadTimeout:
    """ASGI middleware: while a request body is incomplete, each wait for more of it ends after
    BODY_READ_TIMEOUT_S (read when the request comes) with BodyTimeout, answered 408 with the
    connection closed. A body shorter than its Content-Length holds nothing open for long."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        import asyncio

        limit = BODY_READ_TIMEOUT_S
        done = False

        async def timed_receive():
            nonlocal done
            if done:
                return await receive()                  # after the body: disconnect listeners wait freely
            try:
                message = await asyncio.wait_for(receive(), limit)
            except asyncio.TimeoutError:
                raise BodyTimeout() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message
        await self.app(scope, timed_receive, send)


def _same_origin(a: tuple, b: tuple) -> bool:
    """Same scheme and port, and the same host (127.0.0.1, localhost and ::1 being one)."""
    return a[0] == b[0] and a[2] == b[2] and (a[1] == b[1] or (is_loopback(a[1]) and is_loopback(b[1])))


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
