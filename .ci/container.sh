#!/usr/bin/env bash
# The container image, built and run for real with Podman on the CPU (called by .ci/run; needs .venv, root and
# Debian's apt mirror). No registry is used: the base image is a Debian made here with debootstrap, the app is
# installed from a wheelhouse downloaded on this machine (the image build has no network). The server then runs
# on the tiny random-weight pipeline: token rules, a job to its GLB, SIGTERM mid-job, a restart that lists the
# earlier jobs. Any step that cannot run fails this script with the reason; nothing is skipped.
#   TRELLIS_CI_CACHE (default /var/cache/trellis-ci): the base rootfs tarball and the wheelhouse, kept between runs.
#   TRELLIS_CI_REUSE_IMAGE=1: run the checks on the image an earlier run built (when working on the checks).
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python
cache=${TRELLIS_CI_CACHE:-/var/cache/trellis-ci}
suite=bookworm
base=localhost/trellis-ci-base:$suite
image=localhost/trellis-desktop:ci
token=ci-$("$py" -c 'import secrets; print(secrets.token_hex(16))')
name=trellis-ci-$$
say() { echo "== container: $*"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
since() { local d=$(($(now_ms) - $1)); printf '%d.%d' $((d / 1000)) $((d % 1000 / 100)); }    # seconds, one decimal
die() { echo "container test FAILED: $*" >&2; exit 1; }

# Podman needs the runc runtime and these ulimits on machines like CI's (crun refuses their cgroup layout).
podman_() { podman --runtime runc "$@"; }
limits=(--ulimit nofile=20000:20000 --ulimit nproc=32768:32768)

# ---------------------------------------------------------------- tools
need=()
for tool in podman:podman runc:runc debootstrap:debootstrap; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if ((${#need[@]})); then
    [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null \
        || die "podman, runc and debootstrap are needed (missing: ${need[*]}) and cannot be installed (not root/apt)"
    say "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap uidmap >/dev/null
fi
mkdir -p "$cache"
tmp=$(mktemp -d)
cleanup() {
    podman rm -f -t 0 "$name" "$name-b" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---------------------------------------------------------------- base image: Debian from debootstrap
if ! podman image exists "$base"; then
    tarball=$cache/debian-$suite-base.tar
    if [[ ! -s $tarball ]]; then
        say "debootstrap $suite (python3, venv, tini, ca-certificates) -> $tarball"
        t0=$SECONDS
        rm -rf "$cache/rootfs.tmp"
        debootstrap --variant=minbase --include=python3,python3-venv,tini,ca-certificates \
            "$suite" "$cache/rootfs.tmp" http://deb.debian.org/debian >"$tmp/debootstrap.log" 2>&1 \
            || { tail -20 "$tmp/debootstrap.log" >&2; die "debootstrap failed"; }
        rm -rf "$cache/rootfs.tmp/var/cache/apt/archives/"*.deb "$cache/rootfs.tmp/var/lib/apt/lists/"*
        tar -C "$cache/rootfs.tmp" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf "$cache/rootfs.tmp"
        say "base rootfs made in $((SECONDS - t0)) s"
    fi
    podman import --quiet "$tarball" "$base" >/dev/null
fi
base_py=$(podman_ run --rm "${limits[@]}" "$base" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>&1) \
    || die "podman cannot run a container here: $base_py"

# ---------------------------------------------------------------- wheelhouse, from this machine's pip sources
torch_req=$("$py" -m installer plan --cpu --json | "$py" -c 'import json, sys; print(json.load(sys.stdin)["packages"][0])')
say "wheelhouse for Python $base_py: $torch_req + requirements_2.txt -> $cache/wheelhouse"
"$py" -m pip download -q --only-binary=:all: --python-version "$base_py" -d "$cache/wheelhouse" \
    "$torch_req" -r requirements_2.txt >"$tmp/pip.log" 2>&1 \
    || { tail -20 "$tmp/pip.log" >&2; die "pip download of the wheelhouse failed"; }

# ---------------------------------------------------------------- the build context: the repo's files + the wheels
ctx=$tmp/context
mkdir -p "$ctx"
git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null \
    | tar -C "$ctx" -xf -
cp -al "$cache/wheelhouse" "$ctx/wheelhouse" 2>/dev/null || cp -r "$cache/wheelhouse" "$ctx/wheelhouse"

if [[ ${TRELLIS_CI_REUSE_IMAGE:-0} == 1 ]] && podman image exists "$image"; then
    build_s="(reused)"
else
    say "podman build (base $base, --cpu --wheelhouse, no network)"
    podman rmi -f "$image" >/dev/null 2>&1 || true
    t0=$(now_ms)
    podman_ build --format docker --pull=never --network none "${limits[@]}" --no-cache --layers=false \
        --build-arg BASE_IMAGE="$base" --build-arg INSTALL_ARGS="--cpu --wheelhouse wheelhouse" \
        -t "$image" -f "$ctx/Containerfile" "$ctx" >"$tmp/build.log" 2>&1 \
        || { tail -40 "$tmp/build.log" >&2; die "podman build failed"; }
    build_s=$(since "$t0")
fi
size=$(podman image inspect --format '{{.Size}}' "$image")
say "image: built in ${build_s} s, $((size / 1000000)) MB"

# ---------------------------------------------------------------- non-root, and no start on 0.0.0.0 without a token
uid=$(podman_ run --rm "${limits[@]}" "$image" id -u 2>>"$tmp/podman.log") || die "the image does not start: $(tail -3 "$tmp/podman.log")"
[[ $uid != 0 ]] || die "the image runs as root"
say "runs as uid $uid"
set +e
podman_ run --rm "${limits[@]}" "$image" >"$tmp/notoken.log" 2>&1
rc=$?
set -e
grep -q "token" "$tmp/notoken.log" && ((rc == 2)) \
    || { cat "$tmp/notoken.log" >&2; die "without a token the server exited $rc, not 2 with a message about it"; }
say "without a token: refused (exit $rc): $(grep -m1 -o 'error: .*' "$tmp/notoken.log" | cut -c1-100)..."

# ---------------------------------------------------------------- the server on the tiny pipeline
"$py" -m trellis.tools.tiny_pipeline "$tmp/tiny" >/dev/null
mkdir -p "$tmp/outputs"
chown -R "$uid:$uid" "$tmp/outputs"
chmod -R a+rX "$tmp/tiny"
port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
start() {    # $1: container name
    podman_ run -d --name "$1" "${limits[@]}" --shm-size 1g -p "127.0.0.1:$port:7960" \
        -e TRELLIS_DESKTOP_API_TOKEN="$token" -e TRELLIS_DESKTOP_MODEL=/models/tiny -e TRELLIS_SKIP_WEIGHTS=1 \
        -v "$tmp/tiny:/models/tiny:ro" -v "$tmp/outputs:/outputs" "$image" >/dev/null 2>>"$tmp/podman.log"
}
logs() { echo "== the server's output:" >&2; podman logs "$1" >&2 || true; }
start "$name"
t0=$SECONDS
"$py" .ci/container_check.py serve "http://127.0.0.1:$port" "$token" "$tmp/state.json" || { logs "$name"; exit 1; }
say "first job done $((SECONDS - t0)) s after the start"
podman_ healthcheck run "$name" >/dev/null 2>>"$tmp/podman.log" || { logs "$name"; die "the image's HEALTHCHECK failed"; }
say "HEALTHCHECK: healthy"

t0=$(now_ms)
podman_ stop -t 30 "$name" >/dev/null 2>>"$tmp/podman.log"
stop_s=$(since "$t0")
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
((code == 0)) || { logs "$name"; die "after SIGTERM the server exited $code, not 0 (137: it was killed)"; }
podman logs "$name" 2>&1 | tail -3 | sed 's/^/   | /'
say "SIGTERM: exit $code after ${stop_s} s"
"$py" .ci/container_check.py stopped "$tmp/outputs" "$tmp/state.json" || { logs "$name"; exit 1; }

start "$name-b"
"$py" .ci/container_check.py again "http://127.0.0.1:$port" "$token" "$tmp/state.json" || { logs "$name-b"; exit 1; }
podman_ stop -t 30 "$name-b" >/dev/null 2>>"$tmp/podman.log"
say "passed: build ${build_s} s, image $((size / 1000000)) MB, SIGTERM stop ${stop_s} s (exit 0)"
