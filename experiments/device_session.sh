#!/usr/bin/env bash
# One call of the lent accelerator (the `device` tool), prepared on the CPU:
# measures issue 7's throughput, then trains issue 6's sweeps all at once in
# the time left, their epochs sized to the measured speed, and sends back
# the runs (best checkpoints, metrics, ten-crop reports) and the tables.
#
# Here, once per checkout (the device reaches no network and lacks grain,
# array_record, ml_collections, tensorboardX and portpicker; .gitignore keeps
# the .device and .whl folders out of git):
#   python experiments/device_pack.py pack \
#       --fer2013=../shared/datasets/fer2013/fer2013.tar.gz \
#       --ferplus=../shared/datasets/ferplus/fer2013new.csv --out=.device/fer.xz
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl grain==0.2.18 \
#       array_record==0.8.6 ml_collections==1.1.0 tensorboardX==2.6.5 \
#       portpicker==1.6.0
# then one device call (about 60 MiB travels: 53 the data, 4.4 the wheels):
#   command: COMMIT=<git rev-parse --short HEAD> bash experiments/device_session.sh
#   carry: [".whl", ".device"], timeout_s: 580
# and here, from what comes back (session.log, which also holds the
# throughput tables and the sweeps' summaries, and runs.tar.xz.part-*: the
# bench_*.txt tables and every sweep's runs and reports, their best
# checkpoints as many as fit; experiments/device_results.py):
#   mkdir -p runs/device && cat <files_at>/runs.tar.xz.part-* | tar xJ -C runs/device
#   python -m fer_jax.report --workdirs runs/device/accuracy_ablation_sweep \
#       --out reports/accuracy_ablation \
#       --data_path=../shared/datasets/fer2013/fer2013.tar.gz
#   python experiments/results_entry.py ...   # RESULTS.md entries
#
# Settings (environment): BUDGET_S (seconds from the start, 520); SWEEPS
# (sweep files, all trained at once; default the accuracy ablation, the large
# model's two seeds and the FER+ modes: 15 runs, the two vgg_fer runs at 1.8x
# a resnet_small's FLOPs counted as one each and cosine over the call's
# epochs instead of their recipe's plateau, their 142 MiB best checkpoints
# too large to come back (their sha256 does); a file named ferplus* gets the
# FER+ votes; a file followed by @key=value overrides gives them to its runs
# alone, e.g. experiments/ferplus_modes_sweep.py@train.epochs=30@seed=1, and
# @run=<name> (repeated) trains only the runs named, e.g.
# experiments/accuracy_ablation_sweep.py@run=mixup@run=cutmix);
# EPOCHS (of every run without its own train.epochs; 'auto': as many as the
# budget allows at the measured speed, at most MAX_EPOCHS=100); BENCH (1:
# measure throughput first; 0: skip it, for a rerun with EPOCHS set);
# BENCH_STEPS (300 at batch 64, a third of that at 1024, a sixth for MEMORY's
# runs); PROFILE (1: before the sweeps, trace 20 steps of resnet_small at
# batch 1024 in bf16, print where the time goes and the host memory by kind,
# and send the trace back as profile/*.xplane.pb); MEMORY (1: before the
# sweeps, resnet_small's host memory by kind five ways, to tell what holds
# it: compiled in the process, loaded from the compilation cache, compiled
# without autotuning, without CUDA graphs, with two glibc malloc arenas;
# and a program of one convolution, the CUDA runtime's floor); SWEEP_FLAGS
# (more --config.* overrides for every sweep); DATA (a directory with
# fer2013.csv and fer2013new.csv, instead of unpacking .device/fer.xz);
# WORK (/tmp/fer_device).
# Measured (2026-12-04, H200; experiments/BENCHMARKS.md and RESULTS.md, "On
# the H200" and its second session): set-up 20 s, the benchmarks 220 s,
# PROFILE 54 s; the default 15 runs got 4 epochs each in 155 s; with
# BENCH=0, 6 resnet_small runs of 25 epochs and 2 vgg_fer runs of 60 took
# 4 and 7 minutes (6-7 s and 3.2 s an epoch) beside 3 mixup/CutMix runs
# (slowed then, fixed at 2ade7ce), the 11 reports 50 s. A
# second call while the machine is warm (30 s) resumes the first call's
# runs under $WORK.
# Check it here before a device call, on the CPU with small settings (about
# 4 minutes): BENCH=0 EPOCHS=1 SWEEPS=experiments/ferplus_modes_sweep.py
# DATA=<a folder with tests/fakedata.py's fer2013.csv and fer2013new.csv>
# (with at least 64 training faces: a batch); add
# experiments/shipped_model_sweep.py to SWEEPS for its five chained stages
# (17 minutes on a slow 2-core CPU).

