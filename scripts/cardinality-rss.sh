#!/usr/bin/env bash
# Resident memory and stored strings after 100,000 made-up prop values: starts
# a real collector (open mode, no rate limit) on 127.0.0.1, sends 100 requests
# of 1,000 events over HTTP, each event with a value never sent before, then
# prints the process's resident memory (VmRSS, and its peak VmHWM) and the
# number of dictionary strings in its SQLite database.
#
#   scripts/cardinality-rss.sh [path/to/telemetry-collector]
#
# The figures go into docs/benchmarks.md (cardinality caps).
set -euo pipefail
bin=${1:-target/release/telemetry-collector}
dir=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
cat >"$dir/collector.toml" <<TOML
db = "$dir/telemetry.db"
admin_token = "rss-measurement-admin-token-0123456789"
[rate_limit]
requests_per_minute = 0
TOML
"$bin" serve --listen 127.0.0.1:0 --config "$dir/collector.toml" >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 100); do
    grep -q 'listening on' "$dir/out" 2>/dev/null && break
    sleep 0.1
done
url=$(sed -n 's/^telemetry-collector listening on //p' "$dir/out" | head -n1)
rss() { awk -v k="$1" '$1 == k":" { print $2 / 1024 " MiB" }' "/proc/$pid/status"; }
echo "before: VmRSS $(rss VmRSS)"
python3 - "$url" <<'PY'
import datetime, json, sys, urllib.request, uuid
url = sys.argv[1] + "/v1/ingest"
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
for r in range(100):
    events = [
        {"id": str(uuid.uuid4()), "name": "command", "timestamp": now,
         "props": {"choice": f"v{r * 1000 + i}"}}
        for i in range(1000)
    ]
    body = json.dumps({
        "project": "rss", "tier": "anonymous", "install_id": str(uuid.uuid4()),
        "context": {"tool_version": f"1.0.{r}", "os": "linux", "arch": "x86_64", "toolkit_version": "0.1.0"},
        "events": events,
    }).encode()
    request = urllib.request.Request(url, body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert json.load(answer)["accepted"] == 1000
print("sent 100,000 distinct values in 100 requests")
PY
echo "after: VmRSS $(rss VmRSS), peak VmHWM $(rss VmHWM)"
python3 -c 'import sqlite3, sys; print("strings stored:", sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM strings").fetchone()[0])' "$dir/telemetry.db"
