#!/usr/bin/env bash
# TADS side by side with DuckDB, Polars, numpy and scikit-learn: one command.
#
#   benches/compare/run.sh [--rows 10e6] [--reps 3]
#
# Builds TADS and the DataFusion measuring tool in release mode, installs the Python engines from
# PyPI into a virtual environment of their own (~/.cache/tads/venv-bench), generates the data once
# (~/.cache/tads/compare), runs every engine in alternation and writes benches/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet --bin tads --example compare_engine
venv="${TADS_CACHE:-$HOME/.cache/tads}/venv-bench"
req_hash=$(sha256sum benches/compare/requirements.txt | cut -c1-16)
if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$req_hash" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r benches/compare/requirements.txt
  echo "$req_hash" > "$venv/.requirements"
fi
exec "$venv/bin/python" benches/compare/compare.py --target "$CARGO_TARGET_DIR" "$@"
