#!/usr/bin/env bash
# One GPU session's measurements for the open issues, in steps that each fit one device command (<= 600 s).
#
#   bash benchmarks/gpu_session.sh STEP [STEP ...]      (on the device, from the repository root)
#
# Steps (results as JSON + logs under $OUT, or ./gpu_session_out when OUT is unset):
#   objects     build the realistic bunny and nut (.cache/, ~1 min; too large to carry, so built there)
#   tests       python -m pytest tests/gpu -q
#   conv        sparse_conv_gpu.py --tiles: every sparse conv layer and network with Triton, NVRTC, the twin
#   cache       nvrtc_cache_gpu.py: the NVRTC kernels' first-use cost in fresh processes, PTX disk cache off/cold/warm
#   export      export_realistic_gpu.py --shapes bunny nut --runs 3 in three columns: Triton, Windows without
#               Triton (a `triton` package that raises ImportError first on PYTHONPATH: the dispatcher picks
#               NVRTC by itself), fast paths off (TRELLIS_FAST_PATHS=off, the PyTorch twins); one column
#               alone: export-triton, export-windows, export-off
#   fitted      the realistic objects' Gaussians with colours fitted to renders of the truth (as a trained
#               decoder's; realistic_objects.py build --fitted), then bake_study.py on the bunny (the bake's
#               variants on that input) and export_realistic_gpu.py --colors fitted --runs 1 (bunny, nut)
#   app         app_gpu.py --object bunny / nut --runs 2 (the app's whole job, GLB + PLY + OBJ + mp4, on the realistic
#               objects; stage 2 on the object's surface voxels) in the three columns; needs imageio-ffmpeg
#               in .whl/ too (0.7.0's manylinux2014 wheel, 30 MB: 0.8.1's is over the 64 MiB carry limit)
#   preview     app_gpu.py --object bunny / nut, B A B A: B the default preview (several frames per render call), A one
#               frame per call (--preview-views 1, the preview before its batching), Triton
#   normalmap   normal_map_gpu.py (bunny, nut; balanced and 5 000 faces): the shading error without / with the normal
#               map and its bake time, Triton, Windows without Triton and fast paths off
#   again       export_again_gpu.py (bunny, nut): a finished job exported again without sampling, as it was, at 5 000
#               faces with a normal map and for each destination (web, game, print); app_gpu.py --runs 1 first where
#               /tmp/app_gpu has no job of the object yet. The destinations need usd-core, DracoPy, lxml and networkx
#               wheels too (with imageio-ffmpeg they pass the 64 MiB carry limit: carry them as a second folder in a
#               second command on the still-warm machine)
#   views       export_realistic_gpu.py with the observation views kept on the GPU (the default where they fit)
#               and in host memory (trellis.export.schedule.DEVICE_VIEW_MARGIN huge), A B A B, Triton
#   decimation  decimation.py --shapes bunny nut --pieces 1 8 16 auto --runs 3 --reduction 0.9375
#   visibility  visibility_gpu.py: face_visibility's seconds and profile on the nut after the first decimation
#   profile     chain_profile_gpu.py for "fp16 eager" and "fp16 compiled": per stage wall vs GPU-busy time, by kernel kind
#   chain       pipeline_gpu.py (issue 14's chain, resident fp16 and low-VRAM, 3 warm runs each)
#   columns     pipeline_gpu.py per path, 3 warm runs each: Triton (fp16 resident = the default, fp16 eager, fp16
#               compiled, low-VRAM, low-VRAM compiled), Windows without Triton (fp16 resident, fp16 eager, low-VRAM:
#               NVRTC kernels, the sparse conv too), fast paths off (the same three presets); REPEATS=N runs,
#               VARY=V a new structure at every run (pipeline_gpu.py --vary), P4= / P2= other preset lists
#   ab          pipeline_gpu.py (fp16 eager, low-VRAM; 3 warm runs) A B A B: A this tree, B a copy of it with
#               $BEFORE_PATCH (a `git diff` of the change, carried) reversed, i.e. the code before, on one host;
#               AB_PRESETS=, REPEATS=, VARY= as for columns
#   e2e         e2e_gpu.py --presets low-vram (image -> GLB with the random-weight blob, the worst case) with
#               Triton, Windows without Triton (NVRTC kernels) and the fast paths off
#   launch      launch_gpu.py --object bunny (process start -> server, model loaded, first and second GLB; warm-up on
#               and off, submitted at once and after 10 s): the REST server needs fastapi and its own imports too
#               (fastapi 0.165 imports opentelemetry-api; uvicorn, starlette, pydantic, python-multipart,
#               fastapi-offline, httpx: carry their wheels in .whl/ as below)
#   firstjob    first_job_gpu.py B A B A (B: the first sampling call's libraries warmed beside the load, --prewarm beside;
#               A: not), Triton, after a first run that fills Triton's disk cache; needs app_gpu.py's pipeline folder
#   budget      vram_budget_gpu.py --object bunny: the whole job beside a process holding all but ~3.2 GiB, with
#               --vram-budget 3 and the low-VRAM preset's default budget
#   batch       batch_gpu.py --object bunny (balanced, GLB + PLY, BATCH_ITEMS=16 items): the app's serial job, the batch
#               with its overlap on (local1) and off (local1-serial), 2 GPUs (local2) where there are two;
#               BATCH_MODES= another list (e.g. app,local1-serial then local1 in a second command on the warm machine)
#   trellis2    trellis2_pipeline_gpu.py: TRELLIS.2's chain for 512 / 1024_cascade / 1536_cascade with every network
#               resident, fast paths off, the low-VRAM preset under 6 / 8 GiB caps (T2_CONFIGS=, T2_DEADLINE=), and
#               1024_cascade in the Windows column; trellis2-export: trellis2_export_gpu.py, the blob's PBR export per
#               stage (seconds, peak memory) in the three columns (T2_BLOB=pipeline: the pipeline's own blob)
#   trellis2-app  trellis2_app_gpu.py: TRELLIS.2's whole app job (image -> PBR GLB + preview where the app makes one
#               for TRELLIS.2) through the JobRunner, second jobs, balanced and low-VRAM under 6 / 8 GiB caps, per stage
#               seconds and peak reserved memory, in the three columns; T2_TYPES= (default 1024_cascade; e.g.
#               1024_cascade,512,1536_cascade), T2_PRESETS= (default balanced,low-vram), T2_FORMATS= (default
#               glb,mp4), T2_DEADLINE= (s, default 520), T2_OBJECT= (default random; bunny, goblet, torus, nut: the
#               files made from that realistic object's O-Voxel); one column alone: trellis2-app-triton,
#               trellis2-app-windows, trellis2-app-off (e.g. T2_TYPES=1536_cascade T2_PRESETS=low-vram: the 8 GiB run)
#   texturing   texturing_gpu.py: TRELLIS.2 texturing of a ~100 k-face sphere at R = 1024 (mesh in -> PBR GLB out) in the
#               three columns, then a ~200 k-face one under an 8 GiB cap (Triton), and ovoxel_voxelize_gpu.py's
#               voxelisation of it under that cap; the full-size folder shared with the trellis2 step (/tmp)
#   attention8  attention_8bit_error.py --device cuda --tokens 8192 --md: 8-bit attention's per-call error beside the
#               bf16 noise floor and cuDNN vs FlashAttention-2 (docs/benchmarks/attention_8bit.md)
#   closed      pbr_closed.py --res 1024 --device cuda (sphere, torus, cup; the app's face target): the closed shapes'
#               clustering and refinement on the GPU, which a TRELLIS.2 job runs in its sampling's thread before the
#               texture flow (pbr.early), and the steps after them
#   limits      e2e_gpu.py --limits 4,3,2.5,2 (issue 14: the whole job in a fresh process per memory cap;
#               LIMITS=2 for other caps; each cap is a fresh process of ~45 s on the H100 host)
# The lent H100/H200 image has torch, triton, numpy, scipy, scikit-image but not trimesh, fast-simplification,
# xatlas or imageio-ffmpeg (the app step's mp4): download their cp312 manylinux wheels here into .whl/ (git-ignored;
# trimesh==5.2.0, fast-simplification==0.2.0, xatlas==0.0.11 as in requirements_2.txt, ~1.3 MB; imageio-ffmpeg 0.7.0,
# 30 MB, where requirements_2.txt pins 0.8.1: its wheel is over the carry limit), carry .whl and start the device command
# with `python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site`.
# Only 8 files come back from $OUT: run with OUT=/tmp/gs and tar that folder into the real $OUT.
# Every step records the commit, date and device in its JSON (the benchmarks do) and the step's wall time here.
# STEP_TIMEOUT=S (seconds, default none) stops a step that runs longer (SIGINT, then SIGKILL 10 s later), so
# one hung step cannot take the rest of a device command with it.
set -u
OUT="${OUT:-gpu_session_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
NOTRITON="$(mktemp -d)"
trap 'rm -rf "$NOTRITON"' EXIT
mkdir -p "$NOTRITON/triton"
echo 'raise ImportError("triton hidden: what a Windows install without the triton-windows wheel sees")' \
    > "$NOTRITON/triton/__init__.py"
