"""The command line of run.sh / run.bat / TrellisDesktop(.exe), shared by `check`, `install` and `launch`.

    [launcher options] [test [pytest arguments]]     run the tests
    [launcher options] [app options]                 start the app (`python -m desktop ui` options)

Launcher options are taken out wherever they stand before `test`; everything else goes to the app
(or, after `test`, to pytest) unchanged. `--` ends the launcher options.
"""
from __future__ import annotations

from dataclasses import dataclass, field

HELP = """\
Launcher options (the rest goes to the app, `python -m desktop ui --help`, or after `test` to pytest):
  --cpu                  install and use the CPU build of PyTorch (no GPU needed; slow)
  --repair               rebuild .venv from scratch and re-check every model file (sha256)
  --update               re-detect the GPU and re-resolve the install into a new .venv; the old one
                         is kept until the new one passes its checks
  --wheelhouse DIR       install offline from the wheels in DIR (no index is contacted)
  --torch-index-url URL  take PyTorch from this index instead of the automatic choice
  --gpu-build TAG        install this CUDA build of PyTorch (cu130, cu126, cu128, cu118) for a GPU that is
                         not in this machine, e.g. a container image (no GPU check)
  --no-pip-config        ignore pip's configuration files and PIP_* variables (a fully isolated install)
  --retries N            extra attempts of a failed download or pip step (default 2)
  --weights-repo ID      Hugging Face repo of the pipeline weights (default microsoft/TRELLIS-image-large)
  --hf-endpoint URL      Hugging Face mirror (default $HF_ENDPOINT or https://huggingface.co)
  --weights-from DIR     take the model files from DIR (checked, then copied) instead of downloading
  --skip-weights         do not download or check model files before starting the app
  --trellis2             also download TRELLIS.2 (microsoft/TRELLIS.2-4B, about 15 GB) and its image encoder
                         DINOv3, which is gated under Meta's DINOv3 License: accept it at
                         https://huggingface.co/facebook/dinov3-vitl16-pretrain-lvd1689m and give a Hugging
                         Face token ($HF_TOKEN, --hf-token-file, or `hf auth login`); never printed or stored
  --hf-token-file FILE   read the Hugging Face token for --trellis2 from FILE
  --save-hf-token        with --trellis2: save that token where `hf auth login` keeps it
  --with-ray             also install Ray (requirements_ray.txt), for `python -m desktop batch --ray` on a cluster
  --app-dir DIR          the app folder (default: the folder of run.sh / run.bat)
"""

FLAGS = {"--cpu": "cpu", "--repair": "repair", "--update": "update", "--no-pip-config": "no_pip_config",
         "--skip-weights": "skip_weights", "--with-ray": "with_ray", "--trellis2": "trellis2",
         "--save-hf-token": "save_hf_token"}
VALUES = {"--wheelhouse": "wheelhouse", "--torch-index-url": "torch_index_url", "--gpu-build": "gpu_build",
          "--weights-repo": "weights_repo", "--hf-endpoint": "hf_endpoint", "--weights-from": "weights_from", "--retries": "retries",
          "--app-dir": "app_dir", "--hf-token-file": "hf_token_file"}


class UsageError(ValueError):
    pass


@dataclass
class Options:
    cpu: bool = False
    repair: bool = False
    update: bool = False
    no_pip_config: bool = False
    skip_weights: bool = False
    with_ray: bool = False
    trellis2: bool = False
    save_hf_token: bool = False
    wheelhouse: str | None = None
    torch_index_url: str | None = None
    gpu_build: str | None = None
    weights_repo: str | None = None
    hf_endpoint: str | None = None
    weights_from: str | None = None
    hf_token_file: str | None = None
    retries: int = 2
    app_dir: str | None = None
    test: bool = False
    rest: list[str] = field(default_factory=list)    # for the app, or for pytest in test mode

    def launcher_args(self) -> list[str]:
        """These options back as arguments (what the launcher passes on to `python -m installer`)."""
        out = [flag for flag, name in FLAGS.items() if getattr(self, name)]
        for flag, name in VALUES.items():
            value = getattr(self, name)
            if value is not None and not (name == "retries" and value == 2):
                out += [flag, str(value)]
        return out


def parse(argv: list[str]) -> Options:
    opts = Options()
    args = list(argv)
    i = 0
    passthrough = False        # an app argument has been seen: `test` is no longer the mode word
    while i < len(args):
        arg = args[i]
        if arg == "--":
            opts.rest += args[i + 1:]
            break
        if arg == "test" and not passthrough:
            opts.test = True
            opts.rest += args[i + 1:]
            break
        name, _, inline = arg.partition("=")
        if arg in FLAGS:
            setattr(opts, FLAGS[arg], True)
        elif name in VALUES:
            if inline or "=" in arg:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                raise UsageError(f"{name} needs a value")
            if not value:
                raise UsageError(f"{name} needs a value")
            setattr(opts, VALUES[name], value)
        else:
            opts.rest.append(arg)
            passthrough = True
        i += 1
    try:
        opts.retries = int(opts.retries)
    except ValueError:
        raise UsageError(f"--retries needs a whole number, not {opts.retries!r}") from None
    if opts.retries < 0:
        raise UsageError("--retries cannot be negative")
    if opts.cpu and opts.gpu_build:
        raise UsageError("--cpu and --gpu-build cannot be combined (choose the CPU build or a CUDA build)")
    if opts.repair and opts.update:
        raise UsageError("--repair and --update cannot be combined (--repair already rebuilds everything)")
    if (opts.hf_token_file or opts.save_hf_token) and not opts.trellis2:
        raise UsageError("--hf-token-file and --save-hf-token go with --trellis2 (the only download that needs a "
                         "Hugging Face token)")
    if opts.trellis2 and opts.skip_weights:
        raise UsageError("--trellis2 and --skip-weights cannot be combined (--skip-weights downloads nothing)")
    return opts
