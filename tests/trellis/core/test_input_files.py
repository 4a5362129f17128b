"""Files read as input (trellis/core/inputfile.py): a FIFO, a device or a folder is refused at once, a file is read no
further than its bound whatever size it claims, and JSON nested deep is refused before it is parsed."""
import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers.repo import ROOT_DIR
from trellis.core.inputfile import (FileTooLargeError, InputFileError, NotRegularFileError, read_json_file,
                                    read_regular)

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX's")


def in_child(code: str, timeout: float = 30, memory_mb: int = 1500):
    """`code` run by a fresh interpreter whose address space is capped: a read that never ends fails fast and
    visibly (MemoryError or the timeout) instead of taking the machine's memory."""
    prelude = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({memory_mb << 20}, {memory_mb << 20}))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT_DIR, capture_output=True,
                          text=True, timeout=timeout)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipeline.json"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(NotRegularFileError, match=r"not a regular file \(it is a pipe \(FIFO\)\)"):
        read_json_file(fifo, 1 << 20)
    assert time.monotonic() - start < 2
    link = tmp_path / "link.json"
    link.symlink_to(fifo)
    with pytest.raises(NotRegularFileError, match="FIFO"):
        read_regular(link, 1 << 20)


def test_a_symlink_to_dev_zero_is_refused_at_once_in_bounded_memory(tmp_path):
    link = tmp_path / "settings.json"
    link.symlink_to("/dev/zero")
    done = in_child(f"""
        import time
        from trellis.core.inputfile import read_json_file, InputFileError
        start = time.monotonic()
        try:
            read_json_file({str(link)!r}, 16 << 20)
        except InputFileError as err:
            print("REFUSED", type(err).__name__, err.reason, round(time.monotonic() - start, 3))
    """)
    assert "REFUSED NotRegularFileError is not a regular file (it is a device)" in done.stdout, done.stderr
    assert float(done.stdout.split()[-1]) < 2


def test_a_folder_is_refused_and_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(NotRegularFileError, match="a folder"):
        read_json_file(tmp_path, 100)
    with pytest.raises(FileNotFoundError):
        read_json_file(tmp_path / "none.json", 100)


def test_the_bound_is_what_is_read_not_the_size_claimed(tmp_path):
    big = tmp_path / "big.json"
    big.write_bytes(b"[" + b"1," * 600_000 + b"1]")
    with pytest.raises(FileTooLargeError, match="larger than 1 MB"):
        read_json_file(big, 1 << 20)
    assert read_json_file(big, 2 << 20)[:3] == [1, 1, 1]


def test_json_nested_deep_is_refused_before_the_parser_recurses(tmp_path):
    deep = tmp_path / "pipeline.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputFileError, match=r"is not JSON \(JSON nested more than 32 levels deep\)") as caught:
        read_json_file(deep, 1 << 20)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, OSError)
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(InputFileError, match=r"not text \(UTF-8\)"):
        read_json_file(tmp_path / "bad.json", 100)
