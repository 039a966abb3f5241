#!/usr/bin/env bash
# Cost as data grows: wall time and peak memory (RSS) of `tads score` (the whole job, alert pass
# included) at 1M, 10M and 100M rows on all cores, and at 10M rows on 1 core vs all (taskset);
# then of `tads train`, exact (`--quantiles exact`, the default) at 1M and 10M rows and sketched
# (`--quantiles sketch`) at 1M, 10M and 100M, and both at 10M rows on 1 core. Exact training
# holds every value of a pass: at 100M rows it needs about as much memory as this 24 GB machine
# has, so it is not run there.
# Writes benches/scaling.csv (score), which notebooks/scaling.ipynb plots, and
# benches/scaling-train.csv.
#
#   benches/scaling.sh            # needs ~7 GB free under ~/.cache/tads/scaling
#   TADS=path/to/tads benches/scaling.sh   # another binary, not built here
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# The release binary, as `cargo run --release` builds it (the dependencies are compiled once
# for it, the benches and the comparison). TADS_SKIP_BUILD=1 uses the binary as it is.
[ -n "${TADS_SKIP_BUILD:-}${TADS:-}" ] || cargo build --release --quiet --bin tads
tads="${TADS:-$CARGO_TARGET_DIR/release/tads}"
work="${TADS_CACHE:-$HOME/.cache/tads}/scaling"
mkdir -p "$work"
cores=$(nproc)
csv=benches/scaling.csv
echo "rows,threads,seconds,peak_rss_mb" > "$csv.tmp"

# 165 hosts at 10 s: 1010 minutes ≈ 1M rows, 7 days ≈ 10M, 70 days ≈ 100M.
declare -A duration=([1000000]=1010m [10000000]=7d [100000000]=70d)
measure() { # rows data cpus
  local out="$work/out"
  rm -rf "$out"
  local stats
  stats=$( { /usr/bin/time -f '%e %M' taskset -c "$3" "$tads" score --quiet --data "$2" --models "$work/models" \
    --model scaling --out "$out" >/dev/null; } 2>&1 | tail -1)
  local secs rss
  read -r secs rss <<<"$stats"
  local threads=$(( $(echo "$3" | tr ',' '\n' | wc -l) ))
  echo "$1,$threads,$secs,$(( rss / 1024 ))" | tee -a "$csv.tmp"
}
all=$(seq -s, 0 $((cores - 1)))
for rows in 1000000 10000000 100000000; do
  data="$work/telemetry-$rows"
  if [ ! -f "$data/_manifest.json" ]; then
    "$tads" generate --quiet --out "$data" --overwrite --hosts 165 --duration "${duration[$rows]}" --interval 10s --seed 7
  fi
  if [ "$rows" = 10000000 ] && [ ! -f "$work/models/scaling/model.json" ]; then
    "$tads" train --quiet --data "$data" --models "$work/models" --model scaling --overwrite
  fi
done
for rows in 1000000 10000000 100000000; do
  measure "$rows" "$work/telemetry-$rows" "$all"
done
measure 10000000 "$work/telemetry-10000000" 0
mv "$csv.tmp" "$csv"
echo "wrote $csv"

train_csv=benches/scaling-train.csv
echo "quantiles,rows,threads,seconds,peak_rss_mb" > "$train_csv.tmp"
measure_train() { # quantiles rows cpus
  local threads=$(( $(echo "$3" | tr ',' '\n' | wc -l) ))
  local stats secs rss
  stats=$( { /usr/bin/time -f '%e %M' taskset -c "$3" "$tads" train --quiet --data "$work/telemetry-$2" \
    --models "$work/models" --model "train-$1" --quantiles "$1" --threads "$threads" --overwrite \
    >/dev/null; } 2>&1 | tail -1)
  read -r secs rss <<<"$stats"
  echo "$1,$2,$threads,$secs,$(( rss / 1024 ))" | tee -a "$train_csv.tmp"
}
for rows in 1000000 10000000; do
  measure_train exact "$rows" "$all"
done
for rows in 1000000 10000000 100000000; do
  measure_train sketch "$rows" "$all"
done
measure_train exact 10000000 0
measure_train sketch 10000000 0
mv "$train_csv.tmp" "$train_csv"
echo "wrote $train_csv"
