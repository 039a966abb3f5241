#!/usr/bin/env bash
# tads watch, measured live (a benchmark, not a test):
#  1. latency: `tads generate --follow` lands a file of 10 minutes every 2.33 s (a period that
#     does not divide by the watcher's, so landings fall at every phase of it); `tads watch
#     --every 1s` scores each and tells a real Alertmanager (Debian's prometheus-alertmanager on
#     127.0.0.1). A poller lists the folder and Alertmanager's alerts every 25 ms; each alert id's
#     first appearance is timed from the landing of the newest file before it. p50 / p99 / max.
#  2. throughput: a generator at --speed 1000 (1,000 hosts at 10 s: 100,000 rows a second of wall
#     time, from 18:00 across midnight, so the previous day's levels are read once and then kept)
#     for 60 s while tads watch follows; rows scored per second and how far behind it ends.
#
#   benches/watch.sh [--tads BIN] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
tads="${CARGO_TARGET_DIR:-target}/release/tads"
out="$(mktemp -d -t tads-watch-bench.XXXXXX)"
while [ $# -gt 0 ]; do
  case "$1" in
    --tads) tads="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: $0 [--tads BIN] [--out DIR]" >&2; exit 2 ;;
  esac
done
[ -x "$tads" ] || { echo "no tads binary at $tads (cargo build --release, or --tads BIN)" >&2; exit 2; }
command -v prometheus-alertmanager >/dev/null || { echo "needs prometheus-alertmanager (apt-get install prometheus-alertmanager)" >&2; exit 2; }
mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "== history and model (20 hosts, 2 days at 1 min)"
"$tads" generate --quiet --out "$out/history" --overwrite --hosts 20 --duration 2d --interval 1m --anomaly-rate 1 --seed 5
"$tads" train --quiet --data "$out/history" --models "$out/models" --model fleet --overwrite

echo "== latency: a file of 10 min every 2.33 s, watch --every 1s, Alertmanager"
amport=$(port)
mkdir -p "$out/am"
cat > "$out/am/am.yml" <<EOF
route:
  receiver: none
  group_wait: 100ms
receivers:
  - name: none
EOF
prometheus-alertmanager --config.file="$out/am/am.yml" --storage.path="$out/am/data" \
  --web.listen-address="127.0.0.1:$amport" --cluster.listen-address= >"$out/am/log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$amport/-/ready" >/dev/null && break; sleep 0.1; done
rm -rf "$out/live" "$out/watch"
"$tads" watch --data "$out/live" --models "$out/models" --model fleet --out "$out/watch" \
  --every 1s --settle 100ms --alertmanager "http://127.0.0.1:$amport" --outbox "$out/outbox" >"$out/watch.log" 2>&1 &
watcher=$!; pids+=($watcher)
"$tads" generate --follow --quiet --out "$out/live" --hosts 20 --interval 1m --anomaly-rate 8 --seed 9 \
  --start 2026-01-03T00:00:00Z --duration 4h --flush 10m --speed 257 &
gen=$!; pids+=($gen)
python3 - "$out/live" "http://127.0.0.1:$amport" "$gen" <<'EOF'
import json, os, sys, time, urllib.request
live, am, gen = sys.argv[1], sys.argv[2], int(sys.argv[3])
landed, seen, done_at = {}, {}, None
def alive(pid):
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
while True:
    now = time.time()
    for root, _, files in os.walk(live):
        for f in files:
            if f.endswith(".parquet") and not f.startswith("."):
                landed.setdefault(os.path.join(root, f), now)
    try:
        alerts = json.load(urllib.request.urlopen(am + "/api/v2/alerts", timeout=2))
        for a in alerts:
            seen.setdefault(a["labels"].get("alert_id"), now)
    except Exception:
        pass
    if done_at is None and not alive(gen):
        done_at = now
    if done_at is not None and now - done_at > 5:
        break
    time.sleep(0.025)
lands = sorted(landed.values())
lat = sorted(t - max(l for l in lands if l <= t) for t in seen.values() if any(l <= t for l in lands))
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")
print(f"{len(landed)} files landed, {len(lat)} alerts reached Alertmanager; "
      f"latency from landing: p50 {q(0.5):.2f} s, p99 {q(0.99):.2f} s, max {lat[-1] if lat else float('nan'):.2f} s")
EOF
kill -INT "$watcher"; wait "$watcher" || true

echo "== throughput: 1,000 hosts at 10 s, --speed 1000 (100,000 rows a second) for 60 s"
rm -rf "$out/live2" "$out/watch2"
"$tads" generate --quiet --out "$out/history2" --overwrite --hosts 1000 --duration 1d --interval 10s --anomaly-rate 1 --seed 6
"$tads" train --quiet --data "$out/history2" --models "$out/models" --model big --overwrite
"$tads" watch --data "$out/live2" --models "$out/models" --model big --out "$out/watch2" \
  --every 1s --settle 200ms >"$out/watch2.log" 2>&1 &
watcher=$!; pids+=($watcher)
start=$(date +%s.%N)
"$tads" generate --follow --quiet --out "$out/live2" --hosts 1000 --interval 10s --anomaly-rate 1 --seed 7 \
  --start 2026-01-02T18:00:00Z --duration 1000m --flush 1m --speed 1000
gen_end=$(date +%s.%N)
# Let it catch up, then stop it.
for _ in $(seq 1 120); do
  pending=$(python3 -c "
import json,sys
c=json.load(open('$out/watch2/_watch/checkpoint.json'))
import os
n=sum(1 for r,_,fs in os.walk('$out/live2') for f in fs if f.endswith('.parquet') and not f.startswith('.'))
print(n-len(c['files']))" 2>/dev/null || echo 1)
  [ "$pending" = "0" ] && break
  sleep 0.5
done
caught=$(date +%s.%N)
kill -INT "$watcher"; wait "$watcher" || true
python3 - "$out/watch2/_watch/checkpoint.json" "$start" "$gen_end" "$caught" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
start, gen_end, caught = map(float, sys.argv[2:5])
rows = sum(f["rows"] for f in c["files"].values())
print(f"{rows:,} rows in {len(c['files'])} files over {c['rounds']} rounds; generator ran {gen_end-start:.1f} s, "
      f"watch done {caught-gen_end:.1f} s after its last file: {rows/(caught-start):,.0f} rows/s sustained")
EOF
echo "(logs and outputs in $out)"
