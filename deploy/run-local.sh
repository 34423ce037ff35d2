#!/usr/bin/env bash
# Runs the whole product on this machine: the README's "run everything" command.
#
#   deploy/run-local.sh         (re)start: RabbitMQ check, release build, demo inventory,
#                               ingress, two workers, order-status; then one signed
#                               order_paid through it, and its status as a player sees it
#   deploy/run-local.sh stop    stop what the last run started
#
# Processes run in the background; logs and pid files are in .run/ at the repo root.
#
# Everything it listens on comes from the environment (defaults in brackets):
#   INGRESS_PORT [8080]          the ingress: webhooks, /healthz, /readyz, /metrics
#   INGRESS_METRICS_PORT [unset] if set, the ingress serves /metrics there (METRICS_LISTEN)
#   INVENTORY_PORT [8090]        the demo inventory (the game's API stand-in)
#   WORKER_PORTS ["9091 9092"]   one worker per port (its /healthz, /readyz, /metrics)
#   STATUS_PORT [8081]           order-status (WebSocket, short-poll, health, metrics)
#   AMQP_URL [amqp://guest:guest@$AMQP_HOST:$AMQP_PORT/%2f]  the broker and vhost; AMQP_HOST
#                                [127.0.0.1] and AMQP_PORT [5672] are where RabbitMQ is
#                                checked (and started when local and stopped)
# and, for scripted use (the test suite runs it this way):
#   RUN_LOCAL_DIR [.run]         logs and pid files
#   RUN_LOCAL_BIN [target/release]  where the binaries are
#   RUN_LOCAL_BUILD [1]          0: do not build, use the binaries in RUN_LOCAL_BIN as they are
#   GRANT_WAIT [20]              seconds to wait for the sample order's grant and status
# Every binary also reads its own variables (RUST_LOG, LOG_FORMAT, …) from the environment.
set -euo pipefail
# shellcheck source=deploy/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(repo_root)"
RUN="${RUN_LOCAL_DIR:-$ROOT/.run}"
BIN="${RUN_LOCAL_BIN:-$ROOT/target/release}"
BUILD="${RUN_LOCAL_BUILD:-1}"
GRANT_WAIT="${GRANT_WAIT:-20}"
SECRET=local-demo-secret

# port NAME VALUE: VALUE, refused (naming NAME) unless it is a TCP port number.
port() {
	if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ] || [ "$2" -gt 65535 ]; then
		die "$1=$2 is not a TCP port (1-65535)"
	fi
	echo "$2"
}
INGRESS_PORT="$(port INGRESS_PORT "${INGRESS_PORT:-8080}")"
INVENTORY_PORT="$(port INVENTORY_PORT "${INVENTORY_PORT:-8090}")"
STATUS_PORT="$(port STATUS_PORT "${STATUS_PORT:-8081}")"
read -r -a WORKER_PORT_LIST <<<"${WORKER_PORTS-9091 9092}"
[ "${#WORKER_PORT_LIST[@]}" -gt 0 ] || die "WORKER_PORTS is empty: give one port per worker"
for i in "${!WORKER_PORT_LIST[@]}"; do
	WORKER_PORT_LIST[i]="$(port WORKER_PORTS "${WORKER_PORT_LIST[i]}")"
done
INGRESS_METRICS_PORT="${INGRESS_METRICS_PORT:-}"
ALL_PORTS=("$INGRESS_PORT" "$INVENTORY_PORT" "$STATUS_PORT" "${WORKER_PORT_LIST[@]}")
if [ -n "$INGRESS_METRICS_PORT" ]; then
	INGRESS_METRICS_PORT="$(port INGRESS_METRICS_PORT "$INGRESS_METRICS_PORT")"
	ALL_PORTS+=("$INGRESS_METRICS_PORT")
fi
[ "$(printf '%s\n' "${ALL_PORTS[@]}" | sort -u | wc -l)" -eq "${#ALL_PORTS[@]}" ] ||
	die "two services on one port: ${ALL_PORTS[*]}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@$AMQP_HOST:$AMQP_PORT/%2f}"