set -uo pipefail
BUDGET_S=${BUDGET_S:-520}
SWEEPS=${SWEEPS:-experiments/accuracy_ablation_sweep.py experiments/large_model_sweep.py experiments/ferplus_modes_sweep.py}
EPOCHS=${EPOCHS:-auto}
MAX_EPOCHS=${MAX_EPOCHS:-100}
BENCH=${BENCH:-1}
PROFILE=${PROFILE:-0}
MEMORY=${MEMORY:-0}
BENCH_STEPS=${BENCH_STEPS:-300}
SWEEP_FLAGS=${SWEEP_FLAGS:-}
WORK=${WORK:-/tmp/fer_device}
OUT=${OUT:-$WORK/out}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
TRAIN_IMAGES=28709
# SWEEPS without the @key=value suffixes, which go to overrides_of.
declare -A overrides_of
sweep_files=()
for item in $SWEEPS; do
  sweep_files+=("${item%%@*}")
  [ "$item" = "${item%%@*}" ] || overrides_of[${item%%@*}]=${item#*@}
done
SWEEPS=${sweep_files[*]}

cd "$(dirname "$0")/.."
mkdir -p "$WORK" "$OUT"
exec > >(tee -a "$OUT/session.log") 2>&1
log_pid=$!
# session.log complete before the call returns, on every exit path.
trap 'exec >&- 2>&-; wait "$log_pid"' EXIT
export PYTHONUNBUFFERED=1
# Every process and run compiles the same evaluation programs (and the
# ablation's runs the same model): XLA's persistent cache compiles each once.
export JAX_COMPILATION_CACHE_DIR=$WORK/jax_cache
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
REPORTS_S=110  # Kept after the sweeps for the ten-crop reports and results.
left() { echo $((BUDGET_S - SECONDS)); }
stage() { echo; echo "=== $* (at ${SECONDS} s, $(left) s left)"; }

stage "setup: commit $COMMIT"
if ! python3 -c 'import grain, array_record, ml_collections, tensorboardX, portpicker' \
    2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if [ -z "${DATA:-}" ]; then
  DATA=$WORK/data
  python3 experiments/device_pack.py unpack --src=.device/fer.xz \
      --out="$DATA" || exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    2>/dev/null || echo "no NVIDIA GPU"
python3 -c 'import sys, jax, flax, optax, orbax.checkpoint as ocp, grain
print("python", sys.version.split()[0], "jax", jax.__version__, "flax",
      flax.__version__, "optax", optax.__version__, "orbax",
      ocp.__version__, "grain", grain.__version__, jax.devices())' || exit 1

if [ "$BENCH" = 1 ]; then
  stage "issue 7: throughput"
  timeout 150 python3 experiments/bench_train.py --model=resnet_small \
      --batch_size=64 --steps="$BENCH_STEPS" --augment_where=device \
      --workers=8 --data="$DATA/fer2013.csv" | tee "$WORK/bench_b64.txt"
  timeout 150 python3 experiments/bench_train.py \
      --model=resnet_small,mobilenetv2_small --batch_size=1024 \
      --steps=$((BENCH_STEPS / 3 + 1)) --augment_where=device \
      --compute_dtype=bfloat16 --workers=8 --data="$DATA/fer2013.csv" \
      | tee "$WORK/bench_b1024_bf16.txt"
  # Depthwise layers: XLA's grouped convolution vs fer_jax's shifted sums.
  timeout 60 python3 experiments/bench_depthwise.py --notorch \
      | tee "$WORK/bench_depthwise.txt"
fi
if [ "$PROFILE" = 1 ]; then
  stage "issue 7: where the batch-1024 step's time and the host memory go"
  timeout 120 python3 experiments/bench_train.py --model=resnet_small \
      --batch_size=1024 --steps=34 --augment_where=device \
      --compute_dtype=bfloat16 --workers=8 --data="$DATA/fer2013.csv" \
      --notorch --profile_ops=20 --profile_dir="$WORK/profile" 2>&1 \
      | tee "$WORK/bench_profile.txt"
fi
if [ "$MEMORY" = 1 ]; then
  stage "issue 7: what the JAX process's host memory holds"
  # $1: what the run is; the rest: its environment (env's arguments).
  memory_run() {
    echo "--- $1"
    env "${@:2}" timeout 100 python3 experiments/bench_train.py \
        --model=resnet_small --batch_size=64 --steps=$((BENCH_STEPS / 6)) \
        --augment_where=device --workers=8 --data="$DATA/fer2013.csv" \
        --notorch 2>&1 \
        | grep -E '^host memory|^\| jax'
  }
  { memory_run "compiled in the process (an empty cache)" \
        JAX_COMPILATION_CACHE_DIR="$WORK/memory_cache"
    memory_run "loaded from the compilation cache" \
        JAX_COMPILATION_CACHE_DIR="$WORK/memory_cache"
    memory_run "compiled without autotuning (no cache)" \
        -u JAX_COMPILATION_CACHE_DIR XLA_FLAGS=--xla_gpu_autotune_level=0
    memory_run "compiled without CUDA graphs (no cache)" \
        -u JAX_COMPILATION_CACHE_DIR XLA_FLAGS=--xla_gpu_enable_command_buffer=
    # glibc gives each thread that allocates its own arena, up to 8 per core
    # (128 on a 16-core host), and memory freed in one stays mapped there:
    # XLA compiles and autotunes on a pool of threads.
    memory_run "compiled with two glibc malloc arenas (no cache)" \
        -u JAX_COMPILATION_CACHE_DIR MALLOC_ARENA_MAX=2
    echo "--- the CUDA runtime alone: one convolution's gradient, no model"
    # What any JAX program on this GPU holds (CUDA context, cuDNN, cuBLAS):
    # the floor under the runs above.
    timeout 60 python3 - <<'PYTHON' 2>&1 | grep -E '^(VmHWM|RssAnon|RssFile)'
import jax
import jax.numpy as jnp
images = jnp.ones((64, 48, 48, 32))
kernel_gradient = jax.jit(jax.grad(lambda kernel: jax.lax.conv_general_dilated(
    images, kernel, (1, 1), 'SAME',
    dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()))
kernel_gradient(jnp.ones((3, 3, 32, 64))).block_until_ready()
print(open('/proc/self/status').read())
PYTHON
  } | tee "$WORK/bench_memory.txt"
fi

stage "issue 6: $SWEEPS"
# Whether sweep file $1 gives its runs their own train.epochs (the stages of
# experiments/shipped_model_sweep.py): fer_jax.sweep refuses the flag then.
sets_own_epochs() {
  python3 - "$1" <<'PYTHON'
import sys
from fer_jax import sweeps
runs = sweeps.expand(sweeps.load_sweep_fn(sys.argv[1]))
sys.exit(0 if any('train.epochs' in overrides for _, overrides in runs) else 1)
PYTHON
}
# The flags every sweep gets: data, the sweep's epochs, device augmentation.
sweep_flags() {
  local flags=(--config.data.path="$DATA/fer2013.csv"
               --config.data.augment.where=device)
  case $(basename "$1") in
    ferplus*) flags+=(--config.data.ferplus_path="$DATA/fer2013new.csv");;
    # vgg_fer's recipe lowers its rate on a plateau of PublicTest accuracy,
    # which rises through the few dozen epochs a call affords (as it did in
    # every one of the 10 on the CPU): nothing would decay. Cosine over the
    # epochs there, as on the CPU.
    large_model*) flags+=(--config.train.schedule=cosine);;
  esac
  local overrides=() override
  IFS=@ read -ra overrides <<< "${overrides_of[$1]:-}"
  [ "$EPOCHS" = auto ] || [[ " ${overrides[*]} " = *" train.epochs="* ]] \
      || sets_own_epochs "$1" || flags+=(--config.train.epochs="$EPOCHS")
  for override in "${overrides[@]}"; do
    case $override in
      run=*) flags+=(--"$override");;  # fer_jax.sweep's run selection.
      *) flags+=(--config."$override");;
    esac
  done
  # shellcheck disable=SC2206  # SWEEP_FLAGS is a list of flags.
  flags+=($SWEEP_FLAGS)
  printf '%s\n' "${flags[@]}"
}
declare -A runs
total=0
for sweep in $SWEEPS; do
  mapfile -t flags < <(sweep_flags "$sweep")
  runs[$sweep]=$(python3 -m fer_jax.sweep --config="$sweep" --dry_run \
      --workdir="$WORK/dry_run" "${flags[@]}" | wc -l)
  total=$((total + runs[$sweep]))
