#!/usr/bin/env bash
# The whole TADS test suite, with everything it needs: installs the test tools (a Python virtual
# environment with moto's S3 server, from PyPI; Debian's prometheus-alertmanager, prometheus and
# prometheus-node-exporter and chromium with apt if they are missing, for the delivery, import and
# dashboard tests; playwright-core with npm), starts an S3-compatible server on 127.0.0.1,
# finds or starts PostgreSQL on 127.0.0.1:5432, then runs the checks and every test. Exits
# non-zero if anything fails. Nothing is skipped.
#
#   scripts/test.sh            # from the repository root
#
# Environment: CARGO_TARGET_DIR as usual; TADS_CACHE (default ~/.cache/tads) holds the venv.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

cache="${TADS_CACHE:-$HOME/.cache/tads}"
venv="$cache/venv-test"
req_hash=$(sha256sum scripts/requirements-test.txt | cut -c1-16)
if [ ! -x "$venv/bin/moto_server" ] || [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$req_hash" ]; then
  step "installing test tools into $venv"
  rm -rf "$venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements-test.txt
  echo "$req_hash" > "$venv/.requirements"
fi

missing=()
for tool in prometheus-alertmanager prometheus prometheus-node-exporter chromium; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing ${missing[*]} (apt; the delivery, Prometheus and dashboard tests start them on 127.0.0.1)"
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

# playwright-core (npm) drives Debian's chromium in the dashboard test (tests/browser/).
node_dir="$cache/node"
if [ ! -d "$node_dir/node_modules/playwright-core" ]; then
  step "installing playwright-core into $node_dir (npm)"
  mkdir -p "$node_dir"
  npm install --prefix "$node_dir" --silent --no-audit --no-fund playwright-core@1.64.1
fi
export TADS_TEST_NODE_PATH="$node_dir/node_modules"

step "starting an S3-compatible server (moto) on 127.0.0.1"
port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="$(mktemp -t tads-moto.XXXXXX.log)"
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
    break
  fi
  kill -0 "$moto_pid" 2>/dev/null || { cat "$log"; echo "moto server did not start" >&2; exit 1; }
  sleep 0.2
done
export TADS_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
# schemathesis (tests/it/serve.rs) lives in the same virtual environment.
export TADS_TEST_VENV="$venv"
echo "S3 at $TADS_TEST_S3_ENDPOINT"

step "PostgreSQL on 127.0.0.1:5432 (started if it is down; the tests need it)"
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  for cluster in /etc/postgresql/*/; do
    version=$(basename "$cluster")
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not running on 127.0.0.1:5432 and could not be started" >&2; exit 1; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "one arrow, one parquet, one object_store (cargo tree -d)"
dups=$(cargo tree -d --workspace -e normal,build,dev 2>/dev/null | grep -E '^(arrow|arrow-[a-z-]+|parquet|object_store) v' || true)
if [ -n "$dups" ]; then
  echo "duplicate versions:"; echo "$dups"; exit 1
fi

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo test"
# The test that alerts on this machine's own memory runs alone afterwards: the tests beside it
# would move the machine's memory while it trains and watches.
alone=prometheus::this_machine_imported_from_prometheus_is_trained_on_and_watched
cargo test --workspace -- --skip "$alone"
step "cargo test: $alone, alone"
cargo test -p tads --test it -- --exact "$alone"

step "notebooks, headless, on a fresh tads demo"
demo_dir="$(mktemp -d -t tads-demo.XXXXXX)"
# The binary `cargo test` built (`cargo run` alone would resolve features differently and
# rebuild DataFusion).
"${CARGO_TARGET_DIR:-target}/debug/tads" demo --dir "$demo_dir/demo" >/dev/null
TADS_DEMO_DIR="$demo_dir/demo" "$venv/bin/python" notebooks/run.py
rm -rf "$demo_dir"