INGRESS="http://127.0.0.1:$INGRESS_PORT"
INGRESS_METRICS="$INGRESS/metrics"
[ -z "$INGRESS_METRICS_PORT" ] || INGRESS_METRICS="http://127.0.0.1:$INGRESS_METRICS_PORT/metrics"
INVENTORY="http://127.0.0.1:$INVENTORY_PORT"
# order-status: the players' order tracking (WebSocket + short-poll). A local dev secret
# signs the players' JWTs (the game backend holds it in production).
STATUS="http://127.0.0.1:$STATUS_PORT"
STATUS_SECRET="${STATUS_JWT_HS256_SECRET:-local-status-secret}"
# The sample order: combined delivery mode, so the body names its project
# (billing.settings.project_id of Xsolla's example) and the status path can name it too.
PROJECT=18404
PLAYER=player-1

# Shown when the sample order is not granted: what each binary says about it. Only names
# the binaries export (tests/tests/observability.rs scrapes the running binaries and fails
# on a name that is not there; histograms by their _count).
INGRESS_DIAG_METRICS="amqp_connected ingress_requests_total ingress_publish_confirm_seconds_count"
WORKER_DIAG_METRICS="amqp_connected worker_deliveries_total worker_inventory_call_seconds_count worker_retries_total worker_dead_lettered_total worker_inventory_auth_failures_total worker_order_event_failures_total"

