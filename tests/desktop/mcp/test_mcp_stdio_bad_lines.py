"""`python -m desktop mcp` over stdio answers lines that are not JSON-RPC messages as JSON-RPC 2.0 asks (-32700 for
a line that is not JSON, -32600 for JSON that is not a message, id null where none can be read) and serves the next
line; a real subprocess on the tiny random-weight pipeline, spoken to line by line on its pipes."""
import json
import os
import queue
import signal
import subprocess
import sys
import threading

import pytest

from desktop.mcp.stdio import error_for_line
from tests.helpers.repo import ROOT_DIR
from tests.helpers.rest import TIMEOUT

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "1"}}}


class RawServer:
    """The stdio server as a child process: send() writes one line, answer() returns the next JSON line it wrote."""

    def __init__(self, model_dir, outputs):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "desktop", "mcp", "--model", model_dir, "--outputs", str(outputs),
             "--device", "cpu"], cwd=ROOT_DIR, env=dict(os.environ), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        self.lines = queue.Queue()
        threading.Thread(target=self.collect, daemon=True).start()

    def collect(self):
        for raw in self.process.stdout:
            self.lines.put(raw)
        self.lines.put(None)

    def send(self, text: str):
        self.process.stdin.write(text.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def answer(self) -> dict:
        raw = self.lines.get(timeout=TIMEOUT)
        assert raw is not None, "the server closed stdout instead of answering"
        return json.loads(raw)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


@pytest.fixture
def raw_server(tiny_pipeline_dir, tmp_path):
    server = RawServer(tiny_pipeline_dir, tmp_path / "outputs")
    yield server
    server.stop()


def test_bad_lines_get_json_rpc_errors_and_the_next_line_is_served(raw_server):
    raw_server.send("this is not json {")
    assert raw_server.answer() == {"jsonrpc": "2.0", "id": None, "error": {
        "code": -32700, "message": "Parse error", "data": error_for_line("this is not json {")["error"]["data"]}}
    raw_server.send(json.dumps(INITIALIZE))
    answer = raw_server.answer()
    assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "trellis-desktop", answer
    raw_server.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))

    for bad, request_id in [("[1, 2]", None), ("{}", None), ('"tools/list"', None),
                            ('{"jsonrpc": "2.0", "id": 7, "method": 5}', 7),
                            ('{"jsonrpc": "1.0", "id": "x", "method": "tools/list"}', "x"),
                            ('{"jsonrpc": "2.0", "id": [3], "method": "tools/list"}', None),
                            ('{"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"}', None)]:
        raw_server.send(bad)
        error = raw_server.answer()
        assert error["id"] == request_id and error["error"]["code"] == -32600, (bad, error)
        assert error["error"]["message"] == "Invalid Request", (bad, error)

    raw_server.send("")                                  # a blank line carries no message: no answer
    raw_server.send("{\"jsonrpc\": \"2.0\", \"id\": 2, \"method\": \"tools/list\"")      # cut short: not JSON
    assert raw_server.answer()["error"]["code"] == -32700
    raw_server.send(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}))
    answer = raw_server.answer()
    assert answer["id"] == 3, answer
    names = {t["name"] for t in answer["result"]["tools"]}
    assert names == {"generate_3d", "new_look", "export_job", "job_status", "list_jobs", "cancel_job"}

    raw_server.process.stdin.close()                     # the client leaves: the server ends, status 0
    assert raw_server.process.wait(TIMEOUT) == 0
    assert raw_server.lines.get(timeout=TIMEOUT) is None     # and wrote nothing after its answers


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM reaches a Windows process as TerminateProcess")
def test_sigterm_ends_the_server_while_the_client_keeps_stdin_open(raw_server):
    raw_server.send(json.dumps(INITIALIZE))
    assert raw_server.answer()["id"] == 1
    raw_server.process.send_signal(signal.SIGTERM)
    assert raw_server.process.wait(60) == 0              # not held until the client's next line


def test_error_for_line_passes_every_message_kind_and_reads_ids():
    for good in [json.dumps(INITIALIZE), '{"jsonrpc": "2.0", "method": "notifications/initialized"}',
                 '{"jsonrpc": "2.0", "id": "a", "result": {}}',
                 '{"jsonrpc": "2.0", "id": 4, "error": {"code": -1, "message": "no"}}', "  \r\n"]:
        assert error_for_line(good) is None, good
    assert error_for_line('{"jsonrpc": "2.0", "id": true, "method": 1}')["id"] is None     # a bool is no id
    assert error_for_line('{"jsonrpc": "2.0", "id": 9, "method": 1}')["id"] == 9
    assert error_for_line('{"jsonrpc": "2.0", "id": null, "method": "tools/list"}')["error"]["code"] == -32600
    assert error_for_line("{'single': 'quotes'}")["error"]["code"] == -32700
