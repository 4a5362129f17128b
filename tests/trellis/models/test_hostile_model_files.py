"""Model folders that are hostile or broken end in a clear WeightsFileError / ValueError naming the file, fast: a FIFO
or a /dev/zero symlink as a weights or config file is refused before it is opened for reading (never blocks), a
pipeline.json nested 100,000 deep is refused before the parser recurses, and a weights header listing a million
tensors is refused without walking them."""
import json
import os
import shutil
import struct
import threading
import time

import pytest

from trellis.models import WeightsFileError, from_pretrained, read_safetensors
from trellis.models.device_load import MAX_TENSORS

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX's")
STEM = "ckpts/ss_dec_conv3d_tiny_fp16"


@pytest.fixture
def model(tiny_pipeline_dir, tmp_path):
    folder = tmp_path / "M"
    shutil.copytree(tiny_pipeline_dir, folder)
    return folder


def ends_within(seconds, fn, *args):
    """What `fn(*args)` raised (or returned), run in a daemon thread: a test of a call that blocks fails instead of
    hanging the suite."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as err:           # the outcome under test
            out["error"] = err
    worker = threading.Thread(target=run, daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{fn.__name__} still running after {seconds} s"
    return out.get("error", out.get("value")), time.monotonic() - start


def test_a_fifo_or_dev_zero_weights_file_is_refused_without_blocking(model):
    weights = model / f"{STEM}.safetensors"
    os.remove(weights)
    os.mkfifo(weights)
    err, _ = ends_within(10, from_pretrained, str(model / STEM))
    assert isinstance(err, WeightsFileError), repr(err)
    assert str(err) == f"cannot read {weights}: it is not a regular file (it is a pipe (FIFO))"
    os.remove(weights)
    os.symlink("/dev/zero", weights)
    err, _ = ends_within(10, read_safetensors, str(weights))
    assert isinstance(err, WeightsFileError) and "not a regular file (it is a device)" in str(err), repr(err)


def test_a_fifo_ckpt_json_is_refused_without_blocking(model):
    config = model / f"{STEM}.json"
    os.remove(config)
    os.mkfifo(config)
    err, _ = ends_within(10, from_pretrained, str(model / STEM))
    assert isinstance(err, OSError) and "not a regular file (it is a pipe (FIFO))" in str(err), repr(err)


def test_a_pipeline_json_nested_deep_is_refused_naming_the_file(model):
    from trellis.pipelines import TrellisImageTo3DPipeline, from_pretrained as pipeline_from_pretrained

    (model / "pipeline.json").write_text("[" * 100_000 + "]" * 100_000)
    for load in (pipeline_from_pretrained, TrellisImageTo3DPipeline.from_pretrained):
        err, _ = ends_within(30, load, str(model))
        assert isinstance(err, ValueError) and not isinstance(err, RecursionError), repr(err)
        assert str(err) == f"{model / 'pipeline.json'} is not JSON (JSON nested more than 32 levels deep)"


def with_empty_tensors(src, dst, n):
    raw = open(src, "rb").read()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    header.update({f"empty.{i}": {"dtype": "F16", "shape": [0], "data_offsets": [0, 0]} for i in range(n)})
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    open(dst, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + size:])


@pytest.mark.parametrize("extra", [1_000_000, MAX_TENSORS + 1, 50])
def test_a_header_of_many_empty_tensors_is_refused_fast(model, extra):
    weights = str(model / f"{STEM}.safetensors")
    with_empty_tensors(weights, weights, extra)
    err, took = ends_within(60, from_pretrained, str(model / STEM))
    if extra == 1_000_000:           # a 60 MB header: refused before it is parsed
        assert isinstance(err, WeightsFileError) and "its header is" in str(err) and "MB" in str(err), repr(err)
    elif extra > 50:                 # a header under the byte cap: refused on its count, before its entries are walked
        assert isinstance(err, WeightsFileError) and f"{MAX_TENSORS:,}" in str(err), repr(err)
    else:                            # a few: the manifest's names refuse them before the data is read
        assert isinstance(err, ValueError) and "unexpected ['empty.0', 'empty.1'" in str(err), repr(err)
    assert took < 10, took


def test_the_conditioners_config_and_a_token_file_as_fifos_do_not_block(model, tmp_path):
    from trellis.models.image_conditioner import load_image_conditioner
    from desktop.families.trellis2_availability import has_hf_token

    config = model / "ckpts" / "image_cond_dinov2_tiny.json"
    os.remove(config)
    os.mkfifo(config)
    err, _ = ends_within(10, load_image_conditioner, str(model / "ckpts" / "image_cond_dinov2_tiny"))
    assert isinstance(err, OSError) and "not a regular file (it is a pipe (FIFO))" in str(err), repr(err)
    token = tmp_path / "token"
    os.mkfifo(token)
    found, _ = ends_within(10, has_hf_token, {"HF_TOKEN_PATH": str(token), "XDG_CACHE_HOME": str(tmp_path)})
    assert found is False
    token.unlink()
    token.write_text("hf_abc\n")
    assert has_hf_token({"HF_TOKEN_PATH": str(token), "XDG_CACHE_HOME": str(tmp_path)}) is True


def test_a_fifo_tokenizer_file_is_refused_without_blocking(tmp_path):
    from trellis.core.inputfile import NotRegularFileError
    from trellis.models.clip_tokenizer import ClipTokenizer

    os.mkfifo(tmp_path / "tokenizer.json")
    err, _ = ends_within(10, ClipTokenizer.from_folder, str(tmp_path))
    assert isinstance(err, NotRegularFileError) and "tokenizer.json is not a regular file" in str(err), repr(err)
