#!/usr/bin/env bash
# Every detector alone and the ensembles on the real sets (issue 18): runs benches/real/run.sh
# once per setting, with models trained `--kmeans --iforest --ocsvm --seasonal-baseline --forecast`, and prints one
# Markdown table per set with a row per setting and the scikit-learn PCA peer (same rows, same
# evaluator).
#
#   benches/real/detectors.sh [run.sh options, e.g. --sets nab]
#   TADS_DETECTOR_SETTINGS="defaults seasonal" benches/real/detectors.sh   (some settings only)
#
# Settings: defaults (pca and mad, max), pca alone, mad alone, kmeans alone, iforest alone,
# seasonal alone, ocsvm alone, forecast alone, pca + mad + kmeans, pca + mad + iforest,
# pca + mad + seasonal, pca + mad + ocsvm, pca + mad + forecast.
# Work directories: ~/.cache/tads/real-bench/detectors-<setting>.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${TADS_CACHE:-$HOME/.cache/tads}"
labels=()
only=" ${TADS_DETECTOR_SETTINGS:-} "
for setting in "defaults:" "pca:pca" "mad:mad" "kmeans:kmeans" "iforest:iforest" \
  "seasonal:seasonal" "ocsvm:ocsvm" "forecast:forecast" "pca+mad+kmeans:pca,mad,kmeans" \
  "pca+mad+iforest:pca,mad,iforest" "pca+mad+seasonal:pca,mad,seasonal" \
  "pca+mad+ocsvm:pca,mad,ocsvm" "pca+mad+forecast:pca,mad,forecast"; do
  name="${setting%%:*}"
  if [ "$only" != "  " ] && [[ "$only" != *" $name "* ]]; then continue; fi
  detectors="${setting#*:}"
  label="detectors-${name//+/-}"
  score_args=""
  [ -n "$detectors" ] && score_args="--set fusion.detectors=$detectors"
  echo "== $name ($label)" >&2
  TADS_TRAIN_ARGS="--kmeans --iforest --ocsvm --seasonal-baseline --forecast" TADS_SCORE_ARGS="$score_args" \
    "$here/run.sh" --label "$label" --report none "$@" > "$cache/real-bench-$label.log" 2>&1 ||
    { echo "run.sh failed for $name: $cache/real-bench-$label.log" >&2; exit 1; }
  labels+=("$name=$cache/real-bench/$label/summary.json")
done
python3 "$here/detectors_table.py" "${labels[@]}"