# True if pid file $1 names a live process running one of our binaries (a stale file may
# name a pid the system has since given to something else: never signal that).
ours() {
	local pid
	pid="$(cat "$1" 2>/dev/null)" || return 1
	[ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$BIN/"
}

stop_all() {
	local f pid pids=()
	for f in "$RUN"/*.pid; do
		[ -e "$f" ] || continue
		if ours "$f"; then
			pid="$(cat "$f")"
			kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
		fi
		rm -f "$f"
	done
	[ "${#pids[@]}" -gt 0 ] || return 0
	info "stopping ${#pids[@]} process(es): ${pids[*]} (SIGTERM, graceful)"
	# Each binary finishes in-flight work within SHUTDOWN_TIMEOUT (30 s by default).
	local deadline=$((SECONDS + 40))
	for pid in "${pids[@]}"; do
		while kill -0 "$pid" 2>/dev/null; do
			if [ "$SECONDS" -ge "$deadline" ]; then
				info "pid $pid still running after 40 s: SIGKILL"
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			sleep 0.2
		done
	done
}

# start NAME BINARY [VAR=value...]: runs target/release/BINARY in its own session (so
# ctrl-c here or closing the terminal does not kill it), output to .run/NAME.log.
# Returns 1 (and starts nothing) when that binary was not built.
start() {
	local name="$1" bin="$2"
	shift 2
	if [ ! -x "$BIN/$bin" ]; then
		info "skipping $name: $BIN/$bin was not built"
		return 1
	fi
	setsid env "$@" "$BIN/$bin" >"$RUN/$name.log" 2>&1 </dev/null &
	echo $! >"$RUN/$name.pid"
	info "started $name (pid $!)"
}

# wait_http NAME URL: until URL answers 2xx (30 s), or NAME's process died.
wait_http() {
	local name="$1" url="$2" deadline=$((SECONDS + 30))
	until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
		# Alive, not `ours`: right after `start` the child may still be the forked shell,
		# not yet exec'd into the binary (seen under load), and fail the cmdline check.
		if ! kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
			tail -n 20 "$RUN/$name.log" >&2 || true
			die "$name exited during start-up (log above: $RUN/$name.log)"
		fi
		[ "$SECONDS" -lt "$deadline" ] ||
			die "$name not ready at $url within 30 s; see $RUN/$name.log"
		sleep 0.2
	done
	info "$name ready ($url)"
}

# A signed order_paid with a fresh order id, through xsolla-sim when it was built, else
# signed here exactly as Xsolla does: sha1(body ‖ secret), hex.
send_order() {
	local order_id="$1" body sig status
	if [ -x "$BIN/xsolla-sim" ]; then
		info "sending order_paid #$order_id with xsolla-sim"
		"$BIN/xsolla-sim" send order_paid --mode combined --order-id "$order_id" \
			--user "$PLAYER" --url "$INGRESS/webhooks/xsolla" --secret "$SECRET"
		return
	fi
	info "sending order_paid #$order_id with curl"
	# No project in this body: the status endpoint will not find it under /project/$PROJECT.
	body='{"notification_type":"order_paid","items":[{"sku":"virtual-good-item_test","type":"virtual_good","is_pre_order":false,"quantity":3,"amount":"1000","promotions":[],"custom_attributes":{}},{"sku":"gold","type":"virtual_currency","is_pre_order":false,"quantity":1500,"amount":null,"promotions":[]}],"order":{"id":'"$order_id"',"mode":"sandbox","currency_type":"real","currency":"USD","amount":"9.99","status":"paid","platform":"xsolla","comment":null,"invoice_id":"'"$order_id"'","promotions":[],"promocodes":[],"coupons":[]},"user":{"external_id":"'"$PLAYER"'","email":"gc_user@xsolla.com"}}'
	sig="$(printf '%s%s' "$body" "$SECRET" | sha1sum | cut -d' ' -f1)"
	status="$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$INGRESS/webhooks/xsolla" \
		-H 'Content-Type: application/json' -H "Authorization: Signature $sig" \
		--data-binary "$body")"
	echo "HTTP $status from the ingress (204 = durably queued)"
}

# metrics NAME URL "NAMES": the samples of those metric names on URL, indented.
metrics() {
	local pattern
	pattern="^($(tr ' ' '|' <<<"$3"))[{ ]"
	echo "  $1 ($2):"
	curl -fsS --max-time 2 "$2" 2>/dev/null | grep -E "$pattern" | sed 's/^/    /' ||
		echo "    (no answer, or none of: $3)"
}

show_grant() {
	local order_id="$1" deadline=$((SECONDS + GRANT_WAIT)) state i
	while [ "$SECONDS" -lt "$deadline" ]; do
		if state="$(curl -fsS --max-time 2 "$INVENTORY/_admin/state" 2>/dev/null)" &&
			grep -q "\"$order_id\"" <<<"$state"; then
			echo "Grant recorded by the demo inventory:"
			python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["grants"][sys.argv[1]], indent=2))' \
				"$order_id" <<<"$state" 2>/dev/null || echo "$state"
			return 0
		fi
		sleep 0.2
	done
	echo "No grant for order $order_id within $GRANT_WAIT s. What the binaries report:"
	metrics ingress "$INGRESS_METRICS" "$INGRESS_DIAG_METRICS"
	for i in "${!WORKER_PORT_LIST[@]}"; do
		metrics "worker-$((i + 1))" "http://127.0.0.1:${WORKER_PORT_LIST[i]}/metrics" "$WORKER_DIAG_METRICS"
	done
	echo "Logs: $RUN/ingress.log, $RUN/worker-*.log, $RUN/demo-inventory.log"
	return 1
}

# What the player's game sees: Xsolla's Get-order short-poll on order-status, with a player
# JWT minted as the game backend would (xsolla-sim jwt), until `done` (granted) or 20 s.
show_status() {
	local order_id="$1" token body="" deadline=$((SECONDS + GRANT_WAIT))
	if [ ! -x "$BIN/xsolla-sim" ] || [ ! -e "$RUN/order-status.pid" ]; then
		return 0
	fi
	token="$("$BIN/xsolla-sim" jwt --user "$PLAYER" --secret "$STATUS_SECRET" --ttl 10m)"
	while [ "$SECONDS" -lt "$deadline" ]; do
		body="$(curl -sS --max-time 2 -H "Authorization: Bearer $token" \
			"$STATUS/api/v2/project/$PROJECT/order/$order_id" 2>/dev/null)" || body=""
		grep -q '"status":"\(done\|canceled\)"' <<<"$body" && break
		sleep 0.2
	done
	echo "Order status as the player's game sees it (GET $STATUS/api/v2/project/$PROJECT/order/$order_id):"
	echo "  ${body:-(no answer)}"
	if grep -q '"status":"paid"' <<<"$body"; then
		echo "  (still paid: order-status has not seen the worker's grant event; see $RUN/worker-*.log)"
	fi
	# The operator's view of the same order.
	# INTEGRATOR: `worker order` comes from another branch; until it is merged this prints
	# the notice below instead of the timeline.
	if "$BIN/worker" order --help >/dev/null 2>&1; then
		echo "Timeline (worker order $order_id):"
		"$BIN/worker" order "$order_id" || true
	else
		echo "(worker order is not in this build: no timeline to show)"
	fi
}

if [ "${1:-}" = stop ]; then
	stop_all
	info "stopped"
	exit 0
fi
[ "$#" -eq 0 ] || die "usage: deploy/run-local.sh [stop]"

mkdir -p "$RUN"
stop_all # idempotent: a second run replaces the first
# A failed start-up leaves nothing half-running (the logs stay in .run/).
on_exit() {
	local rc=$?
	if [ "$rc" -ne 0 ]; then
		info "start-up failed: stopping what was started"
		stop_all
	fi
}
trap on_exit EXIT
ensure_rabbitmq
if [ "$BUILD" != 0 ]; then
	info "building release binaries"
	(cd "$ROOT" && cargo build --release --workspace --bins)
fi

# Inventory first: the workers call it as soon as they consume.
if start demo-inventory demo-inventory DEMO_INVENTORY_LISTEN="127.0.0.1:$INVENTORY_PORT"; then
	wait_http demo-inventory "$INVENTORY/healthz"
fi
have_ingress=0
ingress_env=(INGRESS_LISTEN="127.0.0.1:$INGRESS_PORT" XSOLLA_WEBHOOK_SECRET="$SECRET")
[ -z "$INGRESS_METRICS_PORT" ] || ingress_env+=(METRICS_LISTEN="127.0.0.1:$INGRESS_METRICS_PORT")
if start ingress ingress "${ingress_env[@]}"; then
	have_ingress=1
fi
for i in "${!WORKER_PORT_LIST[@]}"; do
	start "worker-$((i + 1))" worker INVENTORY_URL="$INVENTORY" \
		WORKER_LISTEN="127.0.0.1:${WORKER_PORT_LIST[i]}" || true
done
start order-status order-status STATUS_LISTEN="127.0.0.1:$STATUS_PORT" \
	STATUS_JWT_HS256_SECRET="$STATUS_SECRET" || true
[ ! -e "$RUN/ingress.pid" ] || wait_http ingress "$INGRESS/readyz"
for i in "${!WORKER_PORT_LIST[@]}"; do
	[ ! -e "$RUN/worker-$((i + 1)).pid" ] ||
		wait_http "worker-$((i + 1))" "http://127.0.0.1:${WORKER_PORT_LIST[i]}/readyz"
done
[ ! -e "$RUN/order-status.pid" ] || wait_http order-status "$STATUS/readyz"

if [ "$have_ingress" -eq 1 ]; then
	order_id="$(date +%s)"
	send_order "$order_id" || info "the sample webhook was not acknowledged (see above)"
	show_grant "$order_id" || info "see the logs below"
	show_status "$order_id"
fi

cat <<EOF

Running (AMQP_URL: $(sed -E 's#://([^:@/]*):[^@/]*@#://\1:***@#' <<<"$AMQP_URL")):
  ingress         $INGRESS/webhooks/xsolla   (secret: $SECRET)   /readyz; metrics: $INGRESS_METRICS
  workers         $(printf 'http://127.0.0.1:%s ' "${WORKER_PORT_LIST[@]}")  /readyz /metrics
  demo inventory  $INVENTORY                 GET /_admin/state
  order-status    ws://127.0.0.1:$STATUS_PORT/connection/websocket  and  $STATUS/api/v2/project/{project_id}/order/{order_id}
                  (player JWTs: HS256, secret $STATUS_SECRET; mint one with
                   $BIN/xsolla-sim jwt --user $PLAYER --secret $STATUS_SECRET)
  watch an order  $BIN/xsolla-sim watch --url ws://127.0.0.1:$STATUS_PORT/connection/websocket \\
                    --project $PROJECT --user $PLAYER --secret $STATUS_SECRET --order <id>
Logs: $RUN/*.log     Stop everything: deploy/run-local.sh stop
EOF