done
[ "$total" -gt 0 ] || { echo "no sweep runs (see the errors above)"; exit 1; }
if [ "$EPOCHS" = auto ]; then
  rate=$(awk -F'|' '$2 ~ /jax/ && $3 ~ /resnet_small/ {
      gsub(/[ ,]/, "", $7); print $7 }' "$WORK/bench_b64.txt" 2>/dev/null)
  if [ -z "$rate" ]; then
    EPOCHS=10
    echo "no measured img/s to size the runs (see above): $EPOCHS epochs"
  else
    # All runs share the GPU at once, assumed to go together no faster than
    # one alone at the loop's measured img/s; 60% of the sweeps' time
    # trains, the rest is start-up, compilation and evaluation.
    EPOCHS=$(python3 -c "print(max(1, min($MAX_EPOCHS,
        int(0.6 * ($(left) - $REPORTS_S) * $rate
            / ($total * $TRAIN_IMAGES)))))")
  fi
fi
deadline=$(($(left) - REPORTS_S))
[ "$deadline" -gt 30 ] || { echo "no time left for the sweeps"; exit 1; }
echo "$total runs (at once on a GPU), $EPOCHS epochs each (but those with" \
    "their own train.epochs), stopped after $deadline s"
# Every run's share of the GPU's memory, whichever sweep it is in.
export XLA_PYTHON_CLIENT_MEM_FRACTION
XLA_PYTHON_CLIENT_MEM_FRACTION=$(python3 -c "print(round(0.9 / $total, 3))")
# At the deadline every process of a sweep gets SIGTERM (background jobs
# ignore SIGINT): its runs save a checkpoint and stop, and fer_jax.sweep
# waits for them, so the wait below covers their saving.
pids=()
for sweep in $SWEEPS; do
  [ "${runs[$sweep]}" -gt 0 ] || continue  # Its dry run failed, above.
  name=$(basename "$sweep" .py)
  mapfile -t flags < <(sweep_flags "$sweep")
  timeout --kill-after=30 "$deadline" \
      python3 -m fer_jax.sweep --config="$sweep" --workdir="$WORK/$name" \
      --parallel=devices --runs_per_device="${runs[$sweep]}" "${flags[@]}" \
      > "$WORK/$name.log" 2>&1 &
  pids+=($!)
