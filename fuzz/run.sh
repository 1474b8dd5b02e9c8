#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for the given time each.
#
#   bash fuzz/run.sh            # 600 s per target
#   bash fuzz/run.sh 20         # the short CI run
#   bash fuzz/run.sh 600 agl_view export_read
#   bash fuzz/run.sh seeds      # each committed seed once (CI)
#
# With `seeds`, every input in fuzz/corpus/<t> runs once (libFuzzer's
# -runs=0 runs the corpora it is given, then stops), and a seed that crashes,
# times out or passes the memory limit fails the script like a crash found
# by fuzzing.
# Installs cargo-fuzz into target/cargo-fuzz if it is not there. Works on the
# stable toolchain: it ships the sanitizer runtimes, and RUSTC_BOOTSTRAP=1
# lets cargo-fuzz pass its -Z flags. Corpora grow in target/fuzz-corpus/<t>
# (the committed seeds in fuzz/corpus/<t> are only read); a crash leaves its
# input in target/fuzz-artifacts/<t>/ and makes this script fail. Each run's
# log, with libFuzzer's final stats, is kept in target/fuzz-<t>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
seconds="${1:-600}"
shift || true
case "$seconds" in
    seeds | [0-9]*) ;;
    *) echo "usage: $0 [seconds|seeds] [target...]" >&2; exit 2 ;;
esac

cargo_fuzz="$target/cargo-fuzz/bin/cargo-fuzz"
if [ ! -x "$cargo_fuzz" ]; then
    cargo install cargo-fuzz --locked --version 0.13.2 --root "$target/cargo-fuzz"
fi
export RUSTC_BOOTSTRAP=1

cd fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("$cargo_fuzz" list)
fi
"$cargo_fuzz" build --target-dir "$target/fuzz"
for t in "${targets[@]}"; do
    corpus="$target/fuzz-corpus/$t"
    artifacts="$target/fuzz-artifacts/$t"
    log="$target/fuzz-$t.log"
    mkdir -p "$corpus" "$artifacts"
    limits=(-timeout=10 -rss_limit_mb=2048 -artifact_prefix="$artifacts/")
    if [ "$seconds" = seeds ]; then
        echo "fuzz: $t: $(ls "corpus/$t" | wc -l) seeds once (log: $log)"
        # No -max_len: a seed runs whole, whatever its length.
        run=("corpus/$t" -- -runs=0 "${limits[@]}")
    else
        echo "fuzz: $t for ${seconds}s (log: $log)"
        run=("$corpus" "corpus/$t" -- -max_total_time="$seconds" -max_len=262144
            -print_final_stats=1 "${limits[@]}")
    fi
    if ! "$cargo_fuzz" run "$t" --target-dir "$target/fuzz" "${run[@]}" >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz: $t FAILED; crashing input in $artifacts/" >&2
        exit 1
    fi
    # "#<runs> DONE cov: <edges> ft: <features> corp: <entries>/<size> ..."
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1
done
