# shellcheck shell=bash
# Helpers sourced by deploy/*.sh and .ci/run. Only functions: the caller sets
# `set -euo pipefail` and decides what to run.
#
#   ensure_rabbitmq   RabbitMQ answers on $AMQP_HOST:$AMQP_PORT (default 127.0.0.1:5672),
#                     starting or installing it (Debian) when it does not.
#   ensure_tools      cargo and cargo-nextest are there (installs nextest from crates.io).

AMQP_HOST="${AMQP_HOST:-127.0.0.1}"
AMQP_PORT="${AMQP_PORT:-5672}"

info() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

repo_root() { cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd; }

# True when something accepts TCP connections on host:port (bash's /dev/tcp: no nc needed).
port_open() {
	timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

rabbitmq_up() { port_open "$AMQP_HOST" "$AMQP_PORT"; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Starts the locally installed broker and waits for it. `rabbitmqctl await_startup`
# fails at once while the node is not yet registered with epmd, so wait for the port
# first, then let await_startup confirm the boot finished.
start_rabbitmq() {
	info "starting rabbitmq-server"
	# Debian's script switches to the rabbitmq user itself when run as root.
	rabbitmq-server -detached
	local deadline=$((SECONDS + 90))
	until rabbitmq_up; do
		[ "$SECONDS" -lt "$deadline" ] ||
			die "RabbitMQ did not open $AMQP_HOST:$AMQP_PORT within 90 s; see /var/log/rabbitmq/"
		sleep 0.5
	done
	rabbitmqctl -q await_startup --timeout 60 ||
		die "RabbitMQ opened its port but did not finish booting; see /var/log/rabbitmq/"
}

ensure_rabbitmq() {
	if rabbitmq_up; then
		return 0
	fi
	info "RabbitMQ is not answering on $AMQP_HOST:$AMQP_PORT"
	if [ "$AMQP_HOST" != 127.0.0.1 ] && [ "$AMQP_HOST" != localhost ]; then
		die "AMQP_HOST=$AMQP_HOST is not local: start that broker, or unset AMQP_HOST"
	fi
	if ! command -v rabbitmq-server >/dev/null 2>&1; then
		if is_root && command -v apt-get >/dev/null 2>&1; then
			info "installing rabbitmq-server from Debian's packages"
			apt-get update -qq
			# The package's own service start fails harmlessly where there is no init
			# system (containers); start_rabbitmq below starts it either way.
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
		else
			cat >&2 <<-'EOF'
				error: RabbitMQ is not running and cannot be installed from here.
				Do one of:
				  * Debian/Ubuntu:  sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached
				  * Docker:         docker run -d --name rabbitmq -p 127.0.0.1:5672:5672 rabbitmq:3.10
				  * elsewhere:      https://www.rabbitmq.com/download.html
				then run this command again (set AMQP_HOST/AMQP_PORT if it is not 127.0.0.1:5672).
			EOF
			exit 1
		fi
	fi
	if rabbitmq_up; then # the package's postinst may have started it
		return 0
	fi
	if ! is_root && [ "$(id -un)" != rabbitmq ]; then
		die "rabbitmq-server is installed but stopped; start it as root: sudo rabbitmq-server -detached"
	fi
	start_rabbitmq
}

ensure_tools() {
	command -v cargo >/dev/null 2>&1 ||
		die "cargo not found: install Rust with rustup (https://rustup.rs), then open a new shell"
	if ! cargo nextest --version >/dev/null 2>&1; then
		info "installing cargo-nextest (one-off, from crates.io)"
		cargo install cargo-nextest --locked
	fi
}
