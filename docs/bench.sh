#!/usr/bin/env bash
# The benchmarks of docs/BENCHMARKS.md: the bench_* presets, every method tuned the same way
# on seeds that are never reported, then reported on seeds 0-9. Run from the project root:
#
#   bash docs/bench.sh tune      # salrun tune: TRIALS trials per method and preset on seeds 100, 101 (not yet timed)
#   bash docs/bench.sh choose    # each method's best trial (salrun report --best) into DOCS/choices.txt, and the trial tables
#   bash docs/bench.sh report    # seeds 0-9 at each method's tuned choice, then the tables (about 75 min)
#   bash docs/bench.sh tables    # the tables, docs/bench/summary.md, summary/ figures and runs/report.csv (run
#                                # records) again from the report sweeps in OUT
#   bash docs/bench.sh sal_orthogonal   # a follow-up: SAL at its tuned choice from an orthogonal init, seeds 0-9
#   bash docs/bench.sh cost      # ms per step of each preset (docs/bench_cost.py), for the budget
#   bash docs/bench.sh depth     # issue 14 item 6: digits at depth 100-1,000, lag_analog at lag 1,000
#
# `tune` gives every method the same budget, TRIALS trials of salrun tune (Optuna's TPE, median
# pruning) over its space (`space` below: the Adam rate and the method's own knob, over the range the
# old grid spanned), each trial judged on the mean metric of the tuning seeds; the tuning seeds are
# never reported. `choose` picks each method's best trial (salrun report --best: success rate, then
# mean final metric). The committed DOCS/choices.txt and
# DOCS/tune/*.md come from the grid this part ran before salrun tune (every point of optim.lr=0.0003,0.001,0.003
# times the method's knob values, judged by success rate, then mean final metric); `choose` rewrites
# choices.txt from the tunes and puts each tune's trials.csv in DOCS/tune/.
# `report` runs at the choices in
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
TUNE_SEEDS=100,101                      # never reported (salrun tune refuses 0-9)
TRIALS=${TRIALS:-12}                    # salrun tune's trials per method and preset: the same for every method
REPORT_SEEDS=seed=0,1,2,3,4,5,6,7,8,9
CUT_SEEDS=seed=0,1,2,3,4                # the budget's cut, largest T first (docs/BENCHMARKS.md, "Budget")
CUT="bench_adding_400 bench_adding_200 bench_copy_200"
SHRINK=()
if [ -n "${BENCH_TOY:-}" ]; then
  OUT=${OUT}_toy
  DOCS=$OUT/docs
  TUNE_SEEDS=100 TRIALS=2 REPORT_SEEDS=seed=0,1 CUT_SEEDS=seed=0
  SHRINK=(train.steps=20 train.log_every=5 model.hidden=8 task.test_size=20 method.pre_steps=1
          method.every=10 method.burst=1)
fi
METHODS="none sal spectral orthogonal critical flossing"
PRESETS="bench_adding_100 bench_adding_200 bench_adding_400 bench_copy_100 bench_copy_200 bench_xor bench_seq_digits"
TUNED="bench_adding_100 bench_copy_100 bench_xor bench_seq_digits"
mkdir -p "$OUT" "$DOCS"

space() {  # METHOD: its search space for salrun tune: the Adam rate, and its own main setting over
           # the range of the grid that made DOCS/choices.txt (optim.lr=0.0003,0.001,0.003 and these knobs)
  echo "optim.lr=tag(log,interval(0.0003,0.003))"
  case $1 in
    sal) echo "method.lr=tag(log,interval(0.003,0.01)) method.target=choice(1.0,1.05)" ;;
    spectral) echo "method.rho=interval(0.9,1.1)" ;;
    orthogonal) echo "method.gain=interval(0.9,1.1)" ;;
    flossing) echo "method.floss_lr=tag(log,interval(0.001,0.01))" ;;
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

