#!/usr/bin/env bash
# Fuzz smoke test: builds the fuzz targets and runs each one for a few seconds, starting
# from its checked-in corpus; fails if any target crashes. The crash input is left in
# fuzz/artifacts/<target>/ and `cargo fuzz run -s none --dev <target> <file>` replays it.
#
#   bash fuzz/smoke.sh [SECONDS [TARGET...]]     (default: 5 seconds, every target)
#
# Stable Rust: no sanitizer (`-s none`); Rust's own bounds and overflow checks still
# turn memory and arithmetic bugs into crashes. Debug builds (`--dev`): they compile
# in a fraction of a release build's time, and a few seconds per target need no speed.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-5}
shift || true

if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked
fi
flags=(-s none --dev)
cargo fuzz build "${flags[@]}"

if (($# == 0)); then
  mapfile -t targets < <(cargo fuzz list)
  set -- "${targets[@]}"
fi
failed=()
for target in "$@"; do
  # New inputs go to a scratch directory: the checked-in corpus stays as it is.
  scratch=$(mktemp -d)
  echo "fuzz: $target for ${seconds}s"
  if ! cargo fuzz run "${flags[@]}" "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    2>"$scratch.log"; then
    tail -n 40 "$scratch.log" >&2
    failed+=("$target")
  else
    grep -E '^(Done|stat::number_of_executed_units)' "$scratch.log" || true
  fi
  rm -rf "$scratch" "$scratch.log"
done

if ((${#failed[@]})); then
  echo "fuzz: crashes in ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all targets ran without a crash"
