#!/usr/bin/env bash
# One device check in one call, on a bare machine that has only this repository:
#   1. the CUDA tests (`make test-gpu`'s selection);
#   2. the benchmarks: bench_measure.py (measure_over_forward), bench_twin.py (twin_s_per_update, twin_mfu and
#      the speed-ups timed side by side), profile_measure.py (where a measurement's time goes);
#   3. the pythia-160m-shaped twin (manifests/pythia-160m-twin.toml) for as many updates as fit in
#      --twin-seconds, then its report (the twin may stop early: measured steps are kept and reported);
#   4. everything in one folder: summary.txt (the benchmarks' last lines), gpu_check.log (all output) and
#      results.tar.gz (the store and the figures).
#
#   bash benches/gpu_check.sh [--dry-run] [--out DIR] [--twin-seconds S]
#
# --dry-run: the same steps on the CPU at the tiny shape (manifests/gpu-check-tiny.toml, --quick benches), so
# the script itself is tested where there is no GPU (tests/test_gpu_check.py); the CUDA tests are not run.  The Python is $PY, else .venv/bin/python when it exists, else python3.  Packages that Python lacks
# are installed from wheels in .whl/ when that folder exists (`make gpu-wheels` fetches them where pip works);
# otherwise one line says what is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
OUT=${OUT:-$ROOT/gpu-check-out}
TWIN_SECONDS=240
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT=$2; shift ;;
    --twin-seconds) TWIN_SECONDS=$2; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$TWIN_SECONDS" in ''|*[!0-9]*) echo "gpu_check: --twin-seconds must be a whole number of seconds" >&2; exit 2 ;; esac
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
mkdir -p "$OUT" || { echo "gpu_check: cannot create $OUT" >&2; exit 2; }
LOG=$OUT/gpu_check.log
SUMMARY=$OUT/summary.txt
WORK=$(mktemp -d)
: >"$LOG"; : >"$SUMMARY"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TRAJECTORY_CACHE="$WORK/cache"   # a fresh cache: nothing of an earlier run is reused or touched

say() { echo "gpu_check: $*" | tee -a "$SUMMARY"; }
step() {  # step NAME SECONDS COMMAND…: run with a time limit, output to the log, last line to the summary
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" >>"$LOG"
  local t0=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  say "$name: exit $rc in $((SECONDS - t0)) s ($(tail -n 1 "$LOG"))"
  return $rc
}

NEED="torch transformers huggingface_hub polars matplotlib joblib safetensors tokenizers tqdm pytest"
missing() { "$PY" -c "import importlib.util as u, sys; m=[n for n in sys.argv[1:] if not u.find_spec(n)]; print(' '.join(m))" $NEED; }
if [ -n "$(missing)" ] && [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" .whl/*.whl >>"$LOG" 2>&1
  export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
if [ -n "$(missing)" ]; then
  say "missing Python packages: $(missing); bring them as wheels in .whl/ (make gpu-wheels)"; exit 2
fi

FAILED=0
if [ $DRY = 1 ]; then
  say "dry run: the tiny shape on the CPU ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
  echo "== tests-gpu: not run (no CUDA in a dry run)" >>"$LOG"
  step bench-measure 120 "$PY" benches/bench_measure.py --quick --device cpu --tokens 1024 --repeats 1 --ratio-only || FAILED=1
  step bench-twin 120 "$PY" benches/bench_twin.py --quick --device cpu --updates 2 --rounds 1 --variants fused || FAILED=1
  step profile 120 "$PY" benches/profile_measure.py --quick --device cpu --tokens 1024 || FAILED=1
  MANIFEST=manifests/gpu-check-tiny.toml; DEVICE=cpu
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$SUMMARY" 2>&1
  step tests-gpu 150 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests || FAILED=1
  step bench-measure 120 "$PY" benches/bench_measure.py --device cuda --tokens 16384 --repeats 3 --ratio-only || FAILED=1
  step bench-twin 90 "$PY" benches/bench_twin.py --device cuda --updates 10 --rounds 2 --variants fused,tf32,compile || FAILED=1
  step profile 60 "$PY" benches/profile_measure.py --device cuda || FAILED=1
  MANIFEST=manifests/pythia-160m-twin.toml; DEVICE=cuda
fi
STORE=$WORK/store
# The twin stops at --twin-seconds (SIGINT, as Ctrl-C: measured units are kept), so exit 130 is expected there.
step twin "$TWIN_SECONDS" "$PY" -m trajectory sweep "$MANIFEST" --store "$STORE" --device "$DEVICE" --no-progress
rc=$?; [ $rc = 0 ] || [ $rc = 130 ] || [ $rc = 124 ] || FAILED=1
step report 120 "$PY" -m trajectory report "$MANIFEST" --store "$STORE" --out "$WORK/figures" || FAILED=1
tar -czf "$OUT/results.tar.gz" -C "$WORK" store figures 2>>"$LOG" || FAILED=1
rm -rf "$WORK"
say "done: $([ $FAILED = 0 ] && echo 'every step passed' || echo 'a step failed: see gpu_check.log'); results in $OUT"
exit $FAILED
