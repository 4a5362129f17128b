"""installer/weights_trellis2.py and hf_token.py: TRELLIS.2 only when asked (--trellis2), DINOv3 only with a token
whose account the hub lets in, the token never shown or kept unless asked, and v1 unharmed whatever happens.
A local HTTP server plays the hub (TRELLIS.2's files are the tiny random-weight pipeline's; DINOv3's paths answer
401 without a token and 403 to an account without access); the result is checked by the library's availability
check and loaded by the real TRELLIS.2 loader."""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from installer import hf_token
from installer import launch as launch_mod
from installer import weights
from installer import weights_trellis2 as w2
from installer.log import Log
from installer.options import UsageError, parse
from tests.helpers.install_apps import fake_venv, good_state, make_app
from tests.helpers.servers import FileServer

GOOD, NO_GRANT = "hf_TestTokenGood123", "hf_TestTokenNoAccess456"
DINO = "/facebook/dinov3-vitl16-pretrain-lvd1689m/resolve/main/"


# ------------------------------------------------------------------------------------------ file checks

def test_safetensors_and_json_checks(tmp_path):
    good = tmp_path / "a.safetensors"
    save_file({"w": np.zeros((8, 4), np.float32), "b": np.ones(3, np.float16)}, str(good))
    data = good.read_bytes()
    assert w2.safetensors_problem(good) is None
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[:-7])
    assert "is cut off" in w2.safetensors_problem(cut)
    extra = tmp_path / "extra.safetensors"
    extra.write_bytes(data + b"junk")
    assert "after its last tensor" in w2.safetensors_problem(extra)
    page = tmp_path / "page.safetensors"
    page.write_bytes(b"<html>Access denied</html>")
    assert "not a safetensors file" in w2.safetensors_problem(page)
    (tmp_path / "x.json").write_text("<html>")
    assert "not a JSON file" in w2.json_problem(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"name": "X"}')
    assert w2.json_problem(tmp_path / "y.json") is None


# ------------------------------------------------------------------------------------------ the token

def test_token_sources_in_order_and_never_shown(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf")}
    assert hf_token.find_token(environ=env) is None
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "token").write_text(GOOD + "\n")
    login = hf_token.find_token(environ=env)
    assert login.value == GOOD and "your Hugging Face login" in login.source
    env["HF_TOKEN"] = NO_GRANT
    assert hf_token.find_token(environ=env).value == NO_GRANT
    f = tmp_path / "tok.txt"
    f.write_text("\n  " + GOOD + "  \n")
    chosen = hf_token.find_token(f, environ=env)
    assert chosen.value == GOOD and chosen.source == f"the file {f}"
    assert GOOD not in repr(chosen) and GOOD not in str(chosen)
    f.write_text("my token is " + GOOD)
    with pytest.raises(hf_token.TokenError) as e:
        hf_token.find_token(f, environ=env)
    assert GOOD not in str(e.value) and "spaces" in str(e.value)
    with pytest.raises(hf_token.TokenError, match="cannot be read"):
        hf_token.find_token(tmp_path / "none.txt", environ=env)
    # Saved only where huggingface_hub keeps it ($HF_TOKEN_PATH first), owner-only; the same token again is no-op.
    env["HF_TOKEN_PATH"] = str(tmp_path / "elsewhere" / "token")
    path = hf_token.save_token(chosen, environ=env)
    assert path == tmp_path / "elsewhere" / "token" and path.read_text() == GOOD
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert hf_token.save_token(chosen, environ=env) is None


def test_token_options_go_with_trellis2():
    assert parse(["--trellis2", "--hf-token-file", "t.txt", "--save-hf-token"]).launcher_args() == \
        ["--trellis2", "--save-hf-token", "--hf-token-file", "t.txt"]
    for bad in (["--hf-token-file", "t.txt"], ["--save-hf-token"], ["--trellis2", "--skip-weights"]):
        with pytest.raises(UsageError):
            parse(bad)


# ------------------------------------------------------------------------------------------ the hub, played

