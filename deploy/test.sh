#!/usr/bin/env bash
# Runs all tests: the README's one test command, and what CI runs after fmt and clippy.
#
#   deploy/test.sh                 doc tests, then every test with nextest's `ci` profile
#   deploy/test.sh <nextest args>  only nextest, with these extra args (e.g. a filter)
#
# The tests need RabbitMQ on 127.0.0.1:5672 (guest/guest); it is started, or installed
# from Debian's packages, when missing. Tests that stop a broker boot private nodes of
# their own (tests/src/rabbit.rs), so this shared one is never stopped. The order-status
# client tests run Xsolla's real clients: Node.js + npm and Python 3.10+ with pip must be
# there; the pinned packages of tests/clients/ are installed here (once; then a no-op).
set -euo pipefail
# shellcheck source=deploy/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(repo_root)"

ensure_tools
ensure_rabbitmq
ensure_clients

if [ "$#" -eq 0 ]; then
	# Doc examples are compiled (most are no_run); ~10 s on top of the nextest build,
	# which it reuses. Run first so that nextest's summary is the run's closing line.
	info "doc tests"
	cargo test --workspace --doc --quiet
fi

# Suites that run the real binaries as child processes (tests::bin_path) need them built:
# nextest builds only what the test targets themselves depend on.
info "binaries"
cargo build --workspace --bins --quiet

info "tests (cargo nextest, profile ci)"
cargo nextest run --workspace --profile ci "$@"
