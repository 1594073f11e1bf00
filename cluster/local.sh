#!/usr/bin/env bash
# A multi-node Ray cluster on this one machine: a head plus N worker nodes, each a separate
# raylet, for trying the multi-node path (node loss, spreading actors) without a cloud.
#
#   cluster/local.sh up [N]     # head + N workers (default 2); prints the address to use
#   cluster/local.sh status
#   cluster/local.sh down
#
# Knobs (environment): HEAD_CPUS (default 1), WORKER_CPUS (1), RAY_PORT (6390),
# DASHBOARD_PORT (8266), STATE_DIR (/tmp/openmed-ray-local-cluster).
# Each node runs `ray start --block` in its own process group, recorded in STATE_DIR, so
# `down` stops exactly these nodes and never other Ray instances on the machine (`ray stop`
# would stop them all).
set -euo pipefail

HEAD_CPUS=${HEAD_CPUS:-1}
WORKER_CPUS=${WORKER_CPUS:-1}
RAY_PORT=${RAY_PORT:-6390}
DASHBOARD_PORT=${DASHBOARD_PORT:-8266}
STATE_DIR=${STATE_DIR:-/tmp/openmed-ray-local-cluster}
RAY=${RAY:-$(command -v ray || echo "$(dirname "$0")/../.venv/bin/ray")}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

node_ip() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("10.255.255.255", 1)); print(s.getsockname()[0])' 2>/dev/null || hostname -I | awk "{print \$1}"; }

start_node() {  # name, then ray start arguments
  local name=$1; shift
  # Per-node agent and metrics ports: Ray's fixed defaults clash between nodes on one host.
  setsid "$RAY" start --block \
    --dashboard-agent-listen-port="$(free_port)" --dashboard-agent-grpc-port="$(free_port)" \
    --runtime-env-agent-port="$(free_port)" --metrics-export-port="$(free_port)" \
    "$@" >"$STATE_DIR/$name.log" 2>&1 &
  echo $! >"$STATE_DIR/$name.pid"
}

wait_for_nodes() {  # expected count
  local expected=$1 deadline=$((SECONDS + 120))
  until [ "$(alive_nodes)" -ge "$expected" ]; do
    if [ $SECONDS -gt $deadline ]; then
      echo "only $(alive_nodes) of $expected nodes came up; logs in $STATE_DIR" >&2
      return 1
    fi
    sleep 1
  done
}

alive_nodes() {
  curl -sf "http://127.0.0.1:$DASHBOARD_PORT/nodes?view=summary" 2>/dev/null |
    python3 -c 'import json,sys; print(sum(1 for n in json.load(sys.stdin)["data"]["summary"] if n["raylet"]["state"] == "ALIVE"))' 2>/dev/null || echo 0
}

up() {
  local workers=${1:-2}
  if [ -f "$STATE_DIR/head.pid" ] && kill -0 "$(cat "$STATE_DIR/head.pid")" 2>/dev/null; then
    echo "already up; run '$0 down' first" >&2
    exit 1
  fi
  mkdir -p "$STATE_DIR"
  rm -f "$STATE_DIR"/*.pid
  local ip
  ip=$(node_ip)
  start_node head --head --port="$RAY_PORT" --num-cpus="$HEAD_CPUS" --include-dashboard=true \
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --ray-client-server-port="$(free_port)"
  wait_for_nodes 1
  for i in $(seq 1 "$workers"); do
    start_node "worker-$i" --address="$ip:$RAY_PORT" --num-cpus="$WORKER_CPUS"
  done
  wait_for_nodes $((workers + 1))
  echo "$ip:$RAY_PORT" >"$STATE_DIR/address"
  echo "up: head + $workers workers"
  echo "  python jobs/annotate_corpus.py --address $ip:$RAY_PORT ..."
  echo "  ray job submit --address http://127.0.0.1:$DASHBOARD_PORT --working-dir . -- python jobs/..."
}

down() {
  local stopped=0
  for pidfile in "$STATE_DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    kill -TERM -- "-$(cat "$pidfile")" 2>/dev/null && stopped=$((stopped + 1)) || true
    rm -f "$pidfile"
  done
  sleep 2
  echo "down: stopped $stopped node(s)"
}

status() {
  if [ ! -f "$STATE_DIR/head.pid" ]; then
    echo "down"
    return 0
  fi
  echo "address: $(cat "$STATE_DIR/address" 2>/dev/null || echo '?'); alive nodes: $(alive_nodes)"
  for pidfile in "$STATE_DIR"/*.pid; do
    local name
    name=$(basename "$pidfile" .pid)
    if kill -0 "$(cat "$pidfile")" 2>/dev/null; then echo "  $name: running"; else echo "  $name: stopped"; fi
  done
}

case "${1:-status}" in
  up) up "${2:-2}" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up [N] | down | status" >&2; exit 2 ;;
esac
