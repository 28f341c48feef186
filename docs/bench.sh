#!/usr/bin/env bash
# The benchmarks of docs/BENCHMARKS.md: the bench_* presets, every method tuned the same way
# on seeds that are never reported, then reported on seeds 0-9. Run from the project root:
#
#   bash docs/bench.sh tune      # the tuning sweeps: seeds 100, 101 (about 55 min on 2 cores)
#   bash docs/bench.sh choose    # each method's tuned choice into DOCS/choices.txt, and the tuning tables
#   bash docs/bench.sh report    # seeds 0-9 at each method's tuned choice, then the tables (about 75 min)
#   bash docs/bench.sh tables    # the tables and docs/bench/summary.png again from the report sweeps in OUT
#   bash docs/bench.sh cost      # ms per step of each preset (docs/bench_cost.py), for the budget
#
# `choose` reads each method's choice from the `tune` sweeps; `report` runs at the choices in
# DOCS/choices.txt (committed, so a later session needs no tuning runs), made by `choose` if absent. Runs go to
# outputs/bench/ (OUT=...), tables to docs/bench/ (DOCS=...), each sweep's wall time and command
# to DOCS/walltimes.txt. JOBS sweeps (default 2, one per core) run at once, each on one thread,
# with --ensemble. An interrupted part continues where it stopped (sweep --resume).
# BENCH_TOY=1 shrinks steps, sizes and seeds so that the whole script runs in minutes: a check
# of the script, not a result (runs and tables go to OUT_toy/, tables in OUT_toy/docs/).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-outputs/bench}
DOCS=${DOCS:-docs/bench}
JOBS=${JOBS:-2}
LRS=optim.lr=0.0003,0.001,0.003        # every method: the same Adam rates
TUNE_SEEDS=seed=100,101                 # never reported
REPORT_SEEDS=seed=0,1,2,3,4,5,6,7,8,9
CUT_SEEDS=seed=0,1,2,3,4                # the budget's cut, largest T first (docs/BENCHMARKS.md, "Budget")
CUT="bench_adding_400 bench_adding_200 bench_copy_200"
SHRINK=()
if [ -n "${BENCH_TOY:-}" ]; then
  OUT=${OUT}_toy
  DOCS=$OUT/docs
  TUNE_SEEDS=seed=100 REPORT_SEEDS=seed=0,1 CUT_SEEDS=seed=0
  SHRINK=(train.steps=20 train.log_every=5 model.hidden=8 task.test_size=20 method.pre_steps=1
          method.every=10 method.burst=1)
fi
METHODS="none sal spectral orthogonal critical flossing"
PRESETS="bench_adding_100 bench_adding_200 bench_adding_400 bench_copy_100 bench_copy_200 bench_xor bench_seq_digits"
TUNED="bench_adding_100 bench_copy_100 bench_xor bench_seq_digits"
mkdir -p "$OUT" "$DOCS"

knob() {  # METHOD: the grid of its own main setting, beside the learning rates
  case $1 in
    sal) echo "method.lr=0.003,0.01 method.target=1.0,1.05" ;;
    spectral) echo "method.rho=0.9,1.0,1.1" ;;
    orthogonal) echo "method.gain=0.9,1.0,1.1" ;;
    flossing) echo "method.floss_lr=0.001,0.01" ;;
  esac
}

tuned_at() {  # PRESET: the preset its family is tuned on, the smallest T of it
  case $1 in
    bench_adding_*) echo bench_adding_100 ;;
    bench_copy_*) echo bench_copy_100 ;;
    *) echo "$1" ;;
  esac
}

sweep() {  # NAME, then the arguments of salrun sweep
  local name=$1 start=$SECONDS resume=""
  shift
  [ -f "$OUT/$name/sweep.yaml" ] && resume="--resume"
  mkdir -p "$(dirname "$OUT/$name")"
  # A sweep exits non-zero when a job failed; its table says which, so go on.
  salrun sweep "$@" threads=1 ${SHRINK[@]+"${SHRINK[@]}"} --ensemble --out "$OUT/$name" $resume \
    > "$OUT/$name.log" 2>&1 || true
  echo "$name: $((SECONDS - start)) s: salrun sweep $* --ensemble" >> "$DOCS/walltimes.txt"
}

in_parallel() {  # run "$@" in the background once fewer than JOBS are running
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  "$@" &
}

choice() {  # PRESET METHOD: the tuned overrides (rate and knob) with the highest success rate,
            # then the best mean final metric, over the tuning seeds
  local keys
  keys=$(echo "optim.lr $(knob "$2")" | tr ' ' '\n' | cut -d= -f1 | tr '\n' ' ')
  salrun report "$OUT/tune/$(tuned_at "$1")/$2" --format json --no-figures | python -c '
import json, sys
rows, keys = json.load(sys.stdin), sys.argv[1].split()
def key(r):
    m = r["final_mean"] if r["final_mean"] is not None else float("-inf")
    return (r["success_rate"] or 0.0, m if r["metric"] == "accuracy" else -m)
best = max(rows, key=key)
print(" ".join(f"{k}={best[k]}" for k in keys if k in best))' "$keys"
}

tune() {
  for preset in $TUNED; do
    for method in $METHODS; do
      in_parallel sweep "tune/$preset/$method" experiment=$preset method=$method $LRS $(knob $method) $TUNE_SEEDS
    done
  done
  wait
}

choose() {
  : > "$DOCS/choices.txt"
  mkdir -p "$DOCS/tune"
  for preset in $TUNED; do
    for method in $METHODS; do
      echo "$preset $method: $(choice "$preset" "$method")" >> "$DOCS/choices.txt"
      salrun report "$OUT/tune/$preset/$method" --table "$DOCS/tune/${preset}_$method.md" --no-figures \
        > /dev/null || true
    done
  done
}

report() {
  [ -s "$DOCS/choices.txt" ] || choose
  for preset in $PRESETS; do
    local seeds=$REPORT_SEEDS
    case " $CUT " in *" $preset "*) seeds=$CUT_SEEDS ;; esac
    for method in $METHODS; do
      local chosen
      chosen=$(grep "^$(tuned_at "$preset") $method:" "$DOCS/choices.txt" | cut -d: -f2-)
      in_parallel sweep "report/$preset/$method" experiment=$preset method=$method $chosen $seeds
    done
  done
  wait
  tables
}

tables() {  # each report sweep's table (JSON), then the summary table and figure (docs/bench_summary.py)
  mkdir -p "$DOCS/report"
  for preset in $PRESETS; do
    for method in $METHODS; do
      salrun report "$OUT/report/$preset/$method" --table "$DOCS/report/${preset}_$method.json" --no-figures \
        > /dev/null || true
    done
  done
  python docs/bench_summary.py "$DOCS" "$OUT" $PRESETS > "$DOCS/summary.md"
}

cost() {
  python docs/bench_cost.py --steps 30 --members 10 | tee "$DOCS/cost.csv"
}

[ $# -ge 1 ] || { echo "usage: bash docs/bench.sh tune | choose | report | tables | cost (BENCH_TOY=1: a check at toy size)" >&2; exit 2; }
for part in "$@"; do
  case $part in
    tune | choose | report | tables | cost) "$part" ;;
    *) echo "bench.sh: unknown part '$part' (tune | choose | report | tables | cost)" >&2; exit 2 ;;
  esac
done
