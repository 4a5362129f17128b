"""The MCP server over stdio, with JSON-RPC 2.0's answers to lines that are not messages.

The SDK's stdio transport drops a line it cannot read: the client that sent it waits forever for an answer. Here a
reader of ours stands between the wire and the SDK's transport: a line that is not JSON is answered -32700
"Parse error", a JSON value that is not a JSON-RPC message (an array included: MCP has no batches) -32600
"Invalid Request", with the request's id where one can be read and null otherwise; every good line goes on to the
SDK unchanged, and the line after a bad one is served as usual. The answers go out through the SDK's own writer,
so they never split one of its messages on stdout.
"""
import json
import os
import sys
from typing import Optional

import anyio
import anyio.from_thread
import anyio.lowlevel
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import JSONRPCError, JSONRPCNotification, jsonrpc_message_adapter
from pydantic import ValidationError

from trellis.core.concurrency import start_thread

PARSE_ERROR, INVALID_REQUEST = -32700, -32600


def error_for_line(line: str) -> Optional[dict]:
    """The JSON-RPC error object that answers `line` (a dict: jsonrpc, id, error), or None for a message the SDK
    reads (or a blank line, which carries none)."""
    if not line.strip():
        return None
    try:
        message = jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValidationError:
        message = None
    if message is not None and not isinstance(message, JSONRPCNotification):
        return None
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as err:
        return error_answer(PARSE_ERROR, "Parse error", None, f"the line is not JSON: {err}")
    if message is None:
        return error_answer(INVALID_REQUEST, "Invalid Request", readable_id(value),
                            "expected one JSON-RPC 2.0 request, notification or response object")
    # The SDK reads a request whose id is no string or integer as a notification, which nobody answers.
    if isinstance(message, JSONRPCNotification) and "id" in value:
        return error_answer(INVALID_REQUEST, "Invalid Request", None, "a request's id is a string or an integer")
    return None


def readable_id(value) -> Optional[object]:
    """The id of `value` when it is an object whose id a JSON-RPC id can be (a string or an integer), else None."""
    if not isinstance(value, dict):
        return None
    found = value.get("id")
    if isinstance(found, str) or (isinstance(found, int) and not isinstance(found, bool)):
        return found
    return None


def error_answer(code: int, message: str, request_id, detail: str) -> dict:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message, "data": detail}}


class CheckedLines:
    """The async line source the SDK's stdio transport reads (its `stdin`): lines of the binary stream `wire`, each
    bad one answered through `answer` (an async callable taking the error dict) and left out."""

    def __init__(self, wire, answer):
        self.wire = wire
        self.answer = answer
        self.lines = None

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        if self.lines is None:
            self.lines = self.start_reading()
        while True:
            try:
                raw = await self.lines.receive()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            line = raw.decode("utf-8", errors="replace")        # as the SDK's own reader decodes
            error = error_for_line(line)
            if error is None:
                return line
            await self.answer(error)

    def start_reading(self):
        """Read the wire on a daemon thread: one blocked on a silent client then never keeps the process from
        exiting after a signal. Returns the receive end of the raw lines."""
        send, receive = anyio.create_memory_object_stream(1)
        token = anyio.lowlevel.current_token()

        def read() -> None:
            try:
                for raw in iter(self.wire.readline, b""):
                    anyio.from_thread.run(send.send, raw, token=token)
                anyio.from_thread.run(send.aclose, token=token)
            except (RuntimeError, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                return                          # the server (or its event loop) ended first
        start_thread(read, name="MCP stdin")
        return receive


class WireAnswers:
    """`answer` of CheckedLines: each error handed to the SDK's write stream once the transport gives it."""

    def __init__(self):
        self.stream = None
        self.ready = anyio.Event()

    def use(self, write_stream) -> None:
        self.stream = write_stream
        self.ready.set()

    async def __call__(self, error: dict) -> None:
        await self.ready.wait()
        try:
            await self.stream.send(SessionMessage(JSONRPCError.model_validate(error)))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass                                # the server is ending: nobody reads answers any more


def take_stdin():
    """The wire behind fd 0 as a binary stream of our own, fd 0 then pointed at the null device (the SDK does the
    same when it reads stdin itself: children and stray reads must not eat the client's messages). Returns
    (stream, restore)."""
    wire = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    if sys.platform == "win32":
        from mcp.os.win32.utilities import rebind_std_handle_to_fd

        rebind_std_handle_to_fd(0)

    def restore() -> None:
        os.dup2(wire, 0)
        if sys.platform == "win32":
            rebind_std_handle_to_fd(0)
    # closefd=False: the reading thread left behind by a signal may still block on it
    return os.fdopen(wire, "rb", closefd=False), restore


async def run_checked_stdio(server) -> None:
    """Serve the MCPServer `server` on stdin and stdout until the client closes stdin, answering bad lines."""
    # The SDK pinned in requirements_2 runs an MCPServer only through this attribute (its own Client does too).
    lowlevel = server._lowlevel_server
    wire, restore = take_stdin()
    answers = WireAnswers()
    try:
        async with stdio_server(stdin=CheckedLines(wire, answers)) as (read_stream, write_stream):
            answers.use(write_stream)
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
    finally:
        restore()
