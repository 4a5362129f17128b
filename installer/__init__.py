"""One-click install for Trellis Desktop: detect the machine, plan the PyTorch build, install the
app's venv, fetch and check the model files, start the app; check licences.

Everything here is plain standard-library Python so that it runs *before* torch is installed, on the
Python that run.bat / run.sh / TrellisDesktop found. `python -m installer --help` lists the commands;
`python -m installer plan [--cpu] [--nvidia-smi-output FILE] [--json]` prints the plan without installing
anything.
"""
from .detect import Gpu, System, detect_system, parse_nvidia_smi
from .plan import Plan, make_plan, to_json

__all__ = ["Gpu", "Plan", "System", "detect_system", "make_plan", "parse_nvidia_smi", "to_json"]