def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_hub(server: FileServer, tiny: Path, tmp_path: Path, monkeypatch) -> None:
    """The v1 files (made up, except the structure decoder TRELLIS.2 borrows: the tiny one), TRELLIS.2's and
    DINOv3's (the tiny pipeline's), and manifests that point at them."""
    rev = "0" * 40
    dec = "ckpts/ss_dec_conv3d_16l8_fp16"
    v1 = {"pipeline.json": b'{"name": "TrellisImageTo3DPipeline"}'}
    for ext in (".json", ".safetensors"):
        v1[dec + ext] = (tiny / "microsoft" / "TRELLIS-image-large" / (dec + ext)).read_bytes()
    for rel, data in v1.items():
        server.files[f"/microsoft/TRELLIS-image-large/resolve/{rev}/{rel}"] = data
    server.files["/dinov2.pth"], server.files["/u2net.onnx"] = b"dino" * 10, b"u2net" * 10
    entry = lambda data: {"bytes": len(data), "sha256": sha(data)}   # noqa: E731
    base = {"pipeline": {"repo": "microsoft/TRELLIS-image-large", "revision": rev,
                         "files": {rel: entry(data) for rel, data in v1.items()}},
            "extra": {"dinov2": {"file": "dinov2_vitl14_reg4_pretrain.pth", "url": f"{server.url}/dinov2.pth",
                                 **entry(b"dino" * 10)},
                      "u2net": {"file": "u2net.onnx", "url": f"{server.url}/u2net.onnx", **entry(b"u2net" * 10)}}}
    (tmp_path / "base.json").write_text(json.dumps(base))
    monkeypatch.setattr(weights, "MANIFEST_PATH", tmp_path / "base.json")
    for path in tiny.rglob("*"):
        rel = path.relative_to(tiny).as_posix()
        if path.is_file() and not rel.startswith(("microsoft/", "facebook/")):
            server.files[f"/microsoft/TRELLIS.2-4B/resolve/main/{rel}"] = path.read_bytes()
    for name in ("config.json", "model.safetensors"):
        server.files[DINO + name] = (tiny / "facebook" / "dinov3-vitl16-pretrain-lvd1689m" / name).read_bytes()
    server.gate = lambda path, auth: (None if not path.startswith(DINO) or auth == f"Bearer {GOOD}"
                                      else 401 if auth is None else 403)
    manifest = w2.load_trellis2_manifest()
    manifest["pipeline"]["approx_bytes"] = manifest["conditioner"]["approx_bytes"] = 10 ** 6   # the free-space check
    (tmp_path / "t2.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(w2, "MANIFEST_PATH", tmp_path / "t2.json")
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "TRELLIS_U2NET_URL", "TRELLIS_DINOV2_URL", "HF_ENDPOINT",
                "TRELLIS_DESKTOP_MODEL", "TRELLIS_DINOV2_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "user-hf" / "token"))      # no login token yet
    monkeypatch.setenv("HF_HOME", str(tmp_path / "user-hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under the app folder (its .venv aside) whose bytes contain `secret`."""
    return [p for p in root.rglob("*") if p.is_file() and ".venv" not in p.parts and secret.encode() in p.read_bytes()]


def test_trellis2_only_with_a_token_the_hub_lets_in(tiny_trellis2_dir, tmp_path, monkeypatch, capsys):
    from desktop.families.trellis2_availability import ACCESS_RECORD, DINOV3_PAGE, TRELLIS2_FOLDER, \
        trellis2_availability

    manifest = w2.load_trellis2_manifest()
    assert (ACCESS_RECORD, DINOV3_PAGE, TRELLIS2_FOLDER) == (manifest["access_record"],
                                                             manifest["conditioner"]["page"],
                                                             manifest["pipeline"]["folder"])
    server = FileServer()
    started = []
    monkeypatch.setattr(launch_mod, "_run", lambda cmd, env, cwd, log: started.append(env) or 0)
    try:
        fake_hub(server, Path(tiny_trellis2_dir), tmp_path, monkeypatch)
        layout = make_app(tmp_path)
        fake_venv(layout, good_state(layout))
        models, t2_paths = layout.models, [p for p, _ in server.files.items() if "/TRELLIS.2-4B/" in p]
        env = {"TRELLIS_MODEL_DIR": str(models), "HF_HOME": str(tmp_path / "app-hf"),
               "XDG_CACHE_HOME": str(tmp_path / "user-cache")}

        def start(*args):
            rc = launch_mod.launch(layout, parse(["--hf-endpoint", server.url, "--retries", "0", *args]),
                                   Log(layout.log_file))
            out, err = capsys.readouterr()
            assert rc == 0 and (models / "TRELLIS-image-large" / "pipeline.json").is_file()   # v1 starts regardless
            return out + err

        # Not asked: nothing of TRELLIS.2 or DINOv3 is touched.
        start()
        assert not any("TRELLIS.2" in p or p.startswith(DINO) for p, _ in server.requests)
        assert trellis2_availability(environ=env).reason == "no_token"

        # `python -m installer weights --trellis2` without a token: v1 checked, then exit 5 with the reason.
        from installer.__main__ import main as installer_main
        assert installer_main(["weights", "--trellis2", "--app-dir", str(layout.app_dir), "--hf-endpoint",
                               server.url]) == 5
        assert "TRELLIS.2 is not available: no Hugging Face token was found" in capsys.readouterr().err

        # Asked, no token anywhere: said plainly, with the page to accept; nothing downloaded.
        said = start("--trellis2")
        assert "TRELLIS.2 is not available: no Hugging Face token was found" in said and DINOV3_PAGE in said
        assert "DINOv3 License" in said and not (models / TRELLIS2_FOLDER).exists()
        assert not any(p.startswith(DINO) or p in t2_paths for p, _ in server.requests)

        # A token whose account has no access (HTTP 403): recorded for the app, still nothing big downloaded.
        (tmp_path / "no.txt").write_text(NO_GRANT)
        said = start("--trellis2", "--hf-token-file", str(tmp_path / "no.txt"))
        assert "no access to DINOv3" in said and "HTTP 403" in said and DINOV3_PAGE in said
        assert not any(p in t2_paths for p, _ in server.requests)
        not_yet = trellis2_availability(environ=env)
        assert not_yet.reason == "dinov3_not_accepted" and DINOV3_PAGE in not_yet.message

        # The good token, from a file, saved as asked; DINOv3 resumes a partial file; then every TRELLIS.2 network.
        dino_dir = models / manifest["conditioner"]["folder"]
        half = server.files[DINO + "model.safetensors"][:5000]
        (dino_dir / "model.safetensors.part").write_bytes(half)
        (tmp_path / "good.txt").write_text(GOOD + "\n")
        said = start("--trellis2", "--hf-token-file", str(tmp_path / "good.txt"), "--save-hf-token")
        assert "TRELLIS.2 is ready" in said and not (dino_dir / ACCESS_RECORD).exists()
        assert (DINO + "model.safetensors", "bytes=5000-") in server.requests
        sent = {p for p, a in server.auth if a == f"Bearer {GOOD}"}
        assert sent and all(p.startswith(DINO) for p in sent)          # the token went to DINOv3's files only
        fetched = {p for p, _ in server.requests}
        shape_enc = "/ckpts/shape_enc_"             # texturing_pipeline.json's encoder: textures on a user's mesh
        assert fetched >= {p for p in t2_paths if "_enc_" not in p or shape_enc in p}
        assert any(p.endswith("/texturing_pipeline.json") for p in fetched)
        assert not any("_enc_" in p and shape_enc not in p for p in fetched)   # the texture encoder: training only
        assert not any("rmbg" in p.lower() or "briaai" in p for p in fetched)   # pipeline.json's rembg_model: never
        saved = tmp_path / "user-hf" / "token"
        assert saved.read_text() == GOOD and str(saved) in said
        for secret in (GOOD, NO_GRANT):
            assert secret not in said and not files_holding(layout.app_dir, secret)
            assert not any(secret in v for e in started for v in e.values())

        ready = trellis2_availability(environ=env)
        assert ready.available and ready.reason == "ready" and ready.model_dir == str(models / TRELLIS2_FOLDER)
        from trellis.pipelines import Trellis2ImageTo3DPipeline
        pipeline = Trellis2ImageTo3DPipeline.from_pretrained(ready.model_dir)    # the loader finds all of it
        assert set(pipeline.models) >= {"sparse_structure_decoder", "tex_slat_flow_model_1024"}
        from trellis.pipelines import Trellis2TexturingPipeline
        texturing = Trellis2TexturingPipeline.from_pretrained(ready.model_dir)     # and the texturing one
        assert "shape_slat_encoder" in texturing.models

        # A later start with --trellis2: all present and known good, nothing fetched again.
        n = len(server.requests)
        assert "TRELLIS.2 is ready" in start("--trellis2")
        assert len(server.requests) == n
    finally:
        server.close()
