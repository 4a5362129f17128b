"""Slow and many clients cannot hold the HTTP servers (the REST API; the browser app's page server): uvicorn's
HTTP/1.1 protocol (h11) with deadlines and connection limits, one protocol class per server (`server_config`).

* Headers: a request's headers must be complete `header_timeout_s` after its connection opened (or after the
  answer to the connection's previous request), however the bytes come: silence or a trickle. uvicorn has no such
  deadline (a connection that never ends its headers stays open for ever). Cut with a 408 when part of a request
  came, silently when nothing did (an idle keep-alive connection is closed earlier by uvicorn's keep-alive timer).
* Bodies: a body gets `body_grace_s`, then must have averaged `body_min_rate` bytes a second since its headers: a
  deadline that moves with every byte, so a client sending a byte every few seconds is cut at the grace, not only
  after a silence. Cut with a 408 unless the answer has begun. Time in which the server itself held the body back
  (flow control, or a 100-continue not sent yet: the app had not read what came) does not count.
* Open connections: at most `per_client` from one client address and `total` in all, kept below the process's
  open-file limit (RLIMIT_NOFILE) with room for what the app opens itself (files, pipes, libraries): a server out
  of file descriptors cannot even accept the connection that would be answered. A connection over a limit makes
  room by closing the connection that has waited longest for a request's headers, or else the body furthest behind
  the rate (the same client's; for the total, the client's with the most connections), with a 503 and Retry-After
  when it was sending a request; when no connection may give way, the new one gets that 503. A connection whose
  request has not been read yet is spared for YOUNG_S (a burst of new connections does not push out one whose
  request is on its way): the client is trimmed back to its limit after. So idle, half-sent and trickling
  connections never lock out a client that sends a whole request (/ping answers).

uvicorn's own `limit_concurrency` is left off: once the connections reach it, every request is answered 503,
/ping included, which is the lockout this module prevents. A connection upgraded to a WebSocket leaves the count.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Optional

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0         # connection (or previous answer) -> a request's headers complete
BODY_GRACE_S = 30.0             # a body's first seconds, whatever its pace (the silence limit of BodyReadTimeout)
BODY_MIN_RATE = 4096.0          # bytes a second a body averages after its grace (a 64 MB image: 4.5 hours)
PER_CLIENT = 64                 # open connections of one client address (a browser opens 6 per server)
MAX_CONNECTIONS = 1024          # open connections in all, however high the open-file limit
RETRY_AFTER_S = 5               # told to a connection refused for want of room
LISTEN_QUEUE = 1024             # connections the kernel holds until accepted (asyncio accepts accept_batch() at once)
YOUNG_S = 0.5                   # a new connection's time to have its request read before it may give way
# A refused connection's answer is followed by this long of reading (and dropping) what the client still sends: a
# socket closed with unread bytes resets the connection, and a reset can destroy the answer before the client reads it.
LINGER_S = 2.0
MAX_LINGERING = 256             # refused connections lingering at once; past them, closed at once (file descriptors)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_grace_s: float = BODY_GRACE_S
    body_min_rate: float = BODY_MIN_RATE
    per_client: int = PER_CLIENT
    total: Optional[int] = None             # None: connection_budget() of this process's open-file limit

    def __post_init__(self):
        if min(self.header_timeout_s, self.body_grace_s, self.body_min_rate) <= 0 or self.per_client < 1 \
                or (self.total is not None and self.total < 1):
            raise ValueError(f"connection limits must be positive: {self}")


def open_file_limit() -> Optional[int]:
    """This process's soft RLIMIT_NOFILE; None without one (Windows has no `resource` module) or when unlimited."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY or soft <= 0 else int(soft)


def headroom(limit: int) -> int:
    """File descriptors left to the app itself under an open-file limit: a quarter of it, at least 64."""
    return max(64, limit // 4)


def connection_budget(limit: Optional[int] = None) -> int:
    """The most connections to hold open under the open-file `limit` (default: this process's): 768 of 1024."""
    limit = open_file_limit() if limit is None else limit
    if limit is None:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, limit - headroom(limit)))


