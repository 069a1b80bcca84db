#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, from the repository root, one command that
# builds the extension for that GPU, runs the CUDA tests, measures the kernels' accuracy, times
# neighborhood attention and the model, and writes report.md and report.json:
#
#   bash tools/gpu_check.sh [OUT_DIR]             # on the GPU machine
#   bash tools/gpu_check.sh --dry-run [OUT_DIR]   # every step on the CPU at tiny sizes
#   --steps env,build,...  only these steps     --time-scale F  every limit times F (2 on a
#                                                                GPU slower than an H100)
#
# OUT_DIR: default $OUT (the device tool's folder), else output/gpu_check. It receives
# report.md, report.json (rewritten after every step, so that a run cut short still reports)
# and logs.tar.gz (every step's log, the tests' junit XML): three files, within what the device
# tool brings back. With the device tool: `bash ../shared/device/fetch_wheels.sh` here, then
# run this with carry [".whl", ".device"]: the env step installs the wheels into /tmp/site.
# The exit status is 0 when every step is ok; a failed or timed-out step never stops the next.
#
# Steps, in order, with their limits on an H100/H200 (each step runs under `timeout`):
#   env        20 s  the carried wheels; the machine: GPU, torch, triton, nvcc
#   build     240 s  dinat_m2f._C for this GPU's architecture only (asked of torch at run time),
#                    and the tests' dinat_m2f._C_testing
#   tests      90 s  the cuda-marked tests of tests/layers, tests/benchmarks and tests/demo: the
#                    `.cu` kernels (NA backend "unfused", MSDeformAttn) and the fused Triton
#                    kernels on CUDA tensors, float32/float16/bfloat16 against float64
#   accuracy   40 s  the error table of the `.cu` and fused NA kernels and MSDeformAttn, every
#                    dtype, against CPU float64
#   bench_na  150 s  NA forward and forward+backward in float16 on DiNAT-L's shapes (1024 and
#                    640 px with kernel 11, 224 px with kernel 7) and DiNAT-T's at 224 px; per
#                    level dilation 1 and the largest: fused, `.cu` unfused, dense SDPA over the
#                    whole map, the pure-PyTorch path
#   model      90 s  Mask2Former with DiNAT-L vs Swin-L at 1024x1024, AMP float16: inference and
#                    one training step, time and peak memory
#   profile    60 s  Nsight Compute (ncu) on the fused kernels at DiNAT-L's largest shape
#                    (1024 px, level 1, kernel 11, dilation 1): speed of light, occupancy,
#                    launch, warp stalls, memory, one table (tools/ncu_table.py)
#   bench_flex rest  flex_attention with a block mask on the 1024 px shapes (one compile per
#                    shape): whatever the steps before left of the budget
#
# How it is sized: every step's limit is cut to what remains of a 500 s budget, so the run ends
# within 500 s + 5 s (the grace before a timed-out step is killed) + the reports (under a
# second each): under 8.5 minutes whatever happens, which with a machine's start (1-2 min)
# leaves a few of a lease's 15 device minutes. Through the device tool (600 s a command) keep
# --time-scale at most 1.15. The limits are about twice estimates made here without a GPU
# (2-core CPU machine, 2026-12-02), where compiling dominates:
#   build     two extensions, one after the other, each the slowest of its sources built in
#             parallel: dinat_m2f._C (here, on one core shared with other jobs,
#             ms_deform_attn_cpu.cpp took 155 s and na_cuda.cu 86 s for sm_90 alone; about 60 s
#             on an idle core), then the tests' dinat_m2f._C_testing (emulated_device.cpp:
#             59-114 s here, about 40 s idle); its limit is the most generous, since a build
#             cut short leaves nothing to test and the steps after it take what it leaves;
#   tests     ~60 fused (shape, dtype) problems, each compiling 3 Triton kernels: 5-6 s per
#             problem (forward 1 s, dQ 1.7 s, dK/dV 2.8 s, compiled for sm_90 ahead of time
#             here) over 12 pytest-xdist workers, about 30 s, plus start-up and the `.cu` runs;
#   accuracy  its NA shapes are among the tests' (tests/layers/test_na_cuda.py), so its fused
#             kernels come from Triton's cache: about 15 s;
#   bench_na  14 shapes took 32 s on the H200 with three impls; now 28 shapes (the 640 px ones
#             add at most 7 fused problems to compile, ~5 s each; DiNAT-T's 224 px shapes reuse
#             DiNAT-L's) and the PyTorch path: about 80 s;
#   model     2 x (~15 s to build a 200M-parameter model + ~10 s of timed runs); 7 of DiNAT-L's
#             9 fused problems are bench_na's, from the cache;
#   profile   ncu's start, the shape's 3 fused kernels (from Triton's cache after bench_na,
#             else compiled here), ~40 replays of 5 launches of 1-3 ms: about 30 s (not
#             measurable here: no ncu; 15 s on the H200, compiling included);
#   flex      inductor compiles the forward and backward of each of the 7 shapes (not
#             measurable here: flex_attention has no CPU backward); what is left, typically
#             200 s, after the steps above.
# Measured on an H200 (2026-12-04, with --time-scale 1.15, before the profile step): env 15 s,
# build 132 s, tests 79 s, accuracy 17 s, bench_na 32 s, model 36 s, flex 66 s; 377 s in all.
# A step that runs out of time keeps the rows it printed; `--steps` reruns the rest.
set -uo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
STEPS=""
SCALE=1
OUT_DIR="${OUT:-output/gpu_check}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) MODE=dry-run ;;
    --steps) STEPS="${2:?--steps needs a comma-separated list}"; shift ;;
    --time-scale) SCALE="${2:?--time-scale needs a number}"; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT_DIR="$1" ;;
  esac
  shift
