"""The NVRTC kernels' PTX disk cache (``trellis_nvrtc.cache_dir``): a later process loads the PTX instead of
compiling (about a second per kernel saved at each start), a damaged file is compiled again and replaced,
and a cache that cannot be written costs nothing but the next process's compile (tests/gpu: skipped
without CUDA)."""
import uuid

import pytest
import torch

from trellis import fastpaths

DEV = "cuda"

SOURCE = r"""
extern "C" __global__ void NAME(const float* x, float* y, int n, double a) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = x[i] * (float)a + 1.0f;
}
"""


@pytest.fixture
def nvrtc(tmp_path, monkeypatch):
    module = fastpaths._import_kernel_module("trellis_nvrtc")
    monkeypatch.setenv(module.CACHE_ENV, str(tmp_path / "kernels"))
    return module


def fresh_kernel(module):
    """A kernel no process has compiled before (unique name), and a check that it runs right."""
    name = f"trellis_cache_test_{uuid.uuid4().hex[:12]}"
    source = SOURCE.replace("NAME", name)

    def build_and_run():
        for key in [k for k in module._cache if k[0] == name]:        # as a new process would
            del module._cache[key]
        kernel = module.compiled(source, name, DEV)
        x = torch.arange(1000, dtype=torch.float32, device=DEV)
        y = torch.empty_like(x)
        kernel(grid=(4, 1, 1), block=(256, 1, 1), args=[x, y, 1000, 2.5])
        torch.testing.assert_close(y, x * 2.5 + 1, rtol=0, atol=0)
    return name, build_and_run


def test_a_second_build_reads_the_ptx_from_disk(nvrtc, tmp_path):
    name, build = fresh_kernel(nvrtc)
    before = dict(nvrtc.stats)
    build()
    files = list((tmp_path / "kernels").glob(f"{name}-*.ptx"))
    assert len(files) == 1 and files[0].stat().st_size > 100
    assert nvrtc.stats["compiled"] == before["compiled"] + 1
    build()
    assert nvrtc.stats["from_disk"] == before["from_disk"] + 1 and nvrtc.stats["compiled"] == before["compiled"] + 1
    assert not list((tmp_path / "kernels").glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncated", "flipped", "no header", "empty"])
def test_a_damaged_file_is_compiled_again_and_replaced(nvrtc, tmp_path, damage):
    """Never handed to the driver: a truncated PTX made cuModuleLoadData crash the whole process."""
    name, build = fresh_kernel(nvrtc)
    build()
    (path,) = (tmp_path / "kernels").glob(f"{name}-*.ptx")
    good = path.read_bytes()
    head, body = good.split(b"\n", 1)
    mid = len(body) // 2
    bad = {"truncated": good[: len(good) // 3],
           "flipped": head + b"\n" + body[:mid] + bytes([body[mid] ^ 0x20]) + body[mid + 1:],
           "no header": body, "empty": b""}[damage]
    assert bad != good
    path.write_bytes(bad)
    before = dict(nvrtc.stats)
    build()
    assert nvrtc.stats["compiled"] == before["compiled"] + 1 and nvrtc.stats["from_disk"] == before["from_disk"], \
        (damage, before, nvrtc.stats, head[:80], len(body))
    assert path.read_bytes() == good


def test_an_unwritable_cache_still_gives_the_kernel(nvrtc, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(nvrtc.CACHE_ENV, str(blocker / "kernels"))   # cannot be created, even by root
    name, build = fresh_kernel(nvrtc)
    before = dict(nvrtc.stats)
    build()
    assert nvrtc.stats["failed_writes"] == before["failed_writes"] + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_the_cache_can_be_switched_off(nvrtc, monkeypatch, tmp_path):
    monkeypatch.setenv(nvrtc.CACHE_ENV, "off")
    assert nvrtc.cache_dir() is None
    name, build = fresh_kernel(nvrtc)
    before = dict(nvrtc.stats)
    build()
    build()
    assert nvrtc.stats["compiled"] == before["compiled"] + 2 and nvrtc.stats["from_disk"] == before["from_disk"]
