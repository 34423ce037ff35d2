#!/usr/bin/env bash
# The image's HEALTHCHECK (deploy/Dockerfile installs it as /usr/local/bin/healthcheck):
# GET /healthz of the service this container runs, with bash alone (the runtime image has
# no curl or wget).
#
#   healthcheck [ingress|worker|order-status|demo-inventory]
#
# Without an argument the service is the first of those names in PID 1's command line
# (after docker-init or tini, if the container runs one). Its address is its own variable
# (INGRESS_LISTEN, WORKER_LISTEN, STATUS_LISTEN, DEMO_INVENTORY_LISTEN) or that variable's
# default; 0.0.0.0 and [::] are asked on loopback. Exit 0: /healthz answered 200, or the
# container runs nothing that serves it (`worker dlq …`, `worker order …`, xsolla-sim).
# Exit 1: no answer within HEALTHCHECK_TIMEOUT seconds (default 5), or another status.
# HEALTHCHECK_PID (default 1) is the process to look at (tests).
set -uo pipefail

service="${1:-}"
if [ -z "$service" ]; then
	args=()
	mapfile -d '' -t args <"/proc/${HEALTHCHECK_PID:-1}/cmdline" 2>/dev/null || true
	for i in "${!args[@]}"; do
		case "${args[i]##*/}" in
		ingress | order-status | demo-inventory)
			service="${args[i]##*/}"
			break
			;;
		worker)
			case "${args[i + 1]:-}" in
			dlq | order) exit 0 ;; # a one-shot command: nothing to serve
			esac
			service=worker
			break
			;;
		esac
	done
fi

case "$service" in
ingress) listen="${INGRESS_LISTEN:-0.0.0.0:8080}" ;;
worker) listen="${WORKER_LISTEN:-0.0.0.0:9090}" ;;
order-status) listen="${STATUS_LISTEN:-0.0.0.0:8081}" ;;
demo-inventory) listen="${DEMO_INVENTORY_LISTEN:-127.0.0.1:8090}" ;;
"") exit 0 ;; # xsolla-sim, a shell: nothing that serves /healthz
*)
	echo "healthcheck: unknown service '$service' (ingress, worker, order-status or demo-inventory)" >&2
	exit 1
	;;
esac

port="${listen##*:}"
host="${listen%:*}"
host="${host#[}"
host="${host%]}"
case "$host" in
"" | 0.0.0.0) host=127.0.0.1 ;;
::) host=::1 ;;
esac

# One connection, one request, the status line; `timeout` bounds the connect and the read.
# shellcheck disable=SC2016 # expanded by the inner bash, from its arguments
status="$(timeout "${HEALTHCHECK_TIMEOUT:-5}" bash -c '
	exec 3<>"/dev/tcp/$0/$1" || exit 1
	printf "GET /healthz HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n" "$0" >&3
	IFS= read -r line <&3 && printf "%s" "${line%$'"'"'\r'"'"'}"
' "$host" "$port" 2>/dev/null)"
case "$status" in
"HTTP/1."?" 200"*) exit 0 ;;
esac
echo "healthcheck: $service on $host:$port: ${status:-no answer}" >&2
exit 1