done
ALL_STEPS="env build tests accuracy bench_na model profile bench_flex"
for s in ${STEPS//,/ }; do
  if [[ " $ALL_STEPS " != *" $s "* ]]; then
    echo "gpu_check.sh: --steps: no step $s (steps: $ALL_STEPS)" >&2
    exit 2
  fi
done
if ! [[ "$SCALE" =~ ^[0-9]*\.?[0-9]+$ ]] || ! awk -v s="$SCALE" 'BEGIN { exit !(s > 0) }'; then
  echo "gpu_check.sh: --time-scale must be a positive number, got $SCALE" >&2
  exit 2
fi

export PY="${PYTHON:-python3}" MODE
DRY_FLAG=""
[ "$MODE" = gpu ] || DRY_FLAG=" --dry-run"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:/tmp/site:${PYTHONPATH:-}"
mkdir -p "$OUT_DIR" || exit 2
rm -f "$OUT_DIR/report.md" "$OUT_DIR/report.json" "$OUT_DIR/logs.tar.gz"
LOGS="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")" || exit 2
export LOGS
trap 'rm -rf "$LOGS"' EXIT  # the logs live on in OUT_DIR/logs.tar.gz

DINAT_L=configs/coco/panoptic-segmentation/dinat/maskformer2_dinat_large_in22k_bs16_100ep.yaml
SWIN_L=configs/coco/panoptic-segmentation/swin/maskformer2_tvswin_large_bs16_100ep.yaml
if [ "$MODE" = gpu ]; then
  BUDGET=500
  export TRITON_INTERPRET=0
else
  # the CPU stands in for the GPU: the fused kernels run in Triton's interpreter, the `.cu`
  # kernels on the emulated device; tiny shapes and models, no architecture asked for
  BUDGET=2400
  export TRITON_INTERPRET=1
fi
export DINAT_L SWIN_L

# --- the steps: functions, exported so that `timeout ... bash -c step_NAME` runs them -----------
gpu() { [ "$MODE" = gpu ]; }

step_env() {
  # the carried wheels are for the GPU machine's Python (3.12), never for the dry run's
  # (GPU_CHECK_SKIP_WHEELS=1: the tests' rehearsal of GPU mode, which must not install them)
  if gpu && [ -z "${GPU_CHECK_SKIP_WHEELS:-}" ] && [ -f .device/install_wheels.sh ] &&
    [ -d .whl ]; then
    bash .device/install_wheels.sh || return 1
  fi
  "$PY" tools/gpu_check_report.py machine "$LOGS" "$MODE"
}

step_build() {
  if gpu; then
    local arch
    arch="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')" ||
      return 1
    echo "TORCH_CUDA_ARCH_LIST=$arch: this GPU's architecture only"
    TORCH_CUDA_ARCH_LIST="$arch" FORCE_CUDA=1 MAX_JOBS="$(nproc)" \
      "$PY" setup.py build_ext --inplace || return 1
    local check='import dinat_m2f._C_testing, dinat_m2f.layers as L;'
    check+=' assert "CUDA" in L.native_backends(), "dinat_m2f._C has no CUDA kernels"'
    "$PY" -c "$check"
  else
    # the same setup.py over the objects already in build/temp (with their CUDA objects when
    # they hold some, as after `make setup` where nvcc is found: nothing is compiled again),
    # into a folder of its own: whoever runs the dry run may have _C loaded
    local cuda=0
    [ -f build/temp/native/na/na_cuda.o ] && cuda=1
    FORCE_CUDA="$cuda" "$PY" setup.py build_ext --build-lib "$LOGS/build"
  fi
}

