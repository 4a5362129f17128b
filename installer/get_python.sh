#!/usr/bin/env bash
# A private Python 3.11 for run.sh when this computer has none (issue 16): uv, a single program published as
# wheels on PyPI, installs a managed CPython into the app folder (.python/). Nothing outside the app folder
# is touched (no PATH, no shell profile, no ~/.local).
#
#   bash installer/get_python.sh APP_DIR
#
# On success the last line on stdout is the path of the new python3.11; everything else goes to stderr.
# Exit 0: installed (or already there); 3: declined or not asked (no terminal, TRELLIS_FETCH_PYTHON unset or
# 0); 1: it failed (the message says why and what to do).
#
# Whether to download: TRELLIS_FETCH_PYTHON=1 yes without asking, 0 never; unset: ask when run in a terminal,
# and never in a run without one (CI, a pipe, a desktop launcher): such runs must not wait for an answer.
# Where from: uv's wheel from ${TRELLIS_UV_INDEX_URL:-${PIP_INDEX_URL:-https://pypi.org/simple}} (checked
# against the sha256 pinned below); CPython from python-build-standalone's releases on github.com, the
# source uv uses (TRELLIS_PYTHON_MIRROR or uv's own UV_PYTHON_INSTALL_MIRROR / UV_PYTHON_DOWNLOADS_JSON_URL
# point it elsewhere).
set -uo pipefail

UV_VERSION=0.13.9
PY_VERSION=3.11
app=${1:?usage: get_python.sh APP_DIR}
home=$app/.python

say() { printf '%s\n' "$*" >&2; }

# --------------------------------------------------------------------------- consent

case ${TRELLIS_FETCH_PYTHON:-} in
    1|yes|true) ;;
    0|no|false) exit 3 ;;
    *)
        if [[ ! -t 0 || ! -t 2 ]]; then
            say "No terminal to ask in: not downloading a Python. (Set TRELLIS_FETCH_PYTHON=1 to let run.sh download"
            say "a private Python $PY_VERSION into $home without asking.)"
            exit 3
        fi
        say "No Python $PY_VERSION or 3.12 was found. Trellis Desktop can download a private Python $PY_VERSION into"
        say "  $home"
        say "(about 40 MB from pypi.org and github.com; nothing outside this folder is changed)."
        read -r -p "Download it now? [Y/n] " answer
        case ${answer:-y} in [Yy]*) ;; *) exit 3 ;; esac
        ;;
esac

# --------------------------------------------------------------------------- which uv wheel

case "$(uname -s)-$(uname -m)" in
    Linux-x86_64|Linux-amd64)
        if ldd --version 2>&1 | grep -qi musl; then
            wheel=uv-$UV_VERSION-py3-none-musllinux_1_1_x86_64.whl
            sha=2c45530751517d6c3bbc69a19473f6effe47cce047bede01ffd8af7ea7b36b25
        else
            wheel=uv-$UV_VERSION-py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
            sha=d7f459fe4fd247d830351c75686d3996ace3c6f3f728eb0e85a30b7ada0cef19
        fi ;;
    Linux-aarch64|Linux-arm64)
        wheel=uv-$UV_VERSION-py3-none-manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64.whl
        sha=5435c5ce14a56431208ca0996416d310f1598e8c2c8ba707688985a16bb82dbe ;;
    Darwin-arm64)
        wheel=uv-$UV_VERSION-py3-none-macosx_11_0_arm64.whl
        sha=66c512266d633bef48384a1f53003f41f2a8e7b36fe6e7fbfd3e0fd52d96fa63 ;;
    Darwin-x86_64)
        wheel=uv-$UV_VERSION-py3-none-macosx_10_12_x86_64.whl
        sha=c16ed11e013557536b3e60065f1b912f6407bd6518e041b961e23ef9e6b4fbf5 ;;
    *)
        say "Cannot download a Python for $(uname -s) on $(uname -m): install Python $PY_VERSION yourself."
        exit 1 ;;
esac

OFFLINE="This computer seems to be offline, or a proxy or firewall blocks the download (behind a proxy, set
HTTPS_PROXY). Connect and run ./run.sh again, or install Python $PY_VERSION yourself (see below)."

# --------------------------------------------------------------------------- downloading

if command -v curl >/dev/null 2>&1; then
    fetch() {   # URL FILE [progress]
        local progress=(-sS)
        [[ ${3:-} == progress && -t 2 ]] && progress=(--progress-bar)
        curl -fL --retry 2 --connect-timeout 20 "${progress[@]}" -o "$2" "$1"
    }
elif command -v wget >/dev/null 2>&1; then
    fetch() {
        local progress=(-q)
        [[ ${3:-} == progress && -t 2 ]] && progress=(-q --show-progress)
        wget --tries=3 --timeout=20 "${progress[@]}" -O "$2" "$1"
    }
