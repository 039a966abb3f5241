#!/usr/bin/env bash
# The same TADS query, `tads score` and `tads train` in one process and on a Ballista cluster of
# `tads cluster` processes on this machine: one executor with one task slot, then two executors
# with one slot each. Checks the results agree and prints the median wall time of --runs runs.
#
#   benches/cluster/run.sh [--hosts 100] [--days 7] [--runs 3] [--tads PATH]
set -euo pipefail
hosts=100 days=7 runs=3 tads=${TADS:-target/release/tads}
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts=$2; shift 2 ;;
    --days) days=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --tads) tads=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
tads=$(realpath "$tads")
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"
"$tads" generate --quiet --out data --hosts "$hosts" --duration "${days}d" --interval 1m --seed 5
"$tads" train --quiet --model m --data data --models models
m="cpu_pct, mem_pct, disk_read_mbps, disk_write_mbps, net_rx_mbps, net_tx_mbps, latency_ms, error_rate"
query="SELECT host_id, count(*) AS n, round(max(anomaly_score('m', $m)), 6) AS peak, round(sum(pca_score('m', $m)), 3) AS spe, round((robust_stats(cpu_pct))['median'], 6) AS cpu_median FROM telemetry GROUP BY host_id ORDER BY host_id"
rows=$("$tads" sql --data data -q --format csv -c 'SELECT count(*) FROM telemetry' | tail -1)

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timed() {  # $1: sql, score or train; then the extra arguments (--cluster URL)
  local what=$1; shift
  for _ in $(seq "$runs"); do
    local start end
    start=$(date +%s.%N)
    case $what in
      sql) "$tads" sql --data data --models models -q --format csv "$@" -c "$query" > out.csv ;;
      score) "$tads" score --quiet --overwrite --model m --data data --models models --out scores "$@" ;;
      train) "$tads" train --quiet --overwrite --quantiles exact --model t --data data --models trained "$@" ;;
    esac
    end=$(date +%s.%N)
    echo "$end - $start" | bc
  done | median
}
# What a score run wrote, to compare (sums rounded: they add in the order tasks finish).
scored() {
  "$tads" sql --data scores/scored -q --format csv -c \
    "SELECT count(*), count(alert_id), count(DISTINCT alert_id), round(sum(score), 3) FROM telemetry"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on port $1" >&2; exit 1; }
start_cluster() {  # $1: executors
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pids=()
  local port; port=$(free_port)
  "$tads" cluster scheduler --port "$port" 2> scheduler.log & pids+=($!)
  wait_port "$port"
  for i in $(seq "$1"); do
    local flight grpc; flight=$(free_port); grpc=$(free_port)
    "$tads" cluster executor --scheduler "df://127.0.0.1:$port" --port "$flight" --grpc-port "$grpc" \
      --concurrent-tasks 1 2> "executor$i.log" & pids+=($!)
    wait_port "$flight"
  done
  sleep 2
  url="df://127.0.0.1:$port"
}

declare -A secs
for what in sql score train; do secs[$what,local]=$(timed "$what"); done
cp out.csv local.csv
scored > local-scores.csv
for n in 1 2; do
  start_cluster "$n"
  for what in sql score train; do secs[$what,$n]=$(timed "$what" --cluster "$url"); done
  cmp -s out.csv local.csv || { echo "$n executor(s): query results differ from one process" >&2; exit 1; }
  scored | cmp -s - local-scores.csv || { echo "$n executor(s): scores differ from one process" >&2; exit 1; }
done
"$tads" sql --data data --models models --cluster "$url" -q -c "EXPLAIN $query" > explain.txt
echo "rows: $rows; query: per-host count, peak anomaly_score, sum of pca_score, robust_stats(cpu_pct) median"
printf '| job | one process (%s cores) | 1 executor, 1 task slot | 2 executors, 1 slot each | 2 against 1 |\n|---|---:|---:|---:|---:|\n' "$(nproc)"
for what in sql score train; do
  printf '| %s | %.2f s | %.2f s | %.2f s | %.2f× |\n' "$what" "${secs[$what,local]}" "${secs[$what,1]}" \
    "${secs[$what,2]}" "$(echo "${secs[$what,1]} / ${secs[$what,2]}" | bc -l)"
done
echo
echo "the distributed plan (EXPLAIN on the cluster):"
grep -E "Stage|ShuffleWriterExec|UnresolvedShuffleExec|AggregateExec|DataSourceExec" explain.txt | sed 's/^|[^|]*| *//; s/ *|$//' | cut -c1-160