WINDOWS=(env PYTHONPATH="$NOTRITON${PYTHONPATH:+:$PYTHONPATH}")   # the Windows column: `import triton` fails
COMMIT="$("$PY" benchmarks/provenance.py 2>/dev/null || echo "?")"   # the files that run, not a lagging HEAD

run() {   # run NAME CMD...: log to $OUT/NAME.log, time it, keep going on failure
    local name="$1"; shift
    local t0=$(date +%s)
    echo "== $name: $*" | tee -a "$OUT/steps.log"
    if [ -n "${STEP_TIMEOUT:-}" ]; then
        timeout --signal=INT --kill-after=10 "$STEP_TIMEOUT" "$@" > "$OUT/$name.log" 2>&1
    else
        "$@" > "$OUT/$name.log" 2>&1
    fi
    local rc=$?
    echo "== $name: rc $rc, $(( $(date +%s) - t0 )) s" | tee -a "$OUT/steps.log"
    tail -n 15 "$OUT/$name.log"
}

for step in "$@"; do
    case "$step" in
        objects)
            run objects "$PY" benchmarks/realistic_objects.py build --shapes bunny nut ;;
        tests)
            run tests "$PY" -m pytest tests/gpu -q -p no:cacheprovider ;;
        conv)
            run conv "$PY" benchmarks/sparse_conv_gpu.py --tiles --out "$OUT/conv.json" ;;
        cache)
            run cache "$PY" benchmarks/nvrtc_cache_gpu.py --out "$OUT/cache.json" ;;
        export|export-triton|export-windows|export-off)
            if [ "$step" = export ] || [ "$step" = export-triton ]; then
                run export_triton "$PY" benchmarks/export_realistic_gpu.py --shapes bunny nut --runs 3 \
                    --out "$OUT/export_triton.json"
            fi
            if [ "$step" = export ] || [ "$step" = export-windows ]; then
                run export_windows "${WINDOWS[@]}" \
                    "$PY" benchmarks/export_realistic_gpu.py --shapes bunny nut --runs 3 --out "$OUT/export_windows.json"
            fi
            if [ "$step" = export ] || [ "$step" = export-off ]; then
                run export_off env TRELLIS_FAST_PATHS=off \
                    "$PY" benchmarks/export_realistic_gpu.py --shapes bunny nut --runs 3 --out "$OUT/export_off.json"
            fi ;;
        fitted)
            run fit "$PY" benchmarks/realistic_objects.py build --shapes bunny nut --fitted
            run bake_fitted "$PY" benchmarks/bake_study.py --shape bunny --colors fitted --variants default scale1 \
                scale.7 scale.5 opt perfect nearest --out "$OUT/bake_fitted.json"
            run export_fitted "$PY" benchmarks/export_realistic_gpu.py --shapes bunny nut --runs 1 --colors fitted \
                --out "$OUT/export_fitted.json" ;;
        app)
            for obj in bunny nut; do
                run "app_${obj}_triton" "$PY" benchmarks/app_gpu.py --object "$obj" --runs 2
                run "app_${obj}_windows" "${WINDOWS[@]}" \
                    "$PY" benchmarks/app_gpu.py --object "$obj" --runs 2
                run "app_${obj}_off" env TRELLIS_FAST_PATHS=off "$PY" benchmarks/app_gpu.py --object "$obj" --runs 2
            done ;;
        preview)
            # The batched preview A/B on one host: B the default (several frames per call), A one frame per call.
            for obj in bunny nut; do
                for round in 1 2; do
                    run "preview_${obj}_B$round" "$PY" benchmarks/app_gpu.py --object "$obj" --runs 2 \
                        --out "$OUT/preview_${obj}_B$round.json"
                    run "preview_${obj}_A$round" "$PY" benchmarks/app_gpu.py --object "$obj" --runs 2 --preview-views 1 \
                        --out "$OUT/preview_${obj}_A$round.json"
                done
            done ;;
        normalmap)
            run normalmap_triton "$PY" benchmarks/normal_map_gpu.py --out "$OUT/normalmap_triton.json"
            run normalmap_windows "${WINDOWS[@]}" "$PY" benchmarks/normal_map_gpu.py --runs 1 \
                --out "$OUT/normalmap_windows.json"
            run normalmap_off env TRELLIS_FAST_PATHS=off "$PY" benchmarks/normal_map_gpu.py --runs 1 \
                --out "$OUT/normalmap_off.json" ;;
        again)
            for obj in bunny nut; do
                [ -d "/tmp/app_gpu/outputs-$obj" ] || run "app_${obj}_once" "$PY" benchmarks/app_gpu.py --object "$obj" --runs 1
                run "again_${obj}" "$PY" benchmarks/export_again_gpu.py --object "$obj" --out "$OUT/again_${obj}.json"
            done ;;
        views)
            HOST='import sys; sys.path[:0] = ["benchmarks", "."]; from trellis.export import schedule