else
    say "Neither curl nor wget is installed, so no Python can be downloaded. Install Python $PY_VERSION (or curl)."
    exit 1
fi

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
    else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# One file out of the wheel (a zip): whatever this system has for zips.
unzip_member() {   # WHEEL MEMBER DEST
    if command -v unzip >/dev/null 2>&1; then
        unzip -p "$1" "$2" >"$3"
    elif command -v bsdtar >/dev/null 2>&1; then
        bsdtar -xOf "$1" "$2" >"$3"
    else
        local any_python
        any_python=$(command -v python3 || command -v python || true)
        [[ -n $any_python ]] || return 1
        "$any_python" -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
            "$1" "$2" >"$3"
    fi
}

mkdir -p "$home/downloads" || { say "Cannot create $home."; exit 1; }
uv=$home/uv/uv
if [[ ! -x $uv ]] || [[ $("$uv" --version 2>/dev/null) != "uv $UV_VERSION"* ]]; then
    index=${TRELLIS_UV_INDEX_URL:-${PIP_INDEX_URL:-https://pypi.org/simple}}
    index=${index%/}
    say "Downloading uv $UV_VERSION (the tool that installs Python) from $index ..."
    page=$home/downloads/uv-index.html
    if ! fetch "$index/uv/" "$page"; then
        say "Could not reach $index/uv/."
        say "$OFFLINE"
        exit 1
    fi
    href=$(grep -o "href=\"[^\"]*$wheel[^\"]*\"" "$page" | head -1 | sed -e 's/^href="//' -e 's/"$//' -e 's/#.*//')
    if [[ -z $href ]]; then
        say "$index has no $wheel: use PyPI (unset PIP_INDEX_URL / TRELLIS_UV_INDEX_URL) or install Python $PY_VERSION."
        exit 1
    fi
    case $href in
        http://*|https://*) url=$href ;;
        /*) url=$(sed -E 's#^([a-z]+://[^/]+).*#\1#' <<<"$index")$href ;;
        *) url=$index/uv/$href ;;
    esac
    part=$home/downloads/$wheel.part
    if ! fetch "$url" "$part" progress; then
        rm -f "$part"
        say "Could not download $url."
        say "$OFFLINE"
        exit 1
    fi
    got=$(sha256_of "$part")
    if [[ $got != "$sha" ]]; then
        rm -f "$part"
        say "The downloaded $wheel is not the published one (sha256 $got, expected $sha); nothing was installed."
        exit 1
    fi
    mkdir -p "$home/uv"
    if ! unzip_member "$part" "uv-$UV_VERSION.data/scripts/uv" "$uv.part"; then
        rm -f "$part" "$uv.part"
        say "Cannot unpack $wheel: install unzip (or Python $PY_VERSION itself)."
        exit 1
    fi
    chmod +x "$uv.part" && mv -f "$uv.part" "$uv"
    rm -f "$part" "$page"
fi

# --------------------------------------------------------------------------- Python itself

say "Downloading and installing Python $PY_VERSION into $home ..."
mirror=()
if [[ -n ${TRELLIS_PYTHON_MIRROR:-} ]]; then mirror=(--mirror "$TRELLIS_PYTHON_MIRROR"); fi
log=$home/downloads/uv-python-install.log
export UV_PYTHON_INSTALL_DIR=$home UV_CACHE_DIR=$home/downloads/uv-cache UV_NO_CONFIG=1
if [[ -t 2 ]]; then      # uv draws its own progress bar on a terminal
    "$uv" python install "$PY_VERSION" --no-bin "${mirror[@]}"
    rc=$?
    : >"$log"
else                     # keep its output to tell an offline machine from other failures
    "$uv" python install "$PY_VERSION" --no-bin "${mirror[@]}" >"$log" 2>&1
    rc=$?
    cat "$log" >&2
fi
rm -rf "$home/downloads/uv-cache"
if (( rc != 0 )); then
    say "uv could not install Python $PY_VERSION (exit status $rc; its message is above)."
    if [[ ! -s $log ]] || grep -qi -E 'dns|connect|timed out|network|unreachable|failed to (fetch|download)|error sending request' "$log"; then
        say "$OFFLINE"
    fi
    exit 1
fi
py=$(ls -d "$home"/cpython-"$PY_VERSION".*/bin/python"$PY_VERSION" 2>/dev/null | sort -V | tail -1)
if [[ -z $py ]] || ! "$py" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; then
    say "uv reported success, but $home holds no working python$PY_VERSION."
    exit 1
fi
say "Python $PY_VERSION installed: $py"
printf '%s\n' "$py"