step_tests() {
  local selection=(-m cuda)
  gpu || selection=(-m "not cuda" -k empty_batch)  # the emulated and interpreter twins
  # Triton compiles the fused kernels per problem: 12 workers compile in parallel
  gpu && "$PY" -c 'import xdist' 2> /dev/null && selection+=(-n 12)
  "$PY" -m pytest -q -rfEs -p no:cacheprovider "${selection[@]}" --junitxml="$LOGS/tests.xml" \
    tests/layers tests/benchmarks tests/demo
}

step_accuracy() {
  if gpu; then
    "$PY" -m dinat_m2f.benchmarks.accuracy --device cuda
  else
    "$PY" -m tests.emulated_device dinat_m2f.benchmarks.accuracy --device emulated \
      --dtypes float32 --max-shapes 1
  fi
}

# na_table IMPLS VARIANT:INPUT:KERNEL...: the NA benchmark's table per model variant, input
# size and kernel
na_table() {
  local impls="$1" spec size rc=0
  local args=(--device cuda --dtype float16 --warmup 3 --repeats 10)
  gpu || args=(--device cpu --dtype float32 --levels 1 --warmup 0 --repeats 1)
  shift
  for spec in "$@"; do
    size="${spec#*:}"
    # shellcheck disable=SC2086  # IMPLS is words
    "$PY" -m dinat_m2f.benchmarks.na "${args[@]}" --impls $impls --variants "${spec%%:*}" \
      --inputs "${size%:*}" --kernels "${size#*:}" || rc=1
  done
  # on the GPU a row that failed (its note says so) fails the step; the dry run has no flex
  # backward (the CPU lacks one), so there the rows need only be printed
  if gpu && grep -qE '^\|.*(forward|backward) failed: ' "$LOGS/$STEP.log"; then
    echo "a row failed: see its note"
    rc=1
  fi
  return $rc
}

step_bench_na() {
  # DiNAT-L at 1024 and 640 px (kernel 11) and 224 px (kernel 7), DiNAT-T at 224 px; "torch"
  # is the pure-PyTorch path (skipped where its gather would pass --max-gather-gb)
  if gpu; then
    na_table "fused native sdpa torch" large:1024:11 large:640:11 large:224:7 tiny:224:7
  else
    na_table "fused native sdpa torch" tiny:64:7
  fi
}

