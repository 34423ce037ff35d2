#!/usr/bin/env bash
# Bounded fuzzing of the code that reads hostile input (shared/fuzz, issue 10): every
# target for FUZZ_SECONDS (default 15) from its committed seed corpus. What CI runs.
#
#   deploy/fuzz.sh                 every target
#   deploy/fuzz.sh <target>...     only these (e.g. pruned_vs_full)
#   FUZZ_SECONDS=600 deploy/fuzz.sh pruned_vs_full     a longer run by hand
#
# Needs cargo-fuzz (installed here at a pinned version when missing) and libFuzzer, which
# the libfuzzer-sys crate builds. Stable Rust: cargo-fuzz's `-Zsanitizer=address` and
# sancov flags are nightly-only, so the build runs with RUSTC_BOOTSTRAP=1. All targets
# are built once, into one target dir, kept between runs outside the checkout
# (FUZZ_TARGET_DIR, default ~/.cache/xsolla-bridge/fuzz-target: a sanitizer build of the
# whole worker takes minutes cold, about a minute warm). A crash fails the script and
# prints the input that caused it (shared/fuzz/artifacts/<target>/); reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir shared/fuzz <target> <artifact>
# New inputs found go to shared/fuzz/target/corpus/<target>, never into the committed seeds.
set -euo pipefail
# shellcheck source=deploy/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(repo_root)"

CARGO_FUZZ_VERSION=0.13.2
FUZZ_DIR=shared/fuzz
FUZZ_SECONDS="${FUZZ_SECONDS:-15}"
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/xsolla-bridge/fuzz-target}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
	info "installing cargo-fuzz $CARGO_FUZZ_VERSION"
	cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"
fi

if [ "$#" -gt 0 ]; then
	targets=("$@")
else
	mapfile -t targets < <(cargo fuzz list --fuzz-dir "$FUZZ_DIR")
fi

info "building the fuzz targets"
start=$SECONDS
cargo fuzz build --fuzz-dir "$FUZZ_DIR" --target-dir "$FUZZ_TARGET_DIR"
info "built in $((SECONDS - start)) s"

failed=()
for target in "${targets[@]}"; do
	seeds="$FUZZ_DIR/corpus/$target"
	found="$FUZZ_DIR/target/corpus/$target"
	artifacts="$FUZZ_DIR/artifacts/$target"
	mkdir -p "$found" "$artifacts"
	dict=()
	case "$target" in
	webhook_summary | pruned_vs_full) dict=("-dict=$FUZZ_DIR/json.dict") ;;
	esac
	info "fuzzing $target for ${FUZZ_SECONDS}s"
	# -timeout: one input taking over 10 s is a hang; -rss_limit_mb: well under 24 GiB.
	if ! cargo fuzz run --fuzz-dir "$FUZZ_DIR" --target-dir "$FUZZ_TARGET_DIR" \
		"$target" "$found" "$seeds" -- \
		-max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
		-max_len=16384 -print_final_stats=1 -artifact_prefix="$artifacts/" \
		"${dict[@]}" 2>"$FUZZ_DIR/target/$target.log"; then
		tail -n 40 "$FUZZ_DIR/target/$target.log" >&2
		printf 'fuzz target %s failed; inputs that crashed it:\n' "$target" >&2
		ls -1 "$artifacts"/* >&2 2>/dev/null || true
		failed+=("$target")
	else
		grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' \
			"$FUZZ_DIR/target/$target.log" | sed "s/^/  $target /" >&2 || true
	fi
done

if [ "${#failed[@]}" -gt 0 ]; then
	die "fuzzing found crashes in: ${failed[*]}"
fi
info "fuzzing: ${#targets[@]} targets, ${FUZZ_SECONDS}s each, no crash"
