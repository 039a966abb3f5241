#!/usr/bin/env bash
# TADS on real, labelled telemetry, beside scikit-learn PCA and a median/MAD peer: one command.
#
#   benches/real/run.sh [--data DIR] [--sets a,b] [--series s1,s2] [--out DIR] [--tads BIN]
#                       [--report FILE|none] [--label NAME] [--timeout SECONDS]
#
#   --data DIR      the real data (default: ../shared/data/real beside the repository)
#   --sets a,b      only these sets (default: every set in DIR: jumpstarter_d2, jumpstarter_d3,
#                   nab, ms_cloud_monitoring)
#   --series s1,s2  only these series (by folder name, in whichever set holds them)
#   --out DIR       work directory: split data, models, scores, logs, per_series.csv,
#                   summary.json (default: ~/.cache/tads/real-bench/<label or "default">)
#   --tads BIN      the tads binary (default: $TADS, else ~/.cache/tads/target/debug/tads;
#                   nothing is built here: build it first, e.g. `cargo build --release`)
#   --report FILE   the Markdown report (default: benches/REAL.md; `none` for no report)
#   --label NAME    names this run's TADS settings in the tables and summary.json
#   --timeout S     seconds allowed for one tads call (default 1800)
#
# Environment: TADS_TRAIN_ARGS and TADS_SCORE_ARGS are appended to every `tads train` and
# `tads score` call (split like a shell line), so settings can be compared, for example
#
#   TADS_SCORE_ARGS='--set fusion.spe_limit=empirical_999 --set fusion.t2_limit=off' \
#     benches/real/run.sh --label empirical-spe --report none
#
# TADS_REAL_PEERS=iforest,kmeans,lof,ocsvm adds scikit-learn's Isolation Forest, k-means
# distance, LOF and one-class SVM as peers, with the same threshold rule (the detectors of
# issue 18).
#
# For every series it trains TADS on the training rows and scores the test rows, computes the two
# peers on exactly the same rows (thresholds from the training rows only), evaluates all three
# with one evaluator, and writes the report with one table per set. See bench.py for the exact
# rules. Python packages (requirements.txt, pinned) live in a virtual environment of their own,
# ~/.cache/tads/venv-real, created or completed here when something is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
command_line="benches/real/run.sh${*:+ $*}"
[ -n "${TADS_TRAIN_ARGS:-}" ] && command_line="TADS_TRAIN_ARGS='$TADS_TRAIN_ARGS' $command_line"
[ -n "${TADS_SCORE_ARGS:-}" ] && command_line="TADS_SCORE_ARGS='$TADS_SCORE_ARGS' $command_line"

cache="${TADS_CACHE:-$HOME/.cache/tads}"
data="$repo/../shared/data/real"
tads="${TADS:-$cache/target/debug/tads}"
report="$repo/benches/REAL.md"
out=""
label=""
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --tads) tads="$2"; shift 2 ;;
    --report) report="$2"; shift 2 ;;
    --label) label="$2"; shift 2 ;;
    --sets|--series|--timeout) pass+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -d "$data" ] || { echo "run.sh: no data directory $data (--data DIR)" >&2; exit 2; }
[ -x "$tads" ] || { echo "run.sh: no tads binary at $tads (build it, or --tads BIN / TADS=…)" >&2; exit 2; }
tads="$(cd "$(dirname "$tads")" && pwd)/$(basename "$tads")"
out="${out:-$cache/real-bench/${label:-default}}"

# The Python environment: use it when every pinned requirement is installed, else install them.
venv="$cache/venv-real"
req="$here/requirements.txt"
if [ ! -x "$venv/bin/python" ]; then
  echo "run.sh: creating $venv" >&2
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" - "$req" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, want = line.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
then
  echo "run.sh: installing $req into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
fi

exec "$venv/bin/python" "$here/bench.py" --repo "$repo" --data "$data" --out "$out" \
  --tads "$tads" --report "$report" --label "$label" --command "$command_line" "${pass[@]}"
