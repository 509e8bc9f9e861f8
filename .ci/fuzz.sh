#!/usr/bin/env bash
# Fuzz smoke run (docs/fuzzing.md): builds the cargo-fuzz targets in fuzz/
# once, then runs each for FUZZ_SECONDS (default 20) from its committed seed
# corpus, one at a time. Fails if any target crashes, hangs or breaks a
# property; prints each target's executions. Installs cargo-fuzz if absent.
#
#   FUZZ_SECONDS=60 bash .ci/fuzz.sh           # longer
#   FUZZ_TARGETS="sse jsonrpc" bash .ci/fuzz.sh # some targets only
#   FUZZ_STRICT=1 bash .ci/fuzz.sh             # known findings fail too
#
# Runs from any cwd. New corpus entries go to a scratch directory, never
# into fuzz/corpus/; crash inputs go to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "==> fuzz: installing the ${toolchain} toolchain (cargo-fuzz needs it)"
    rustup toolchain install "$toolchain" --profile minimal
fi
echo "==> fuzz: $(rustup run "$toolchain" rustc --version)"

if cargo fuzz --version >/dev/null 2>&1; then
    echo "==> fuzz: $(cargo fuzz --version) already installed"
else
    echo "==> fuzz: installing cargo-fuzz (cargo install --locked cargo-fuzz)"
    cargo install --locked cargo-fuzz
fi

# -s none: no AddressSanitizer (the fuzzed code is safe Rust; ASan would
# halve the executions). Debug assertions and overflow checks stay on.
build=(cargo "+$toolchain" fuzz build -s none)
echo "==> fuzz: building every target: ${build[*]}"
start=$(date +%s)
"${build[@]}"
echo "==> fuzz: built in $(( $(date +%s) - start )) s"

read -r -a targets <<< "${FUZZ_TARGETS:-$(cargo "+$toolchain" fuzz list | tr '\n' ' ')}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
    [[ -f "fuzz/dict/$t.dict" ]] && args+=(-dict="fuzz/dict/$t.dict")
    echo "==> fuzz: $t for ${seconds} s"
    log="$work/$t.log"
    # The scratch directory comes first: libFuzzer adds new inputs there.
    if cargo "+$toolchain" fuzz run -s none "$t" "$work/$t" "fuzz/corpus/$t" -- "${args[@]}" \
        >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$t")
        # The panic (or hang), the reproducer's path and how to rerun it.
        grep -E -A12 "panicked at|ERROR: libFuzzer|Test unit written|Reproduce with" "$log" |
            grep -v "^\s*[0-9]*: \|^\s*at " | head -40 || tail -40 "$log"
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    line=$(printf '%-16s %-6s %12s execs %9s/s' "$t" "$status" "${execs:-?}" "${rate:-?}")
    echo "    $line"
    summary+=("$line")
done

echo "==> fuzz: summary (${seconds} s per target)"
printf '    %s\n' "${summary[@]}"
if ((${#failed[@]})); then
    echo "==> fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/; see docs/fuzzing.md)" >&2
    exit 1
fi
echo "==> fuzz: ${#targets[@]} targets ran clean"