done
# Not a bare wait: that waits for the log's tee too.
[ "${#pids[@]}" -eq 0 ] || wait "${pids[@]}"
for sweep in $SWEEPS; do
  name=$(basename "$sweep" .py)
  tail -n 2 "$WORK/$name.log"
  # The runs with a best checkpoint: one stopped in its first epoch has none.
  trained=()
  for best in "$WORK/$name"/*/checkpoints/best/[0-9]*; do
    # A step's folder; not orbax's <step>.orbax-checkpoint-tmp-* of a save
    # cut short.
    [[ -d "$best" && "${best##*/}" =~ ^[0-9]+$ ]] \
        && trained+=("${best%/checkpoints/best/*}")
  done
  if [ "${#trained[@]}" -gt 0 ] && [ "$(left)" -gt 60 ]; then
    stage "ten-crop reports: $name, ${#trained[@]} runs"
    timeout $(($(left) - 40)) python3 -m fer_jax.report --nofigures \
        --workdirs "${trained[@]}" --out "$WORK/$name/reports" --ten_crop \
        > "$WORK/$name/reports.log" 2>&1
    tail -n 1 "$WORK/$name/reports.log"
  fi
  for summary in "$WORK/$name/reports/summary.md" "$WORK/$name/summary.md"; do
    [ -f "$summary" ] && { echo "--- $name"; cat "$summary"; break; }
  done
done

stage "results to \$OUT"
# Configs, metrics, reports, logs and the best checkpoints that fit: what
# the reports here need (the latest checkpoints hold optimizer state; figures
# and TensorBoard files are redrawn from the rest). session.log and at most
# four 15 MiB parts: the device returns 8 files, 64 MiB in all.
names=$(for sweep in $SWEEPS; do basename "$sweep" .py; done)
cd "$WORK" || exit 1
# Empty when BENCH=0, rather than the pattern itself as a missing file.
mapfile -t benches < <(compgen -G 'bench_*.txt')
# PROFILE's trace travels whole; the checkpoints get what it leaves.
profile_mib=0
[ -d profile ] && profile_mib=$(du -sm profile | cut -f1)
# shellcheck disable=SC2086  # One directory per sweep.
if ! python3 "$OLDPWD/experiments/device_results.py" --work=. \
    --list=results.list --max_mib=$((56 - profile_mib)) "${benches[@]}" \
    $names; then
  echo "device_results.py failed: sending the runs without checkpoints"
  find "${benches[@]}" $names -path '*/checkpoints' -prune -o -type f -print \
      > results.list
fi
[ -d profile ] && find profile -type f >> results.list
tar -cf - -T results.list | xz -T0 -3 \
    | split -b 15m -d - "$OUT/runs.tar.xz.part-"
ls -l "$OUT"
stage "done"
