"""installer/weights.py: model files are checked against their published size and sha256, downloads resume,
and a missing file is reported with where it comes from and where it goes. Nothing is downloaded from the
internet: a local HTTP server on 127.0.0.1 serves made-up files (with HTTP Range support, as the hub does)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from installer import weights
from installer.layout import Layout
from installer.weights import VerifiedCache, WeightFile, WeightsError, ensure, problem

from tests.helpers.servers import FileServer, closed_port_url, no_sleep


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def make_file(server: FileServer, tmp_path: Path, name: str, data: bytes, size=None, digest=None) -> WeightFile:
    server.files["/" + name] = data
    return WeightFile(f"test {name}", name, f"{server.url}/{name}", tmp_path / "models" / name,
                      len(data) if size is None else size, sha(data) if digest is None else digest)


# ------------------------------------------------------------------------------------ verification

def test_good_file_downloads_and_is_remembered(server, tmp_path):
    data = os.urandom(3 * weights.CHUNK + 123)
    wf = make_file(server, tmp_path, "a.safetensors", data)
    cache = VerifiedCache(tmp_path / "verified.json")
    ensure([wf], cache=cache, sleep=no_sleep)
    assert wf.dest.read_bytes() == data and not wf.dest.with_name("a.safetensors.part").exists()
    assert len(server.requests) == 1
    # A later start: known by size and mtime, not hashed or fetched again.
    again = VerifiedCache(tmp_path / "verified.json")
    assert again.knows(wf.dest, wf)
    ensure([wf], cache=again, sleep=no_sleep)
    assert len(server.requests) == 1


def test_wrong_size_is_a_clear_error(server, tmp_path):
    data = b"x" * 1000
    wf = make_file(server, tmp_path, "b.json", data, size=999)
    with pytest.raises(WeightsError) as e:
        ensure([wf], sleep=no_sleep)
    text = str(e.value)
    assert "has 1,000 bytes, but the published file has 999" in text
    assert f"{server.url}/b.json" in text and str(wf.dest) in text
    assert not wf.dest.exists() and not wf.dest.with_name("b.json.part").exists()


def test_wrong_hash_is_a_clear_error(server, tmp_path):
    data = b"y" * 5000
    wf = make_file(server, tmp_path, "c.onnx", data, digest=sha(b"something else"))
    with pytest.raises(WeightsError) as e:
        ensure([wf], sleep=no_sleep)
    text = str(e.value)
    assert f"has sha256 {sha(data)}, but the published sha256 is {sha(b'something else')}" in text
    assert "--weights-from" in text
    assert not wf.dest.exists()
    assert len(server.requests) == 2          # one fresh second try (a damaged transfer), then it gives up


def test_problem_of_local_files(tmp_path):
    f = tmp_path / "f.bin"
    wf = WeightFile("f", "f.bin", "http://unused", f, 4, sha(b"abcd"))
    assert problem(f, wf) == "is missing"
    f.write_bytes(b"abc")
    assert "has 3 bytes" in problem(f, wf)
    f.write_bytes(b"abce")
    assert "has sha256" in problem(f, wf)
    f.write_bytes(b"abcd")
    assert problem(f, wf) is None
    blob = WeightFile("g", "f.bin", "http://unused", f, 4, git_sha1=hashlib.sha1(b"blob 4\0abcd").hexdigest())
    assert problem(f, blob) is None


# ------------------------------------------------------------------------------------------ resume

def test_partial_file_resumes_with_a_range_request(server, tmp_path):
    data = os.urandom(2 * weights.CHUNK + 77)
    wf = make_file(server, tmp_path, "d.safetensors", data)
    wf.dest.parent.mkdir(parents=True)
    half = len(data) // 2
    wf.dest.with_name("d.safetensors.part").write_bytes(data[:half])
    ensure([wf], sleep=no_sleep)
    assert wf.dest.read_bytes() == data
    assert server.requests == [("/d.safetensors", f"bytes={half}-")]


def test_dropped_connection_resumes(server, tmp_path):
    data = os.urandom(3 * weights.CHUNK)
    wf = make_file(server, tmp_path, "e.pth", data)
    server.drop_after["/e.pth"] = weights.CHUNK + 5
    ensure([wf], sleep=no_sleep, retries=2)
    assert wf.dest.read_bytes() == data
    assert server.requests[0][1] is None
    assert server.requests[1][1] is not None and server.requests[1][1].startswith("bytes=")


def test_server_without_ranges_starts_again(server, tmp_path):
    data = os.urandom(100_000)
    wf = make_file(server, tmp_path, "f.pth", data)
    server.ranges = False
    wf.dest.parent.mkdir(parents=True)
    wf.dest.with_name("f.pth.part").write_bytes(data[:40_000])
    ensure([wf], sleep=no_sleep)
    assert wf.dest.read_bytes() == data


def test_short_damaged_file_in_place_is_resumed_and_wrong_one_replaced(server, tmp_path):
    data = os.urandom(50_000)
    wf = make_file(server, tmp_path, "g.onnx", data)
    wf.dest.parent.mkdir(parents=True)
    wf.dest.write_bytes(data[:20_000])            # an interrupted copy
    ensure([wf], sleep=no_sleep)
    assert wf.dest.read_bytes() == data and server.requests[-1][1] == "bytes=20000-"
    wf.dest.write_bytes(os.urandom(50_000))       # same size, other bytes
    ensure([wf], cache=VerifiedCache(None), sleep=no_sleep)
    assert wf.dest.read_bytes() == data


# ------------------------------------------------------------------------------- offline / local folder

def test_offline_message_names_every_file_and_where_it_goes(tmp_path):
    base = closed_port_url()
    files = [WeightFile(f"test {n}", n, f"{base}/{n}", tmp_path / "m" / n, 10 * 2 ** 20, "0" * 64)
             for n in ("pipeline.json", "ckpts/x.safetensors", "u2net.onnx")]
    with pytest.raises(WeightsError) as e:
        ensure(files, sleep=no_sleep, retries=1)
    text = str(e.value)
    assert "3 model file(s) are missing" in text
    for wf in files:
        assert wf.url in text and str(wf.dest) in text and wf.label in text
    assert "HF_ENDPOINT" in text and "--weights-from FOLDER" in text and "10.0 MiB" in text


def test_weights_from_a_local_folder(server, tmp_path):
    good, bad = b"good" * 100, b"bad!" * 100
    src = tmp_path / "usb"
    (src / "ckpts").mkdir(parents=True)
    (src / "ckpts" / "h.safetensors").write_bytes(good)
    (src / "i.onnx").write_bytes(bad)
    wf_h = WeightFile("h", "ckpts/h.safetensors", closed_port_url() + "/h", tmp_path / "m" / "ckpts/h.safetensors",
                      len(good), sha(good))
    wf_i = WeightFile("i", "i.onnx", closed_port_url() + "/i", tmp_path / "m" / "i.onnx", len(good), sha(good))
    with pytest.raises(WeightsError) as e:
        ensure([wf_h, wf_i], source_dir=src, sleep=no_sleep, retries=0)
    assert wf_h.dest.read_bytes() == good                  # checked, then copied in
    assert not wf_i.dest.exists()
    assert "1 model file(s)" in str(e.value) and "did not hold the files below" in str(e.value)


def test_404_is_not_retried_and_says_why(server, tmp_path):
    wf = WeightFile("j", "j.bin", f"{server.url}/nothing-here", tmp_path / "j.bin", 5, sha(b"12345"))
    with pytest.raises(WeightsError) as e:
        ensure([wf], sleep=no_sleep, retries=3)
    assert "HTTP 404" in str(e.value) and "wrong repo id" in str(e.value)
    assert len(server.requests) == 1


# ------------------------------------------------------------------------------- what the app needs

def test_manifest_and_destinations_agree_with_the_loaders(tmp_path, monkeypatch):
    """The URLs, file names and folders are the ones trellis/ itself uses (not a second copy of them)."""
    import torch

    from trellis.pipelines import preprocess
    from trellis.pipelines.trellis_image_to_3d import DINOV2_URL

    manifest = weights.load_manifest()
    layout = Layout.of(tmp_path)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    monkeypatch.delenv("TRELLIS_U2NET_URL", raising=False)
    monkeypatch.delenv("TRELLIS_DINOV2_URL", raising=False)
    plan = weights.wanted_files(layout)
    by_rel = {wf.rel: wf for wf in plan.files}
    assert manifest["extra"]["dinov2"]["url"] == DINOV2_URL
    assert manifest["extra"]["u2net"]["url"] == preprocess.U2NET_URL
    assert manifest["extra"]["u2net"]["file"] == preprocess.U2NET_FILE
    assert manifest["extra"]["u2net"]["md5"] == preprocess.U2NET_MD5
    for key, value in layout.app_env().items():
        monkeypatch.setenv(key, value)
    assert by_rel["u2net.onnx"].dest.parent == preprocess.default_model_dir()
    assert by_rel["dinov2_vitl14_reg4_pretrain.pth"].dest.parent == Path(torch.hub.get_dir()) / "checkpoints"
    assert plan.dinov2 == by_rel["dinov2_vitl14_reg4_pretrain.pth"].dest
    rev = manifest["pipeline"]["revision"]
    assert by_rel["ckpts/ss_flow_img_dit_L_16l8_fp16.safetensors"].url == \
        (f"https://huggingface.co/microsoft/TRELLIS-image-large/resolve/{rev}/"
         "ckpts/ss_flow_img_dit_L_16l8_fp16.safetensors")
    assert plan.model_dir == layout.models / "TRELLIS-image-large"
    # pipeline.json and its six networks (json + safetensors); the two training encoders are not fetched.
    pipeline = [wf for wf in plan.files if wf.dest.is_relative_to(plan.model_dir)]
    assert len(pipeline) == 13 and all(len(wf.sha256) == 64 and wf.size > 0 for wf in plan.files)
    assert not any("_enc_" in wf.rel for wf in plan.files)
    for wf in pipeline:
        if wf.rel.endswith(".safetensors"):
            assert wf.rel[:-len(".safetensors")] + ".json" in by_rel
    total = sum(wf.size for wf in plan.files)
    assert 4.3e9 < total < 4.6e9        # README: about 4.5 GB of weights


def test_mirror_and_other_repo_from_the_hub_listing(server, tmp_path):
    """Another repo id: sizes and hashes come from the hub's tree listing; a mirror is just another endpoint."""
    pipeline = json.dumps({"name": "TrellisImageTo3DPipeline",
                           "args": {"models": {"a": "ckpts/a"}, "image_cond_model": "ckpts/cond"}}).encode()
    blobs = {"pipeline.json": pipeline, "ckpts/a.json": b'{"name": "X"}', "ckpts/a.safetensors": os.urandom(4096),
             "ckpts/cond.json": b"{}", "ckpts/cond.safetensors": os.urandom(512), "README.md": b"hi"}
    listing = []
    for path, data in blobs.items():
        item = {"type": "file", "path": path, "size": len(data)}
        if path.endswith(".safetensors"):
            item["lfs"] = {"oid": sha(data), "size": len(data)}
        else:
            item["oid"] = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        listing.append(item)
    server.files["/api/models/someone/other-trellis/tree/main"] = json.dumps(listing).encode()
    for path, data in blobs.items():
        server.files[f"/someone/other-trellis/resolve/main/{path}"] = data
    manifest = weights.load_manifest()
    manifest["extra"]["u2net"].update(url=f"{server.url}/u2net.onnx", bytes=3, sha256=sha(b"u2n"))
    server.files["/u2net.onnx"] = b"u2n"
    layout = Layout.of(tmp_path)
    os.environ.pop("TRELLIS_U2NET_URL", None)
    plan = weights.ensure_for_app(layout, repo="someone/other-trellis", endpoint=server.url, manifest=manifest,
                                  sleep=no_sleep)
    assert plan.model_dir == layout.models / "someone--other-trellis"
    assert plan.dinov2 is None                           # its conditioner is a checkpoint of its own
    got = sorted(p.relative_to(plan.model_dir).as_posix() for p in plan.model_dir.rglob("*") if p.is_file())
    assert got == [".trellis-listing.json", "ckpts/a.json", "ckpts/a.safetensors", "ckpts/cond.json",
                   "ckpts/cond.safetensors", "pipeline.json"]
    assert (layout.u2net_dir / "u2net.onnx").read_bytes() == b"u2n"
    # Offline later: the kept listing is enough, and the files are known-good.
    server.files.clear()
    weights.ensure_for_app(layout, repo="someone/other-trellis", endpoint=closed_port_url(), manifest=manifest,
                           sleep=no_sleep)
