#!/usr/bin/env bash
# `avatar-streamer bench pipeline` at N sessions with the client peers on one CPU and the
# server on another (taskset), to separate the server's cost from its clients' on one machine.
# Usage: scripts/pipeline_pinned.sh [SESSIONS] [CLIENT_CPU] [SERVER_CPU]   (default 4 0 1)
# Prints the bench's table row; nothing is recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-4} client_cpu=${2:-0} server_cpu=${3:-1}
log=$(mktemp)
taskset -c "$client_cpu" .venv/bin/avatar-streamer bench pipeline --sessions "$sessions" \
    --seconds 20 --no-record > "$log" 2>&1 &
bench=$!
server=""
for _ in $(seq 1 100); do  # the bench starts `serve` in a subprocess: move it, threads and all
    server=$(pgrep -f "streamer serve --port" | head -1 || true)
    [ -n "$server" ] && break
    sleep 0.1
done
[ -n "$server" ] || { echo "the bench's server did not start" >&2; kill "$bench"; exit 1; }
taskset -apc "$server_cpu" "$server" > /dev/null  # threads started later inherit it
wait "$bench"
grep -E "^\|" "$log" | tail -1
rm -f "$log"
