#!/usr/bin/env bash
# Fuzzes TADS's loaders and parsers with cargo-fuzz (libFuzzer): model.json and group.json, the
# durations, the settings file with ${VAR}, the --start timestamp, --shard and the locations.
# Installs cargo-fuzz if it is missing, builds every target once, runs each for a bounded time
# on its seed corpus (fuzz/corpus/<target>/, in git) plus what earlier runs grew
# (fuzz/corpus-run/<target>/, ignored), and prints the executions per target. Exits non-zero if
# any target crashed, panicked, overflowed its stack, ran out of memory or hung; the input that
# did it is in fuzz/artifacts/<target>/ (rerun it with `cargo +nightly fuzz run --sanitizer none
# <target> <file>`; add it to fuzz/corpus/<target>/ once fixed).
#
#   scripts/fuzz.sh                          # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh settings model_json
#
# Environment: FUZZ_SECONDS (default 60) per target; FUZZ_TOOLCHAIN (default nightly), the
# toolchain cargo-fuzz needs; CARGO_TARGET_DIR as usual (default fuzz/target). The targets are
# built without AddressSanitizer (--sanitizer none): TADS forbids unsafe code, and a build of
# DataFusion with it takes far longer; debug assertions and overflow checks are on.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
fuzz=(cargo "+$toolchain" fuzz)
flags=(--sanitizer none)

step() { printf '\n==> %s\n' "$*"; }

if ! "${fuzz[@]}" --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <("${fuzz[@]}" list)
fi

step "building ${targets[*]}"
"${fuzz[@]}" build "${flags[@]}"

# A panic's message names the assertion; a backtrace of an instrumented binary this big takes
# longer to print than -timeout allows (rerun the input with RUST_BACKTRACE=1 for one).
export RUST_BACKTRACE=0

root="$PWD/fuzz"
mkdir -p "$root/corpus-run"
declare -A execs result
failed=0
for t in "${targets[@]}"; do
  step "$t for ${seconds}s"
  mkdir -p "$root/corpus-run/$t" "$root/corpus/$t"
  log="$root/corpus-run/$t.log"
  options=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
  [ -f "$root/dict/$t.dict" ] && options+=(-dict="$root/dict/$t.dict")
  # New inputs go to the first folder (the run's), never to the seeds in git.
  if "${fuzz[@]}" run "${flags[@]}" "$t" "$root/corpus-run/$t" "$root/corpus/$t" -- "${options[@]}" >"$log" 2>&1; then
    result[$t]=ok
  else
    result[$t]=FAILED
    failed=1
    grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|overflowed its stack|Test unit written to' "$log" | head -n 8 || true
    echo "full log: $log"
  fi
  n=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  [ -n "$n" ] || n=$(sed -n 's/^#\([0-9]*\)[[:space:]].*/\1/p' "$log" | tail -n 1)
  execs[$t]="${n:-?}"
  echo "$t: ${execs[$t]} executions, ${result[$t]}"
done

step "summary (${seconds}s per target)"
printf '%-12s %14s  %s\n' target executions result
for t in "${targets[@]}"; do
  printf '%-12s %14s  %s\n' "$t" "${execs[$t]}" "${result[$t]}"
done
exit "$failed"