def accept_batch(limit: Optional[int] = None) -> int:
    """The listen backlog, which is also how many connections asyncio accepts at once before any is counted here:
    a few such batches must fit in the headroom (32 under 1024)."""
    limit = open_file_limit() if limit is None else limit
    return 128 if limit is None else max(8, min(128, headroom(limit) // 8))


def widen_listen_queue(server) -> None:
    """Once a uvicorn `server` has started: its listening sockets' kernel queue widened to LISTEN_QUEUE. uvicorn made
    it the accept batch (asyncio takes both from one number), and a burst of connections past it has its SYNs dropped,
    which costs every client connecting meanwhile (a /ping too) a second until its SYN is sent again."""
    import os
    import socket

    for listener in getattr(server, "servers", ()):
        for sock in listener.sockets or ():
            try:
                with socket.socket(fileno=os.dup(sock.fileno())) as same:
                    same.listen(LISTEN_QUEUE)
            except OSError:                 # a socket handle os.dup cannot copy (Windows): the batch's queue stays
                pass


def unread_bytes(transport) -> int:
    """Bytes the client sent that the server has not read yet (FIONREAD), 0 where that cannot be told (Windows)."""
    sock = transport.get_extra_info("socket")
    try:
        import array
        import fcntl
        import termios

        count = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, count, True)
        return count[0]
    except (ImportError, AttributeError, OSError, ValueError):
        return 0


def answer(status: int, reason: str, message: str, retry_after: Optional[int] = None) -> bytes:
    """A whole HTTP/1.1 answer that closes its connection, its body JSON like the API's errors."""
    body = json.dumps({"detail": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\n" + (f"retry-after: {retry_after}\r\n" if retry_after else "") + "\r\n")
    return head.encode("ascii") + body


class Connections:
    """The open connections of one server by client address, each dict in order of arrival."""

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits
        self.total = limits.total if limits.total is not None else connection_budget()
        self.by_client: dict = {}
        self.count = 0
        self.lingering = 0              # refused connections reading out their request after the answer

    def admit(self, conn) -> bool:
        """Count `conn` in, making room when a limit is reached; False when no connection could give way. Over
        `per_client`, new connections whose request is still to be read (`young`) stay until they are not: `trim`."""
        mine = self.by_client.get(conn.peer, {})
        if len(mine) >= self.limits.per_client and not self.make_room(mine) and not any(p.young for p in mine):
            return False
        if self.count >= self.total:
            # File descriptors are at stake: the client with the most connections gives one way, a young one too.
            crowded = [c for c in self.by_client.values() if any(p.give_way_rank(True) is not None for p in c)]
            if not crowded or not self.make_room(max(crowded, key=len), young=True):
                return False
        mine = self.by_client.setdefault(conn.peer, mine)
        mine[conn] = None
        self.count += 1
        if len(mine) > self.limits.per_client:
            conn.loop.call_later(YOUNG_S, self.trim, conn.peer)
        return True

    def trim(self, peer) -> None:
        """Back to `per_client` connections of `peer`, as far as some may give way."""
        mine = self.by_client.get(peer, {})
        while len(mine) > self.limits.per_client and self.make_room(mine):
            pass

    def make_room(self, conns: dict, young: bool = False) -> bool:
        """Close the connection of `conns` whose turn it is to give way (GuardedH11Protocol.give_way_rank)."""
        ranked = [(rank, p) for p in conns if (rank := p.give_way_rank(young)) is not None]
        if not ranked:
            return False
        min(ranked, key=lambda r: r[0])[1].give_way()
        return True

    def remove(self, conn) -> None:
        """Count `conn` out (once: a connection that gave way is counted out before its transport has closed)."""
        mine = self.by_client.get(conn.peer)
        if mine is not None and conn in mine:
            del mine[conn]
            self.count -= 1
            if not mine:
                del self.by_client[conn.peer]


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the deadlines and limits above; `guard` (Connections) is set per server by
    `guarded_protocol`. Phases: "headers" (waiting for a request's headers), "body" (reading its body), "busy" (the
    app has the whole request, or the connection is closing)."""

    guard: Connections

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.peer = self.client[0] if self.client else "local"
        self.phase, self.phase_start, self.phase_bytes, self.timer = "headers", self.loop.time(), 0, None
        self.served = 0                 # answers sent on this connection
        self.lingering = False
        if not self.guard.admit(self):
            limits = self.guard.limits
            self.close_with(answer(503, "Service Unavailable", (
                f"too many connections: at most {limits.per_client} from one address and {self.guard.total} in "
                "all, each busy with a request; try again shortly"), retry_after=RETRY_AFTER_S))
            return
        self.arm()

    def close_with(self, data: bytes) -> None:
        """Send `data` (a whole answer) and close: the sending side at once, the connection after LINGER_S or the
        client's own close, what it sends meanwhile read and dropped (see LINGER_S)."""
        self.guard.remove(self)
        self.disarm()
        self.phase = "busy"
        self.transport.write(data)
        if self.guard.lingering >= MAX_LINGERING or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.lingering = True
        self.guard.lingering += 1
        self.transport.write_eof()
        self.timer = self.loop.call_later(LINGER_S, self.transport.close)

    def connection_lost(self, exc) -> None:
        self.guard.remove(self)
        self.disarm()
        if self.lingering:
            self.lingering = False
            self.guard.lingering -= 1
        super().connection_lost(exc)

    def eof_received(self):
        if self.lingering:              # the client read the answer and closed: done
            self.transport.close()
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self.lingering:              # the rest of a refused request: dropped
            return
        self.phase_bytes += len(data)
        super().data_received(data)
        self.follow()

    def on_response_complete(self) -> None:
        self.served += 1
        super().on_response_complete()
        self.follow()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are no HTTP request, in JSON like every other answer (its own is text)."""
        self.transport.write(answer(400, "Bad Request", f"{msg.rstrip('.')}: send an HTTP/1.1 request"))
        self.phase = "busy"
        self.transport.close()

    def handle_websocket_upgrade(self, event) -> None:
        self.guard.remove(self)
        self.disarm()
        self.phase = "busy"
        super().handle_websocket_upgrade(event)

    @property
    def young(self) -> bool:
        """Opened (or answered) less than YOUNG_S ago and nothing read since, or its request's bytes arrived and wait
        to be read (a busy event loop reads late): its request is on its way."""
        return self.phase == "headers" and not self.phase_bytes and (
            self.loop.time() - self.phase_start < YOUNG_S or unread_bytes(self.transport) > 0)

    def give_way_rank(self, young: bool = False) -> Optional[tuple]:
        """None when this connection keeps its place; else its turn to give way to a new one (least first): one
        waiting for a request's headers, the longest waiting first, those that sent part of it before those that sent
        nothing (an idle one kept for the next request; a `young` one only when `young`); then a body behind
        `body_min_rate` (a request that may still finish, but slower than any whole one), the furthest behind."""
        if self.transport.is_closing() or (self.young and not young):
            return None
        if self.phase == "headers":
            return 0, not self.phase_bytes, self.phase_start
        behind = self.guard.limits.body_min_rate * (self.loop.time() - self.phase_start) - self.phase_bytes
        return (1, False, -behind) if self.phase == "body" and behind > 0 and not self.held_back else None

    @property
    def held_back(self) -> bool:
        """The server, not the client, holds the body back: flow control (the app has not read what came), or an
        `Expect: 100-continue` the app has not answered by reading yet."""
        return self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue)

    def follow(self) -> None:
        """The phase from h11's view of the client; a new phase starts its own deadline."""
        state = self.conn.their_state
        phase = "headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else "busy"
        if self.transport.is_closing():
            phase = "busy"
        if phase != self.phase:
            self.phase, self.phase_start, self.phase_bytes = phase, self.loop.time(), 0
            self.arm()

    def deadline(self) -> Optional[float]:
        limits = self.guard.limits
        if self.phase == "headers":
            return self.phase_start + limits.header_timeout_s
        if self.phase == "body":
            return self.phase_start + limits.body_grace_s + self.phase_bytes / limits.body_min_rate
        return None

    def arm(self) -> None:
        self.disarm()
        when = self.deadline()
        if when is not None and not self.transport.is_closing():
            self.timer = self.loop.call_at(when, self.expired)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expired(self) -> None:
        self.timer = None
        when = self.deadline()
        if when is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.phase == "body" and self.held_back:             # held back by the server: a fresh start
            self.phase_start, self.phase_bytes = now, 0
            self.arm()
        elif when > now:                                        # bytes came meanwhile: the deadline moved
            self.timer = self.loop.call_at(when, self.expired)
        elif self.phase == "headers" and not self.phase_bytes and unread_bytes(self.transport) > 0:
            self.timer = self.loop.call_later(YOUNG_S, self.expired)   # sent in time, read late by a busy server
        else:
            self.cut()

    def cut(self) -> None:
        """Close a connection past its deadline."""
        limits = self.guard.limits
        if self.phase == "headers":
            self.give_way(408, f"the request's headers did not arrive within {limits.header_timeout_s:g} s: send "
                               "the whole request at once")
        else:
            self.give_way(408, f"the request body came too slowly: after {limits.body_grace_s:g} s a body must "
                               f"average at least {limits.body_min_rate:g} bytes a second; send it at once")

    def give_way(self, status: int = 503, message: str = "") -> None:
        """Close now, telling a client that was sending a request why (`status`, `message`; by default: it made room
        for a new connection); the app still reading the request sees the client gone."""
        # A connection that has had no answer yet may have its request on the way (sent, not read): it is told why,
        # never closed in silence; an idle one kept after its answers is closed as keep-alive connections are.
        if self.phase == "headers":
            partial = bool(self.phase_bytes) or unread_bytes(self.transport) > 0
            sending = partial or not self.served
        else:
            partial = sending = self.phase == "body" and self.cycle is not None and not self.cycle.response_started
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True            # the app's sends go nowhere, its receive says disconnect
            self.cycle.message_event.set()
        if status == 408 and partial:                 # a deadline: told when part of a request came
            self.close_with(answer(408, "Request Timeout", message))
        elif status != 408 and sending:
            self.close_with(answer(503, "Service Unavailable", message or (
                "too many connections from this address (or in all): this request, the slowest to arrive, made "
                "room for a new one; send requests whole"), retry_after=RETRY_AFTER_S))
        else:
            self.guard.remove(self)
            self.disarm()
            self.phase = "busy"
            self.transport.close()


def guarded_protocol(limits: Optional[ConnectionLimits] = None) -> type:
    """A protocol class for one server: its own count of connections under `limits`."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": Connections(limits or ConnectionLimits())})


def server_config(app, limits: Optional[ConnectionLimits] = None, **options):
    """uvicorn.Config for `app` (other uvicorn `options` as given) with the guarded protocol and a listen backlog
    that fits the open-file headroom."""
    import uvicorn

    return uvicorn.Config(app, http=guarded_protocol(limits), backlog=accept_batch(), **options)


@contextlib.contextmanager
def guarded_configs(limits: Optional[ConnectionLimits] = None):
    """While it lasts, every uvicorn.Config made without its own protocol gets the guarded one, as server_config
    gives: for a server that makes its uvicorn.Config itself (gradio's launch, in the thread that launches it)."""
    import uvicorn

    made = uvicorn.Config

    class GuardedConfig(made):
        def __init__(self, app, **options):
            if options.get("http", "auto") == "auto":
                options.update(http=guarded_protocol(limits), backlog=options.get("backlog") or accept_batch())
            super().__init__(app, **options)
    uvicorn.Config = GuardedConfig
    try:
        yield
    finally:
        uvicorn.Config = made
