#!/usr/bin/env bash
# Generated-data quality of the detector settings (issue 18): 30 hosts, 14 days at one row a
# minute (seed 11; two weeks, so that a seasonal baseline can find its period), per-host models
# trained with every optional detector, then scored and evaluated once per setting.
#
#   benches/detectors_generated.sh [setting …]   (default: defaults seasonal pca+mad+seasonal)
#
# A setting is a name of benches/real/detectors.sh: defaults, or detectors joined by `+`.
# TADS_GEN_ARGS adds generate flags: TADS_GEN_ARGS="--profile network" for 30 network links.
# Binary: $TADS, else ~/.cache/tads/target/debug/tads (build it first). Work: $TADS_WORK or
# ~/.cache/tads/generated-detectors.
set -euo pipefail
tads="${TADS:-$HOME/.cache/tads/target/debug/tads}"
work="${TADS_WORK:-$HOME/.cache/tads/generated-detectors}"
settings=("$@")
[ ${#settings[@]} -eq 0 ] && settings=(defaults seasonal pca+mad+seasonal)
rm -rf "$work"
mkdir -p "$work"
"$tads" generate --out "$work/data" --hosts 30 --duration 14d --interval 1m --anomaly-rate 1 \
  --seed 11 --quiet ${TADS_GEN_ARGS:-}
"$tads" train --data "$work/data" --models "$work/models" --model hosts --group-by host_id \
  --kmeans --iforest --ocsvm --seasonal-baseline --forecast --quiet
echo "| detectors | point precision | point recall | point F1 | event recall | normal rows in alert | AU-PRC |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for name in "${settings[@]}"; do
  args=()
  [ "$name" != defaults ] && args=(--set "fusion.detectors=${name//+/,}")
  out="$work/scores-${name//+/-}"
  "$tads" score --data "$work/data" --models "$work/models" --model hosts --out "$out" --quiet \
    "${args[@]}"
  "$tads" eval --json --scored "$out" > "$out.eval.json"
  python3 - "$name" "$out.eval.json" <<'PY'
import json, sys
name, e = sys.argv[1], json.load(open(sys.argv[2]))
p = e["point"]
print("| %s | %.3f | %.3f | %.3f | %.3f | %d (%.3f %%) | %.3f |" % (
    name, p["precision"], p["recall"], p["f1"], e["event_recall"],
    e["normal_rows_in_alert"], 100 * e["normal_in_alert"], e["au_prc"]))
PY
done