schedule.DEVICE_VIEW_MARGIN = 1 << 62
import export_realistic_gpu as e; sys.exit(e.main(sys.argv[1:]))'
            for k in 1 2; do
                run "views_gpu$k" "$PY" benchmarks/export_realistic_gpu.py --shapes bunny nut --runs 3 \
                    --out "$OUT/views_gpu$k.json"
                run "views_host$k" "$PY" -c "$HOST" --shapes bunny nut --runs 3 --out "$OUT/views_host$k.json"
            done ;;
        decimation)
            run decimation "$PY" benchmarks/decimation.py --shapes bunny nut --pieces 1 8 16 auto --runs 3 \
                --reduction 0.9375 --out "$OUT/decimation.json" ;;
        visibility)
            run visibility "$PY" benchmarks/visibility_gpu.py --out "$OUT/visibility.json" ;;
        profile)
            run profile_eager "$PY" benchmarks/chain_profile_gpu.py --preset "fp16 eager" --out "$OUT/profile_eager.json"
            run profile_compiled "$PY" benchmarks/chain_profile_gpu.py --preset "fp16 compiled" \
                --out "$OUT/profile_compiled.json" ;;
        chain)
            run chain "$PY" benchmarks/pipeline_gpu.py --repeats 3 --commit "$COMMIT" --out "$OUT/chain.json" ;;
        columns)
            P4="${P4:-fp16 resident,fp16 eager,fp16 compiled,low-VRAM,low-VRAM compiled}"
            P2="${P2:-fp16 resident,fp16 eager,low-VRAM}"
            R=(--repeats "${REPEATS:-3}" --vary "${VARY:-0}")
            run chain_triton "$PY" benchmarks/pipeline_gpu.py "${R[@]}" --presets "$P4" --commit "$COMMIT" \
                --out "$OUT/chain_triton.json"
            run chain_windows "${WINDOWS[@]}" "$PY" benchmarks/pipeline_gpu.py \
                "${R[@]}" --presets "$P2" --commit "$COMMIT" --out "$OUT/chain_windows.json"
            run chain_off env TRELLIS_FAST_PATHS=off "$PY" benchmarks/pipeline_gpu.py "${R[@]}" --presets "$P2" \
                --commit "$COMMIT" --out "$OUT/chain_off.json" ;;
        ab)
            BEFORE_TREE="$(mktemp -d)/before"
            cp -r . "$BEFORE_TREE" && (cd "$BEFORE_TREE" && git apply -R "$OLDPWD/${BEFORE_PATCH:?BEFORE_PATCH=file}") \
                || { echo "cannot make the before tree" >&2; exit 2; }
            ABP="${AB_PRESETS:-fp16 eager,low-VRAM}"
            R="--repeats ${REPEATS:-3} --vary ${VARY:-0}"
            for round in 1 2; do
                run "ab_after_$round" "$PY" benchmarks/pipeline_gpu.py $R --presets "$ABP" \
                    --commit "$COMMIT" --out "$OUT/ab_after_$round.json"
                run "ab_before_$round" bash -c "cd '$BEFORE_TREE' && '$PY' benchmarks/pipeline_gpu.py $R \
                    --presets '$ABP' --commit before --out '$OUT/ab_before_$round.json'"
            done ;;
        e2e)
            run e2e_triton "$PY" benchmarks/e2e_gpu.py --presets low-vram --commit "$COMMIT" --out "$OUT/e2e_triton.json"
            run e2e_windows "${WINDOWS[@]}" "$PY" benchmarks/e2e_gpu.py \
                --presets low-vram --commit "$COMMIT" --out "$OUT/e2e_windows.json"
            run e2e_off env TRELLIS_FAST_PATHS=off "$PY" benchmarks/e2e_gpu.py --presets low-vram --commit "$COMMIT" \
                --out "$OUT/e2e_off.json" ;;
        trellis2)
            # TRELLIS.2's chain per pipeline type (default preset, fast paths off, the low-VRAM caps), the full-size
            # random-weight folder written once to /tmp (~90 s, 17 GB); its export separately (trellis2-export)
            run trellis2 "$PY" benchmarks/trellis2_pipeline_gpu.py --folder /tmp/trellis2_full \
                --types 1024_cascade,512,1536_cascade --configs "${T2_CONFIGS:-default/on,default/off:1024_cascade,low-vram/on@6:1024_cascade+512,low-vram/on@8:1536_cascade}" \
                --runs 1 --warmup 1 --deadline-s "${T2_DEADLINE:-520}" --out "$OUT/trellis2.json"
            run trellis2_windows "${WINDOWS[@]}" "$PY" benchmarks/trellis2_pipeline_gpu.py --folder /tmp/trellis2_full \
                --types 1024_cascade --configs default/on --runs 1 --warmup 1 --out "$OUT/trellis2_windows.json" ;;
        trellis2-export)
            # the blob's PBR export per stage in the three columns, its O-Voxel made once into $T2_RESULT (synthetic,
            # the random-weight decoder's structure; T2_BLOB=pipeline: one 1024_cascade run of /tmp/trellis2_full)
            T2_RESULT="${T2_RESULT:-/tmp/trellis2_blob.npz}"
            SRC=(); [ "${T2_BLOB:-synthetic}" = pipeline ] && SRC=(--folder /tmp/trellis2_full)
            run trellis2_export_triton "$PY" benchmarks/trellis2_export_gpu.py --result "$T2_RESULT" \
                ${SRC[@]+"${SRC[@]}"} --commit "$COMMIT" --out "$OUT/trellis2_export_triton.json"
            run trellis2_export_windows "${WINDOWS[@]}" "$PY" benchmarks/trellis2_export_gpu.py --result "$T2_RESULT" \
                --runs 1 --commit "$COMMIT" --out "$OUT/trellis2_export_windows.json"
            run trellis2_export_off env TRELLIS_FAST_PATHS=off "$PY" benchmarks/trellis2_export_gpu.py \
                --result "$T2_RESULT" --runs 1 --commit "$COMMIT" --out "$OUT/trellis2_export_off.json" ;;
        trellis2-app|trellis2-app-triton|trellis2-app-windows|trellis2-app-off)
            # the app's whole TRELLIS.2 job per preset and type, the folder shared with the trellis2 step (/tmp)
            T2APP=(benchmarks/trellis2_app_gpu.py --folder /tmp/trellis2_full --types "${T2_TYPES:-1024_cascade}"
                   --presets "${T2_PRESETS:-balanced,low-vram}" --formats "${T2_FORMATS:-glb,mp4}" --runs 2
                   --deadline-s "${T2_DEADLINE:-520}" --object "${T2_OBJECT:-random}" --commit "$COMMIT")
            if [ "$step" = trellis2-app ] || [ "$step" = trellis2-app-triton ]; then
                run trellis2_app_triton "$PY" "${T2APP[@]}" --out "$OUT/trellis2_app_triton.json"
            fi
            if [ "$step" = trellis2-app ] || [ "$step" = trellis2-app-windows ]; then
                run trellis2_app_windows "${WINDOWS[@]}" "$PY" "${T2APP[@]}" --out "$OUT/trellis2_app_windows.json"
            fi
            if [ "$step" = trellis2-app ] || [ "$step" = trellis2-app-off ]; then
                run trellis2_app_off env TRELLIS_FAST_PATHS=off "$PY" "${T2APP[@]}" --out "$OUT/trellis2_app_off.json"
            fi ;;
        texturing)
            TEX=(benchmarks/texturing_gpu.py --device cuda --folder /tmp/trellis2_full --resolution 1024 --texture-size 2048)
            run texturing_triton "$PY" "${TEX[@]}" --faces 100000 --runs 2
            run texturing_windows "${WINDOWS[@]}" "$PY" "${TEX[@]}" --faces 100000 --runs 2
            run texturing_off env TRELLIS_FAST_PATHS=off "$PY" "${TEX[@]}" --faces 100000 --runs 2
            run texturing_cap8 "$PY" "${TEX[@]}" --faces 200000 --limit-gib 8 --runs 1
            run voxelize_cap8 "$PY" benchmarks/ovoxel_voxelize_gpu.py --device cuda --faces 200000 --resolution 1024 \
                --limit-gib 8 ;;
        attention8)
            run attention8 "$PY" benchmarks/attention_8bit_error.py --device cuda --tokens 8192 --md ;;
        closed)
            run closed "$PY" benchmarks/pbr_closed.py --res 1024 --device cuda --shapes sphere torus cup --settings app ;;
        limits)
            run limits "$PY" benchmarks/e2e_gpu.py --limits "${LIMITS:-4,3,2.5,2}" --commit "$COMMIT" --out "$OUT/limits.json" ;;
        launch)
            run launch "$PY" benchmarks/launch_gpu.py --object bunny --warmup on,off --submit-after 0,10 \
                --out "$OUT/launch.json" --md "$OUT/launch.md" ;;
        firstjob)
            run first_job_cold "$PY" benchmarks/first_job_gpu.py --out "$OUT/first_job_cold.json"
            for ab in beside:1 none:1 beside:2 none:2; do
                run "first_job_${ab%%:*}${ab##*:}" "$PY" benchmarks/first_job_gpu.py --prewarm "${ab%%:*}" \
                    --out "$OUT/first_job_${ab%%:*}${ab##*:}.json"
            done ;;
        budget)
            run budget "$PY" benchmarks/vram_budget_gpu.py --object bunny ;;
        batch)
            modes="${BATCH_MODES:-app,local1,local1-serial,local2}"
            run "batch_${modes//,/+}" "$PY" benchmarks/batch_gpu.py --object bunny --items "${BATCH_ITEMS:-16}" \
                --modes "$modes" --out "$OUT/batch_${modes//,/+}.json" ;;
        *)
            echo "unknown step: $step (objects tests conv cache export export-triton export-windows export-off fitted app preview normalmap views decimation" \
                 "visibility profile chain columns ab e2e trellis2 trellis2-export trellis2-app texturing attention8 limits launch firstjob budget batch)" >&2; exit 2 ;;
    esac
done
