#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU (sized for under 8 minutes on an
# H100/H200, the build included), from the repository root:
#
#   bash tools/gpu_check.sh            # report in $OUT (default output/gpu_check)
#
# With the device tool: carry [".whl", ".device"] (filled by bash ../shared/device/fetch_wheels.sh)
# and run `bash tools/gpu_check.sh`; the wheels are installed first when present.
#
# Steps, each under its own time limit so that one slow step cannot eat the others:
#   1. build dinat_m2f._C with the CUDA kernels for TORCH_CUDA_ARCH_LIST (default 9.0);
#   2. every CUDA test (pytest -m cuda): NA (unfused and fused Triton kernels),
#      MSDeformAttn, demo on the GPU;
#   3. the accuracy table (max error per op and dtype against CPU float64);
#   4. the benchmarks: NA side by side (fused, unfused native, pure PyTorch, sdpa over all
#      tokens; flex_attention with the neighborhood mask and RPB score_mod on DiNAT-L's
#      shapes), forward and forward+backward, time, TFLOP/s and GB/s against the device's
#      peak, peak memory; MSDeformAttn; the fused kernels' work-efficiency table.
# $OUT/report.md gathers the results; the logs of every step are beside it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-output/gpu_check}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -f .device/install_wheels.sh ] && [ -d .whl ]; then
  bash .device/install_wheels.sh > "$OUT/wheels.log" 2>&1
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" FORCE_CUDA=1 MAX_JOBS="$(nproc)"
export DINAT_M2F_REQUIRE_NATIVE=1
PY="${PYTHON:-python3}"
report="$OUT/report.md"
status=0

step() {  # step NAME SECONDS COMMAND...: runs COMMAND with a time limit, output to $OUT/NAME.log
  local name="$1" limit="$2"; shift 2
  local start=$SECONDS
  timeout --signal=INT "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "- $name: exit $rc in $((SECONDS - start)) s" >> "$report"
  [ $rc -eq 0 ] || status=1
  return $rc
}

{
  echo "# GPU check"
  echo
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    | sed 's/^/GPU: /'
  "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)'
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, git $(git rev-parse --short HEAD 2>/dev/null)"
  echo
  echo "## Steps"
} > "$report"

step build 300 "$PY" setup.py build_ext --inplace || { cat "$OUT/build.log" | tail -40; exit 1; }
"$PY" -c 'import dinat_m2f.layers as L; print("native backends:", L.native_backends())' >> "$report"
step cuda_tests 200 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/layers tests/demo \
  --junitxml="$OUT/cuda_tests.xml"
step accuracy 90 "$PY" -m dinat_m2f.benchmarks.accuracy --device cuda
step bench_na_fp16 120 "$PY" -m dinat_m2f.benchmarks.na --device cuda --dtype float16 \
  --impls fused native torch sdpa --warmup 3 --repeats 10
step bench_flex 150 "$PY" -m dinat_m2f.benchmarks.na --device cuda --dtype float16 \
  --variants large --inputs 224 1024 --impls fused native flex --warmup 3 --repeats 10
step bench_na_fp32 60 "$PY" -m dinat_m2f.benchmarks.na --device cuda --dtype float32 \
  --variants large --impls fused native --warmup 3 --repeats 10
step efficiency 60 "$PY" -m dinat_m2f.benchmarks.na_efficiency
step bench_ms_deform_attn 60 "$PY" -m dinat_m2f.benchmarks.na --op ms_deform_attn \
  --device cuda --dtype float16 --warmup 3 --repeats 10

{
  echo
  echo "## CUDA tests"
  tail -n 15 "$OUT/cuda_tests.log"
  for name in accuracy bench_na_fp16 bench_flex bench_na_fp32 bench_ms_deform_attn efficiency; do
    echo
    echo "## $name"
    grep -E '^(\||#)' "$OUT/$name.log"
  done
} >> "$report"
cat "$report"
exit $status
