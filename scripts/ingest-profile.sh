#!/usr/bin/env bash
# Instructions per ingested event: the release collector under
# `valgrind --tool=callgrind`, fed a fixed number of loadgen payloads per tier.
# Instruction counts, unlike wall time, barely move when the machine is busy,
# so this compares two builds fairly on a shared machine.
#
# Usage: scripts/ingest-profile.sh [COLLECTOR] [LOADGEN]
#   defaults: target/release/telemetry-collector, target/release/loadgen
#   (build both with `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only` for
#   readable profiles; debug info does not change the code).
# Knobs: PROFILE_TIERS [aggregate anonymous full], PROFILE_REQUESTS [500],
#   PROFILE_BATCH [100], PROFILE_CONCURRENCY [8], PROFILE_OUT [target/ingest-profile].
#
# For each tier it starts the collector (open mode, rate limit off, a fresh
# database) under callgrind with instrumentation off, waits for /healthz, sends
# one warm-up request, switches instrumentation on, sends PROFILE_REQUESTS
# payloads, switches it off, and prints the instructions per event of that
# window. The callgrind output stays in PROFILE_OUT for `callgrind_annotate`.
set -euo pipefail

COLLECTOR="${1:-target/release/telemetry-collector}"
LOADGEN="${2:-target/release/loadgen}"
TIERS="${PROFILE_TIERS:-aggregate anonymous full}"
REQUESTS="${PROFILE_REQUESTS:-500}"
BATCH="${PROFILE_BATCH:-100}"
CONCURRENCY="${PROFILE_CONCURRENCY:-8}"
OUT="${PROFILE_OUT:-target/ingest-profile}"
mkdir -p "$OUT"

pid=""
cleanup() {
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

printf '| tier | requests | events | instructions | instructions per event |\n|---|---|---|---|---|\n'
for tier in $TIERS; do
    dir="$(mktemp -d "$OUT/run.XXXXXX")"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$dir/config.toml" <<EOF
listen = "127.0.0.1:$port"
db = "$dir/telemetry.db"
[rate_limit]
requests_per_minute = 0
EOF
    TELEMETRY_COLLECTOR_CONFIG="$dir/config.toml" valgrind --tool=callgrind \
        --instr-atstart=no --callgrind-out-file="$OUT/callgrind.$tier.out" \
        "$COLLECTOR" serve >"$dir/collector.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do
        curl -fsS --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.2
    done
    # One request first, so one-time work (the project's row, the statement
    # cache, the strings of the context) is not counted.
    "$LOADGEN" --url "http://127.0.0.1:$port" --tier "$tier" --batch "$BATCH" \
        --concurrency 1 --requests 1 --duration-secs 120 --json >/dev/null
    callgrind_control --instr=on "$pid" >/dev/null
    "$LOADGEN" --url "http://127.0.0.1:$port" --tier "$tier" --batch "$BATCH" \
        --concurrency "$CONCURRENCY" --requests "$REQUESTS" --duration-secs 600 \
        --request-timeout-secs 120 --json >"$dir/load.json"
    callgrind_control --instr=off "$pid" >/dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    pid=""
    ir=$(awk '/^totals:/ { print $2; exit }' "$OUT/callgrind.$tier.out")
    # Per event committed, as the collector answered it (a non-2xx answer
    # or a duplicate would otherwise flatter the figure).
    events=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["accepted"])' "$dir/load.json")
    printf '| %s | %s | %s | %s | %s |\n' "$tier" "$REQUESTS" "$events" "$ir" "$((ir / (events > 0 ? events : 1)))"
done
