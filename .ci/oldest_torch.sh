#!/usr/bin/env bash
# The library (trellis/) on the oldest PyTorch the install plan can pick (installer/plan.py OLDEST_TORCH_VERSION,
# the cu118 build for drivers older than CUDA 12; issue 16): a second venv with that torch and the library's
# dependencies, then a subset of the library's CPU tests (LIB_TESTS below).
#
# torch comes from PyTorch's CPU index when it can be reached (torch==X+cpu, about 200 MB); otherwise from pip's
# configured sources (PyPI: its Linux wheel is the CUDA 12.6 build, about 3 GB with its nvidia-* wheels, which
# runs on the CPU just the same). The venv is kept between runs, keyed by the torch version and the
# requirement lines it was made from, in $TRELLIS_CI_CACHE (default ~/.cache/trellis-desktop-ci): made once
# per machine, reused after, rebuilt when anything it was made from changes.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

main_py=.venv/bin/python
version=$("$main_py" -c 'from installer.plan import OLDEST_TORCH_VERSION as v; print(v)')
py=$(command -v python3.11 || true)
if [[ -z $py ]]; then py=$("$main_py" -c 'import sys; print(sys._base_executable)'); fi

# What the library needs at run time: requirements_2.txt without the app's web stack; pytest as pinned.
reqs=$(grep -v -E '^\s*(#|$)' requirements_2.txt | grep -v -i -E '^(gradio|fastapi|uvicorn|python-multipart)\b'
       grep -i -E '^pytest==' requirements_test.txt)
reqs=$(sed -E 's/\s+#.*$//' <<<"$reqs")
key=$(printf '%s\n%s\n%s\n' "$version" "$("$py" -c 'import sys; print(sys.version)')" "$reqs" | sha256sum | cut -c1-16)
cache=${TRELLIS_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trellis-desktop-ci}
venv=$cache/oldest-torch-$version-$key

# The torch-version-sensitive part of the library: attention, sparse tensors and conv, the six networks,
# samplers, the pipeline end to end, FlexiCubes, the representations and the renderers. Left out (they run
# on the main venv): export/to_glb, mesh clean-up and preprocessing, whose time goes to numpy, scipy,
# xatlas and onnxruntime (the same versions in both venvs), and DINOv2's equivalence test
# (needs transformers). Together about 30 s here; making the venv the first time takes about 3 minutes.
LIB_TESTS=(tests/trellis/modules/test_attention.py tests/trellis/modules/test_sparse.py tests/trellis/models/test_models.py tests/trellis/pipelines/test_samplers.py
           tests/trellis/pipelines/test_pipeline.py tests/trellis/representations/test_flexicubes.py tests/trellis/representations/test_representations.py
           tests/trellis/renderers/test_gaussian_render.py tests/trellis/renderers/test_mesh_render.py tests/trellis/renderers/test_render_utils.py
           tests/trellis/test_fastpaths.py tests/trellis/models/test_manifests.py)

if [[ ! -f $venv/ready ]]; then
    echo "== creating $venv (torch $version for the library tests)"
    rm -rf "$venv" "$cache"/oldest-torch-*      # a venv of other requirements is stale: about 5 GB each
    mkdir -p "$cache"
    "$py" -m venv "$venv"
    pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary=:all:)
    if "${pip[@]}" --index-url https://download.pytorch.org/whl/cpu --timeout 20 --retries 0 \
            "torch==$version+cpu" 2>"$cache/cpu-index.log"; then
        echo "   torch $version+cpu from download.pytorch.org/whl/cpu"
    else
        echo "   PyTorch's CPU index cannot be reached ($(grep -m1 -o -E '(Failed to establish|Could not|No matching|ResolutionImpossible)[^(]*' "$cache/cpu-index.log" || echo "see $cache/cpu-index.log")); torch==$version from pip's sources"
        "${pip[@]}" "torch==$version"
    fi
    echo "$reqs" >"$venv/library-requirements.txt"
    echo "torch==$("$venv/bin/python" -c 'import torch; print(torch.__version__)')" >"$venv/torch-constraint.txt"
    "${pip[@]}" -r "$venv/library-requirements.txt" -c "$venv/torch-constraint.txt"
    touch "$venv/ready"
fi
got=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
[[ $got == "$version" || $got == "$version+"* ]] || { echo "expected torch $version in $venv, found $got" >&2; exit 1; }

echo "== the library's tests on torch $got (${#LIB_TESTS[@]} files; the full suite ran on the main venv above)"
PYTHONNOUSERSITE=1 "$venv/bin/python" -m pytest -q -p no:cacheprovider "${LIB_TESTS[@]}"
