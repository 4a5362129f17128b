"""The container's pieces that run without a container: the image's command (installer/container.py), the install plan
for a GPU that is not here (--gpu-build, installer/target.py), and what the Containerfile and compose.yaml promise.
The image itself is built and run by .ci/container.sh (Podman, in CI)."""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading

import pytest
import yaml
from tests.helpers.repo import ROOT

from installer import container
from installer.detect import System
from installer.options import UsageError, parse
from installer.target import GPU_BUILD_TAGS, plan_for_build

# ------------------------------------------------------------------------------------ the command

def test_servers_get_the_container_defaults_before_the_users_options():
    assert container.desktop_argv([]) == ["api", "--host", "0.0.0.0", "--port", "7960", "--outputs", "/outputs"]
    assert container.desktop_argv(["--preset", "fast"])[-2:] == ["--preset", "fast"]
    ui = container.desktop_argv(["ui", "--port", "8000"])
    assert ui[0] == "ui" and "--no-browser" in ui and ui[-2:] == ["--port", "8000"]      # argparse: the last wins
    assert container.desktop_argv(["batch", "/in", "-o", "/outputs"]) == ["batch", "/in", "-o", "/outputs"]


def test_a_model_or_token_is_seen_as_option_or_variable():
    assert container.named_model(["--model=/m"], {}) and container.named_model([], {"TRELLIS_DESKTOP_MODEL": "/m"})
    assert not container.named_model(["--text-model", "/t"], {})
    assert container.has_token(["--token", "x" * 8], {}) and container.has_token([], {container.TOKEN_ENV: "t"})
    assert not container.has_token([], {container.TOKEN_ENV: ""})
    assert not container.has_token([], {container.TOKEN_ENV: " " * 8})          # no client could send it


@pytest.mark.parametrize("token, words", [(None, "--host 0.0.0.0"), (" " * 8, "blanks")])
def test_the_api_refuses_every_interface_without_a_token_before_any_download(token, words):
    env = {k: v for k, v in os.environ.items()
           if k not in (container.TOKEN_ENV, "TRELLIS_DESKTOP_MODEL", container.SKIP_WEIGHTS_ENV)}
    if token is not None:
        env[container.TOKEN_ENV] = token
    run = subprocess.run([sys.executable, "-m", "installer.container"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    # Exit 4 and a download message would mean the model files were fetched first (offline here, that fails).
    assert run.returncode == 2, run.stderr
    assert words in run.stderr and "token" in run.stderr and "download" not in run.stderr


def test_other_programs_run_as_they_are():
    run = subprocess.run([sys.executable, "-m", "installer.container", "sh", "-c", "echo $0", "ok"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0 and run.stdout.strip() == "ok"
    missing = subprocess.run([sys.executable, "-m", "installer.container", "no-such-program-here"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 127 and "no-such-program-here" in missing.stderr


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization") == "Bearer right-token"
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_health_sends_the_token_and_reports_the_answer():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/health"
    try:
        assert container.health({container.HEALTH_URL_ENV: url, container.TOKEN_ENV: "right-token"}) == 0
        assert container.health({container.HEALTH_URL_ENV: url, container.TOKEN_ENV: "wrong-token"}) == 1
        assert container.health({container.HEALTH_URL_ENV: url}) == 1
    finally:
        server.shutdown()
        server.server_close()
    assert container.health({container.HEALTH_URL_ENV: url}, timeout=2) == 1        # nothing listens any more


# ------------------------------------------------------------------------------------ --gpu-build

def test_gpu_build_plans_the_named_build_with_its_torch_release():
    linux = System(os="Linux", machine="x86_64", python=(3, 12, 3))
    assert set(GPU_BUILD_TAGS) >= {"cu130", "cu126"}
    plan = plan_for_build(linux, "cu130")
    assert plan.device == "cuda" and plan.packages == ["torch==2.13.0+cu130"] and plan.gpu is None
    assert plan.torch_index_url.endswith("/cu130") and plan.optional_packages == []
    assert "580" in plan.notes[0] and {r["rule"] for r in plan.rules} >= {"driver_cuda13", "torch_local_version"}
    assert plan_for_build(linux, "cu118").packages == ["torch==2.7.1+cu118"]
    windows = plan_for_build(System(os="Windows", machine="x86_64", python=(3, 11, 9)), "cu126")
    assert windows.optional_packages and windows.optional_packages[0].startswith("triton-windows==")


@pytest.mark.parametrize("system, tag, words", [
    (System(), "cu999", "choose one of"),
    (System(os="Darwin", machine="arm64"), "cu130", "x86-64"),
    (System(python=(3, 14, 0)), "cu118", "Python"),
])
def test_gpu_build_refuses_what_cannot_be_installed(system, tag, words):
    with pytest.raises(ValueError, match=words):
        plan_for_build(system, tag)


def test_gpu_build_is_a_launcher_option_that_excludes_cpu():
    assert parse(["--gpu-build", "cu126"]).gpu_build == "cu126"
    assert parse(["--gpu-build=cu130"]).launcher_args() == ["--gpu-build", "cu130"]
    with pytest.raises(UsageError, match="--gpu-build"):
        parse(["--cpu", "--gpu-build", "cu130"])


# ------------------------------------------------------------------------------------ Containerfile, compose.yaml

def containerfile_instructions() -> dict[str, list[str]]:
    text = (ROOT / "Containerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.setdefault(word.upper(), []).append(rest.strip())
    return found


def test_the_containerfile_runs_our_installer_as_a_user_under_an_init():
    c = containerfile_instructions()
    assert any("python3 -m installer install $INSTALL_ARGS" in r for r in c["RUN"])
    assert c["USER"] == ["trellis"]
    assert c["ENTRYPOINT"][0].startswith('["/usr/bin/tini", "--",') and c["CMD"] == ['["api"]']
    assert "installer.container" in c["HEALTHCHECK"][0] and "health" in c["HEALTHCHECK"][0]
    assert c["VOLUME"] == ['["/app/.cache", "/outputs"]']
    assert "TRELLIS_STATE_DIR=/app/.cache/state" in " ".join(c["ENV"])    # the learned ETA outlives the container
    assert not any(w in " ".join(c["RUN"]) for w in ("gcc", "build-essential", "nvcc", "cuda-toolkit"))


def test_compose_reserves_an_nvidia_gpu_and_keeps_the_token_required():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    api, ui = compose["services"]["api"], compose["services"]["ui"]
    device = api["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert api["environment"]["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert api["environment"]["TRELLIS_DESKTOP_API_TOKEN"].startswith("${TRELLIS_DESKTOP_API_TOKEN:?")
    assert {v.split(":")[1] for v in api["volumes"]} == {"/app/.cache", "/outputs"}
    assert api["shm_size"] and api["ports"][0].endswith(":7960") and api["command"] == ["api"]
    assert ui["profiles"] == ["ui"] and ui["command"] == ["ui"] and ui["ports"][0].startswith("127.0.0.1:")
    assert ui["deploy"] == api["deploy"] and ui["environment"]["TRELLIS_HEALTH_URL"].endswith(":7860/")