tune_one() {  # NAME, then the arguments of salrun tune: a rerun continues the study (same folder)
  local name=$1 start=$SECONDS
  shift
  mkdir -p "$(dirname "$OUT/$name")"
  # A tune exits non-zero when no trial completed; its trials.csv says why, so go on.
  salrun tune "$@" threads=1 ${SHRINK[@]+"${SHRINK[@]}"} --trials "$TRIALS" --seeds "$TUNE_SEEDS" \
    --out "$OUT/$name" > "$OUT/$name.log" 2>&1 || true
  echo "$name: $((SECONDS - start)) s: salrun tune $* --trials $TRIALS --seeds $TUNE_SEEDS" >> "$DOCS/walltimes.txt"
}

choice() {  # PRESET METHOD: the searched settings of its best trial by success rate over the tuning seeds,
            # then mean final metric (salrun report --best; the same rule as the grid that made choices.txt)
  salrun report "$OUT/tune/$(tuned_at "$1")/$2/trials/*/seed_*" --no-figures --best --format overrides
}

tune() {
  for preset in $TUNED; do
    for method in $METHODS; do
      # shellcheck disable=SC2046 # the space is several overrides
      in_parallel tune_one "tune/$preset/$method" experiment=$preset method=$method $(space $method)
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
      cp "$OUT/tune/$preset/$method/trials.csv" "$DOCS/tune/${preset}_$method.csv" || true
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

tables() {  # each report sweep's table (JSON), then the summary: every method beside SAL on the same preset
  mkdir -p "$DOCS/report"
  local sweeps=()
  for preset in $PRESETS; do
    for method in $METHODS; do
      [ -d "$OUT/report/$preset/$method" ] || continue  # a sweep not run yet
      sweeps+=("$OUT/report/$preset/$method")
      salrun report "$OUT/report/$preset/$method" --table "$DOCS/report/${preset}_$method.json" --no-figures \
        > /dev/null || true
    done
  done
  [ ${#sweeps[@]} -gt 0 ] || { echo "bench.sh: no report sweeps in $OUT/report: run the report part first" >&2; return 2; }
  # The run records (one row a run, with its commit and command), committed, so that BENCHMARKS.md's
  # blocks can be made again without the run folders (salrun report --fill).
  salrun report "${sweeps[@]}" --format runs --table "$DOCS/runs/report.csv" --no-figures > /dev/null
  # The methods' tuned settings differ, so rows pair by preset; figures/success_by_pair.png draws them.
  salrun report "${sweeps[@]}" --against sal --pair-by experiment --table "$DOCS/summary.md" \
    --figures "$DOCS/summary" > /dev/null
  cp "$DOCS/summary/success_by_pair.png" "$DOCS/summary.png"
}

sal_orthogonal() {  # a follow-up, not tuned: SAL at its tuned choice, started from an orthogonal init
  for preset in $TUNED; do
    local chosen
    chosen=$(grep "^$preset sal:" "$DOCS/choices.txt" | cut -d: -f2-)
    in_parallel sweep "followup/$preset/sal_orthogonal" experiment=$preset method=sal init=orthogonal $chosen $REPORT_SEEDS
  done
  wait
  mkdir -p "$DOCS/followup"
  for preset in $TUNED; do
    salrun report "$OUT/followup/$preset/sal_orthogonal" --table "$DOCS/followup/${preset}_sal_orthogonal.json" \
      --no-figures > /dev/null || true
  done
  salrun report "$OUT"/followup/*/sal_orthogonal --format runs --table "$DOCS/runs/followup.csv" --no-figures > /dev/null
}

cost() {
  python docs/bench_cost.py --steps 30 --members 10 | tee "$DOCS/cost.csv"
}

# Issue 14 item 6 (docs/BENCHMARKS.md, "Depth"): digits at depth 100 (widths 64, 128) and 300
# (width 64; width 128 there was cut for the budget), SAL from small weights, SAL on an orthogonal
# start and the peers, seeds 0-4 (LSUV 0-2); then the moonshot, 3 seeds: digits at depth 1,000
# and lag_analog at lag 1,000. paper_deep_ffn's init and SAL target are pinned, so a change of
# the preset's defaults does not change these runs. Tables and figures into DOCS/depth/.
depth() {
  local d100="model.depth=100 model.width=64,128" d300="model.depth=300 model.width=64"
  # lag: paper_long_lag's budget when these ran (600 steps; the preset has 1,200 since issue 30)
  local d1000="model.depth=1000 model.width=32" lag="task.lag=1000 train.steps=600"
  local seeds=seed=0,1,2,3,4 few=seed=0,1,2
  local -a SHRINK=()
  if [ -n "${BENCH_TOY:-}" ]; then
    d100="model.depth=3 model.width=4,8" d300="model.depth=5 model.width=4" d1000="model.depth=7 model.width=4"
    lag="task.lag=10" seeds=seed=0,1 few=seed=0
    SHRINK=(train.steps=20 train.log_every=5 task.test_size=20)
  fi
  local ffn="experiment=paper_deep_ffn task=digits" small="method=sal init=random method.target=1.06 method.lr=0.002"
  local orth="method=sal init=orthogonal method.target=1.0 method.lr=0.0002" peers="method=orthogonal,critical,none init=random"
  sweep depth/sal_small_d100 $ffn $d100 $small $seeds
  sweep depth/sal_small_d300 $ffn $d300 $small $seeds
  sweep depth/sal_orth_d100 $ffn $d100 $orth $seeds
  sweep depth/sal_orth_d300 $ffn $d300 $orth $seeds
  sweep depth/peers_d100 $ffn $d100 $peers $seeds
  sweep depth/peers_d300 $ffn $d300 $peers $seeds
  sweep depth/lsuv_d300 $ffn $d300 method=lsuv init=random $few
  sweep depth/lag1000 experiment=paper_long_lag task=lag_analog $lag method=sal,none,orthogonal $few
  # orthogonal alone as method=none init=orthogonal, so that it batches with SAL on the same start
  sweep depth/d1000 $ffn $d1000 method=sal,none init=orthogonal method.target=1.0 method.lr=0.0002 $few
  sweep depth/lsuv_d100 $ffn $d100 method=lsuv init=random $few
  mkdir -p "$DOCS/depth"
  local all=("$OUT"/depth/{sal_small_d100,sal_small_d300,sal_orth_d100,sal_orth_d300,peers_d100,peers_d300,lsuv_d300,lsuv_d100})
  salrun report "${all[@]}" --against sal --table "$DOCS/depth/digits.md" --figures "$DOCS/depth/digits" > /dev/null || true
  salrun report "${all[@]}" --judged --table "$DOCS/depth/digits_judged.md" --no-figures > /dev/null || true
  salrun report "$OUT/depth/d1000" --table "$DOCS/depth/digits_d1000.md" --figures "$DOCS/depth/digits_d1000" > /dev/null || true
  salrun report "$OUT/depth/lag1000" --against sal --table "$DOCS/depth/lag1000.md" \
    --figures "$DOCS/depth/lag1000" > /dev/null || true
  salrun report "$OUT"/depth/{d1000,lag1000} --judged --table "$DOCS/depth/moonshot_judged.md" --no-figures \
    > /dev/null || true
}

[ $# -ge 1 ] || { echo "usage: bash docs/bench.sh tune | choose | report | tables | sal_orthogonal | cost | depth (BENCH_TOY=1: a check at toy size)" >&2; exit 2; }
for part in "$@"; do
  case $part in
    tune | choose | report | tables | sal_orthogonal | cost | depth) "$part" ;;
    *) echo "bench.sh: unknown part '$part' (tune | choose | report | tables | sal_orthogonal | cost | depth)" >&2; exit 2 ;;
  esac
done