step_profile() {
  local bench=(-m dinat_m2f.benchmarks.na --impls fused --levels 1 --warmup 0 --repeats 1)
  if ! gpu; then
    # no profiler on the CPU: the profiled command line alone, at a tiny size (the benchmark
    # skips fused timings on the CPU, so this checks the arguments, not a measurement)
    "$PY" "${bench[@]}" --device cpu --dtype float32 --variants tiny --inputs 64 --kernels 7
    return
  fi
  local ncu
  ncu="$(command -v ncu ||
    ls /opt/nvidia/nsight-compute/*/ncu 2> /dev/null | sort -V | tail -n 1)"
  [ -n "$ncu" ] || { echo "no ncu on PATH or in /opt/nvidia/nsight-compute"; return 1; }
  # the first 5 launches of the fused kernels, all on the first shape (dilation 1): the forward
  # timed and for peak memory, then forward, dQ and dK/dV of the first forward+backward
  # (dinat_m2f/benchmarks/timing.py); the program's own table goes aside. ncu may exit 0 with
  # no metrics (counters refused, or the profiled forward failed, which the benchmark notes in
  # its row and exits 0), so making the table is part of the check; on failure the logs' ends
  # say why
  if ! "$ncu" --clock-control none --target-processes all -k 'regex:^na_' --launch-count 5 \
    --section SpeedOfLight --section Occupancy --section LaunchStats \
    --section WarpStateStats --section MemoryWorkloadAnalysis --csv --page details \
    --print-units base \
    --log-file "$LOGS/ncu.csv" "$PY" "${bench[@]}" --device cuda --dtype float16 \
    --variants large --inputs 1024 --kernels 11 > "$LOGS/profiled_run.txt" ||
    ! "$PY" tools/ncu_table.py "$LOGS/ncu.csv"; then
    tail -n 30 "$LOGS/ncu.csv" "$LOGS/profiled_run.txt"
    return 1
  fi
}

step_bench_flex() {
  # the dry run: one 8x8 map, since each shape costs inductor a C++ compile on the CPU
  if gpu; then na_table flex large:1024:11; else na_table flex tiny:32:7; fi
}

step_model() {
  local rc=0 config flags=(--device cuda --resolution 1024 --warmup 2 --repeats 5)
  local opts=(SOLVER.AMP.ENABLED True SOLVER.AMP.PRECISION float16)
  if ! gpu; then
    # DiNAT-L's and Swin-L's config files all the same, shrunk to a few narrow layers, in
    # float32 (detectron2's AMP is CUDA-only)
    flags=(--device cpu --resolution 64 --warmup 0 --repeats 1)
    opts=(MODEL.DINAT.EMBED_DIM 32 MODEL.DINAT.DEPTHS "[1, 1, 1, 1]"
      MODEL.DINAT.NUM_HEADS "[1, 2, 4, 8]" MODEL.DINAT.DILATIONS "[[2], [1], [1], [1]]"
      MODEL.TVSWIN.VARIANT swin_t MODEL.SEM_SEG_HEAD.CONVS_DIM 32
      MODEL.SEM_SEG_HEAD.MASK_DIM 32 MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS 1
      MODEL.MASK_FORMER.HIDDEN_DIM 32 MODEL.MASK_FORMER.NHEADS 4
      MODEL.MASK_FORMER.DEC_LAYERS 2 MODEL.MASK_FORMER.NUM_OBJECT_QUERIES 8
      MODEL.MASK_FORMER.TRAIN_NUM_POINTS 256)
  fi
  for config in "$DINAT_L" "$SWIN_L"; do  # one run each: a failure leaves the other's row
    "$PY" -m dinat_m2f.benchmarks.model --configs "$config" "${flags[@]}" "${opts[@]}" || rc=1
  done
  return $rc
}
export -f gpu step_env step_build step_tests step_accuracy na_table step_bench_na \
  step_bench_flex step_model step_profile

# --- running them -----------------------------------------------------------------------------
START=$SECONDS
DEADLINE=$((START + $(awk -v b="$BUDGET" -v s="$SCALE" 'BEGIN { printf "%d", b * s }')))
STATUS=0

write_report() {
  "$PY" tools/gpu_check_report.py write "$OUT_DIR" "$LOGS" "$MODE" || STATUS=1
  tar -czf "$OUT_DIR/logs.tar.gz" -C "$LOGS" --exclude=./build . || STATUS=1
}

# run NAME GPU_LIMIT DRY_LIMIT DESCRIPTION: step_NAME under min(its limit x scale, what is
# left of the budget); the dry run's limits allow for a slow, shared CPU
run() {
  local name="$1" limit="$2" what="$4" left start rc
  [ -z "$STEPS" ] || [[ ",$STEPS," == *",$name,"* ]] || return 0
  [ "$MODE" = gpu ] || limit="$3"
  limit="$(awk -v l="$limit" -v s="$SCALE" 'BEGIN { printf "%d", l * s }')"
  left=$((DEADLINE - SECONDS))
  [ "$limit" -gt "$left" ] && limit=$left
  [ "$name" = bench_flex ] && [ "$left" -gt "$limit" ] && limit=$left  # flex takes the rest
  start=$SECONDS
  if [ "$limit" -lt 5 ]; then
    echo "no time left in the budget" > "$LOGS/$name.log"
    rc=124
  else
    # -x: the log shows each command as it ran
    STEP="$name" timeout --signal=INT --kill-after=5 "$limit" bash -xc "step_$name" \
      > "$LOGS/$name.log" 2>&1
    rc=$?
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" "$what" \
    "bash tools/gpu_check.sh${DRY_FLAG} --steps $name" >> "$LOGS/steps.tsv"
  [ "$rc" -eq 0 ] || STATUS=1
  write_report
  echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)"
}

echo "GPU check ($MODE) into $OUT_DIR"
run env 20 60 "wheels, then the machine: GPU, torch, triton, nvcc"
run build 240 600 "dinat_m2f._C for this GPU's architecture only, and _C_testing"
export DINAT_M2F_REQUIRE_NATIVE=1  # from here on, a missing extension is an error
run tests 90 300 "cuda-marked tests: .cu (unfused) and fused kernels on CUDA tensors, fp32/16/bf16"
run accuracy 40 300 "error of the .cu and fused NA kernels and MSDeformAttn vs CPU float64"
run bench_na 150 300 "NA fwd and fwd+bwd, DiNAT-L and -T shapes: fused, .cu, SDPA, PyTorch"
run model 90 300 "Mask2Former DiNAT-L vs Swin-L, 1024x1024 AMP fp16: inference, train step"
run profile 60 300 "Nsight Compute on the fused kernels, 1024 px level 1 (k 11, d 1)"
run bench_flex 30 300 "flex_attention with a block mask on the 1024 px shapes (the time left)"
write_report
echo
sed -n '/^| step /,/^$/p' "$OUT_DIR/report.md"
tail -n 1 < <(grep ' steps, ' "$OUT_DIR/report.md")
echo "reports: $OUT_DIR/report.md, $OUT_DIR/report.json; logs: $OUT_DIR/logs.tar.gz"
exit $STATUS
