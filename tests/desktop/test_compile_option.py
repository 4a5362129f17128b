"""The compiled-flow-blocks switch: MemoryPolicy.compile, its default $TRELLIS_COMPILE_FLOWS, and the
app's --compile on the servers and the batch command (which pass it on to their workers and Ray actors)."""
import os

import pytest
import torch

from desktop import options
from desktop.api import server as api_server
from desktop.batch import command as batch_command
from desktop.batch import ray_pool
from desktop.ui import server as ui_server
from trellis.pipelines import memory
from trellis.pipelines.memory import COMPILE_ENV, MemoryPolicy, compile_default


def test_the_default_follows_the_environment(monkeypatch):
    monkeypatch.setenv(COMPILE_ENV, "off")
    monkeypatch.delenv(COMPILE_ENV)
    assert compile_default() is False
    assert MemoryPolicy().resolve(torch.device("cpu")).compile is False
    for on in ("1", "on", "TRUE", " yes "):
        monkeypatch.setenv(COMPILE_ENV, on)
        assert compile_default() is True and MemoryPolicy().resolve(torch.device("cpu")).compile is True
    assert MemoryPolicy(compile=False).resolve(torch.device("cpu")).compile is False     # explicit wins
    for off in ("0", "off", "no", ""):
        monkeypatch.setenv(COMPILE_ENV, off)
        assert compile_default() is False
    monkeypatch.setenv(COMPILE_ENV, "sometimes")
    with pytest.raises(ValueError, match="TRELLIS_COMPILE_FLOWS='sometimes'"):
        compile_default()


def test_the_app_names_the_same_variable():
    assert options.COMPILE_ENV == memory.COMPILE_ENV


@pytest.mark.parametrize("parser", [api_server.build_parser, ui_server.build_parser, batch_command.build_parser])
def test_compile_flag_sets_the_variable_for_the_process_and_its_workers(parser, monkeypatch, tmp_path):
    monkeypatch.setenv(COMPILE_ENV, "off")       # recorded by monkeypatch: whatever --compile sets is undone after
    monkeypatch.delenv(COMPILE_ENV)
    extra = [str(tmp_path), "-o", str(tmp_path / "out")] if parser is batch_command.build_parser else []
    args = parser().parse_args(extra)
    options.apply_compile_option(args)
    assert COMPILE_ENV not in os.environ             # not asked: left alone
    args = parser().parse_args([*extra, "--compile"])
    options.apply_compile_option(args)
    assert os.environ[COMPILE_ENV] == "on" and compile_default()
    assert ray_pool._actor_env()[COMPILE_ENV] == "on"              # Ray actors on other nodes see it too
    assert "--compile" in parser().format_help()
