# shellcheck shell=bash
# Helpers sourced by deploy/*.sh and .ci/run. Only functions: the caller sets
# `set -euo pipefail` and decides what to run.
#
#   ensure_rabbitmq   RabbitMQ answers on $AMQP_HOST:$AMQP_PORT (default 127.0.0.1:5672),
#                     starting or installing it (Debian) when it does not.
#   ensure_tools      cargo and cargo-nextest are there (installs nextest from crates.io).
#   ensure_clients    the real order-status clients (tests/clients/: centrifuge-js with ws,
#                     centrifuge-python) are installed at their pinned versions.
#   ensure_kubernetes_validate
#                     PyPI kubernetes-validate (deploy/k8s-validate-requirements.txt) is in a
#                     cache directory, which it prints (for PYTHONPATH).

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

# The pinned npm and PyPI clients that tests/tests/order_status_clients.rs runs against the
# real order-status: `npm ci` into tests/clients/node/node_modules (package-lock.json) and
# `pip install --no-deps --target tests/clients/python/.deps` (requirements.txt). Each is
# skipped when a stamp says the same lock file was installed with the same interpreter
# (a re-run costs nothing); a changed pin reinstalls from scratch.
ensure_clients() {
	local root node_dir py_dir stamp want
	root="$(repo_root)"
	node_dir="$root/tests/clients/node"
	py_dir="$root/tests/clients/python"
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
		die "node and npm not found: the order-status client tests run Xsolla's JS client (centrifuge-js) on Node.js >= 18.
  Debian/Ubuntu: sudo apt-get install -y nodejs npm      elsewhere: https://nodejs.org
then run this command again."
	fi
	node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 18 ? 1 : 0)' ||
		die "Node.js $(node --version) is too old for centrifuge-js 5 (needs >= 18)"
	stamp="$node_dir/node_modules/.xsolla-bridge-installed"
	want="$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1) node $(node --version)"
	if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
		info "installing the pinned JS client (npm ci in tests/clients/node)"
		# --ignore-scripts: nothing in the tree needs an install script; none is run.
		npm ci --prefix "$node_dir" --ignore-scripts --no-audit --no-fund --no-update-notifier --loglevel=error ||
			die "npm ci failed in tests/clients/node (output above)"
		echo "$want" >"$stamp"
	fi

	if ! command -v python3 >/dev/null 2>&1; then
		die "python3 not found: the order-status client tests run centrifuge-python (Python >= 3.10).
  Debian/Ubuntu: sudo apt-get install -y python3 python3-pip      elsewhere: https://www.python.org
then run this command again."
	fi
	python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
		die "$(python3 --version) is too old for centrifuge-python 0.7 (needs >= 3.10)"
	stamp="$py_dir/.deps/.xsolla-bridge-installed"
	want="$(sha256sum "$py_dir/requirements.txt" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.implementation.cache_tag, sys.platform)')"
	if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
		info "installing the pinned Python client (pip --target tests/clients/python/.deps)"
		python3 -m pip --version >/dev/null 2>&1 ||
			die "python3 has no pip: sudo apt-get install -y python3-pip (Debian/Ubuntu), or python3 -m ensurepip"
		rm -rf "$py_dir/.deps.new"
		# Into a fresh directory, swapped in once complete: an interrupted install never
		# leaves a half-filled .deps that looks installed.
		PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
			--target "$py_dir/.deps.new" -r "$py_dir/requirements.txt" ||
			die "pip install failed for tests/clients/python/requirements.txt (output above)"
		echo "$want" >"$py_dir/.deps.new/.xsolla-bridge-installed"
		rm -rf "$py_dir/.deps"
		mv "$py_dir/.deps.new" "$py_dir/.deps"
	fi
}

# kubernetes-validate and its dependencies at the versions of deploy/k8s-validate-requirements.txt,
# `pip install --no-deps --target` into a cache directory named after that file's hash and the
# interpreter (rpds-py is compiled), so a changed pin installs afresh and a re-run costs
# nothing. Prints the directory: put it on PYTHONPATH.
ensure_kubernetes_validate() {
	local req want dir
	req="$(repo_root)/deploy/k8s-validate-requirements.txt"
	command -v python3 >/dev/null 2>&1 ||
		die "python3 not found: the manifest checks need it (Debian/Ubuntu: sudo apt-get install -y python3 python3-pip)"
	want="$(sha256sum "$req" | cut -c1-16)-$(python3 -c 'import sys; print(sys.implementation.cache_tag)')"
	dir="${XDG_CACHE_HOME:-$HOME/.cache}/xsolla-bridge/kubernetes-validate/$want"
	if [ ! -f "$dir/.xsolla-bridge-installed" ]; then
		info "installing kubernetes-validate (one-off: pip --target $dir)"
		python3 -m pip --version >/dev/null 2>&1 ||
			die "python3 has no pip: sudo apt-get install -y python3-pip (Debian/Ubuntu), or python3 -m ensurepip"
		rm -rf "$dir.new"
		# Into a fresh directory, moved into place once complete (as in ensure_clients).
		PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-input \
			--no-deps --only-binary=:all: --target "$dir.new" -r "$req" >&2 ||
			die "pip install failed for deploy/k8s-validate-requirements.txt (output above)"
		touch "$dir.new/.xsolla-bridge-installed"
		rm -rf "$dir"
		mv "$dir.new" "$dir"
	fi
	echo "$dir"
}
