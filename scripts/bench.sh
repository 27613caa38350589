#!/usr/bin/env bash
# The benchmark suite of issue 8 in one command: builds everything in release,
# then measures
#   1. binary size: baseline vs the one-line CLIs of the peers and of this
#      toolkit (toolkit-cli) vs demo-cli with/without telemetry;
#   2. the in-process cost of one `track()` call (criterion, telemetry-client's
#      `track` bench) at aggregate and anonymous;
#   3. wall time added per invocation: the one-line CLIs (posthog-rs,
#      rtb-telemetry, telemetry-client at aggregate and anonymous, and at
#      anonymous with an upload every run) against the baseline CLI, and
#      demo-cli at each tier against itself with telemetry off, with the
#      endpoint up, refusing and blackholed, plus how long one invocation
#      keeps any process alive;
#   4. collector ingest throughput with the loadgen load generator, batches of
#      1/10/100 at each tier, and the collector's peak RSS, against the
#      raw-SQLite baseline (rawsqlite) in the same run;
#   5. the crash drill: the collector SIGKILLed 10 times under load and
#      restarted, then every event checked to be counted exactly once.
#   6. stats latency with statsbench: a database loaded through the
#      collector's store with 10M anonymous events from 1M installs, the stats
#      of a 90-day window (median, p90, each SQL part and its query plan)
#      against the naive GROUP BY over raw events.
#   7. the fleet drill (issue 13), long form: 250 installs as real client
#      processes over 14 simulated days behind a fault-injecting proxy
#      (down, refuse, blackhole, 500, 503 and 429 with Retry-After, 413,
#      slow, reset mid-response), then what the collector holds against what
#      each process recorded and each user chose.
#   8. ingest on PostgreSQL (issue 20; only when BENCH_SECTIONS names
#      `pgingest`): loadgen with batches of 100 at `anonymous` against one
#      collector on a PostgreSQL database, then two collectors sharing one,
#      against the same rows written directly through tokio-postgres
#      (rawpostgres), with the SQLite collector's figure in the same run.
# It prints one results table (also written to $BENCH_OUT/results.md).
#
# Usage: scripts/bench.sh [--no-build]
#
# Everything runs on loopback, and every loop is bounded in count and time, so
# the whole suite (builds cached) finishes in under 15 minutes on 2 cores:
# 863 s measured on an idle machine, 412 s of it loading the stats-latency
# step's 10M-event database, which is cached for later runs (about 7 minutes).
# The fleet drill (step 7) adds about 4 to 6 minutes (379 s measured, debug build, load average about 20).
# Parts whose binaries do not exist yet are skipped with the reason printed.
#
# Knobs (environment variables, all optional):
#   BENCH_RUNS            A/B pairs per overhead cell                  [200]
#   BENCH_HOOK_RUNS       A/B pairs per cell of the hook-cli host      [1000]
#   BENCH_MAX_SECS        time limit of one fast overhead cell, s      [15]
#   BENCH_SLOW_MAX_SECS   time limit of one blackholed peer cell, s    [30]
#   BENCH_LOAD_REQUESTS   request cap of one ingest cell               [20000]
#   BENCH_LOAD_SECS       time limit of one ingest cell, s             [10]
#   BENCH_CONCURRENCY     concurrent connections of the load generator [8]
#   BENCH_WIDE_CONCURRENCY  connections of the extra single-event cells [32]
#   BENCH_RAW_EVENTS      event cap of one raw-SQLite baseline cell    [2000000]
#   BENCH_TRACK_ARGS      criterion arguments of the `track` bench
#                                   ["--warm-up-time 1 --measurement-time 3"]
#   BENCH_STATS_EVENTS    events statsbench loads                      [10000000]
#   BENCH_STATS_INSTALLS  installs statsbench loads                    [1000000]
#   BENCH_STATS_LOAD_SECS time limit of the statsbench load, s         [600]
#   BENCH_STATS_RUNS      timed runs of each stats query               [21]
#   BENCH_STATS_DB        the statsbench database, kept between runs and reused
#                         while it holds the same finished load (the data ends on
#                         a fixed day for that reason); the first load of 10M
#                         events takes far longer than the rest of the suite
#                         [$CARGO_TARGET_DIR/bench-cache/statsbench-<events>-<installs>.db]
#   BENCH_OUT             where results go      [target/bench-results/<time>]
#   DEMO_CLI              demo-cli with telemetry [$CARGO_TARGET_DIR/release/demo-cli]
#   DEMO_CLI_NO_TELEMETRY demo-cli built without the client, for the size row
#   DEMO_CLI_CONSENT      the demo-cli words that set a level, the tier appended
#                                                           ["telemetry enable"]
#   DEMO_CLI_CONSENT_FULL extra words to confirm `full` without a terminal
#                 ["--yes --identity email=bench@example.invalid --identity organization=bench"]
#   COLLECTOR             the collector binary [$CARGO_TARGET_DIR/release/telemetry-collector]
#   BENCH_CRASH_KILLS     SIGKILLs in the crash drill                  [10]
#   BENCH_FLEET_ARGS      extra arguments of the fleet drill           [""]
#   BENCH_SECTIONS        the parts to run, comma-separated, from sizes, track,
#                         peers, hook, demo, ingest, crash, stats, fleet,
#                         pgingest                 [all of them but pgingest]
#   BENCH_POSTGRES        the database the `pgingest` section writes into, a
#                         fresh schema per cell (needs psql to make them)
#                             [postgres://postgres@127.0.0.1:5432/ingestbench]
#   CONSENT_TOOL          telemetry-consent, sets toolkit-cli's level
#                                   [$CARGO_TARGET_DIR/release/telemetry-consent]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PEERS_DIR="$ROOT/benches/peers"
PEERS_BIN="$PEERS_DIR/target/release"
RELEASE_BIN="$CARGO_TARGET_DIR/release"

RUNS="${BENCH_RUNS:-200}"
HOOK_RUNS="${BENCH_HOOK_RUNS:-1000}"
MAX_SECS="${BENCH_MAX_SECS:-15}"
SLOW_MAX_SECS="${BENCH_SLOW_MAX_SECS:-30}"
LOAD_REQUESTS="${BENCH_LOAD_REQUESTS:-20000}"
LOAD_SECS="${BENCH_LOAD_SECS:-10}"
CONCURRENCY="${BENCH_CONCURRENCY:-8}"
WIDE_CONCURRENCY="${BENCH_WIDE_CONCURRENCY:-32}"
RAW_EVENTS="${BENCH_RAW_EVENTS:-2000000}"
TRACK_ARGS="${BENCH_TRACK_ARGS:---warm-up-time 1 --measurement-time 3}"
STATS_EVENTS="${BENCH_STATS_EVENTS:-10000000}"
STATS_INSTALLS="${BENCH_STATS_INSTALLS:-1000000}"
STATS_LOAD_SECS="${BENCH_STATS_LOAD_SECS:-600}"
STATS_RUNS="${BENCH_STATS_RUNS:-21}"
STATS_DB="${BENCH_STATS_DB:-$CARGO_TARGET_DIR/bench-cache/statsbench-$STATS_EVENTS-$STATS_INSTALLS.db}"
# The last day of the statsbench data: fixed, so a cached load stays valid.
STATS_END="2026-11-20"
OUT="${BENCH_OUT:-$CARGO_TARGET_DIR/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}"
DEMO_CLI="${DEMO_CLI:-$RELEASE_BIN/demo-cli}"
DEMO_CLI_NO_TELEMETRY="${DEMO_CLI_NO_TELEMETRY:-}"
DEMO_CLI_CONSENT="${DEMO_CLI_CONSENT:-telemetry enable}"
DEMO_CLI_CONSENT_FULL="${DEMO_CLI_CONSENT_FULL:---yes --identity email=bench@example.invalid --identity organization=bench}"
COLLECTOR="${COLLECTOR:-$RELEASE_BIN/telemetry-collector}"
CONSENT_TOOL="${CONSENT_TOOL:-$RELEASE_BIN/telemetry-consent}"
OVERHEAD="$RELEASE_BIN/overhead"
LOADGEN="$RELEASE_BIN/loadgen"
RAWSQLITE="$RELEASE_BIN/rawsqlite"
RAWPOSTGRES="$RELEASE_BIN/rawpostgres"
BENCH_POSTGRES="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/ingestbench}"
CRASHDRILL="$RELEASE_BIN/crashdrill"
CRASH_KILLS="${BENCH_CRASH_KILLS:-10}"
STATSBENCH="$RELEASE_BIN/statsbench"
FLEETDRILL="$RELEASE_BIN/fleetdrill"
FLEET_ARGS="${BENCH_FLEET_ARGS:-}"

mkdir -p "$OUT"
RESULTS="$OUT/results.md"
: >"$RESULTS"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")"
COLLECTOR_PID=""
# The second collector of the PostgreSQL cells, when one runs.
SECOND_PID=""

cleanup() {
    # Only the collectors this script started, by their pids.
    local pid
    for pid in "$COLLECTOR_PID" "$SECOND_PID"; do
        if [[ -n "$pid" ]]; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '==> %s\n' "$*" >&2; }
out() { printf '%s\n' "$*" | tee -a "$RESULTS"; }
skip() { out "_skipped: $*_"; out ""; }

machine_info() {
    out "## Machine"
    out ""
    out '```'
    out "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    out "nproc: $(nproc)"
    lscpu | head -n 15 | tee -a "$RESULTS"
    free -h | tee -a "$RESULTS"
    out "kernel: $(uname -sr)"
    out "rustc: $(rustc --version)"
    out '```'
    out ""
}

build_all() {
    log "building loadgen, collector and demo-cli (release) into $CARGO_TARGET_DIR"
    # `drill`: the fleet drill and its host, which need the client's test
    # knobs; a build of its own, so they never reach demo-cli's binary.
    cargo build --release --manifest-path "$ROOT/Cargo.toml" -p loadgen --features drill
    # The collector and demo-cli are built too when they compile; their bench
    # sections check for the binaries and say why they skip.
    cargo build --release --manifest-path "$ROOT/Cargo.toml" -p telemetry-collector \
        || log "telemetry-collector did not build; its sections will skip"
    cargo build --release --manifest-path "$ROOT/Cargo.toml" -p demo-cli \
        || log "demo-cli did not build; its sections will skip"
    cargo build --release --manifest-path "$ROOT/Cargo.toml" -p telemetry-client \
        --bin telemetry-consent \
        || log "telemetry-consent did not build; the toolkit-cli rows will skip"
    cargo bench --no-run --manifest-path "$ROOT/Cargo.toml" -p telemetry-client --bench track \
        || log "the track bench did not build; its section will skip"
    log "building the peer CLIs (release, stripped) in $PEERS_DIR (a separate workspace)"
    # The peers use rustls, so no system OpenSSL is needed. Their target dir is
    # theirs alone (gitignored), whatever CARGO_TARGET_DIR says.
    CARGO_TARGET_DIR="$PEERS_DIR/target" \
        cargo build --release --manifest-path "$PEERS_DIR/Cargo.toml"
}

# binary_sizes NAME=PATH...: the stripped size of each binary and what it adds
# to the first one. Each is copied and stripped (strip --strip-all), so
# binaries built without `strip = true` compare fairly.
binary_sizes() {
    out "## Binary size (stripped release)"
    out ""
    out "| binary | bytes | MiB | added vs $(printf '%s' "${1%%=*}") |"
    out "|---|---|---|---|"
    local first="" entry name path copy size
    for entry in "$@"; do
        name="${entry%%=*}"
        path="${entry#*=}"
        if [[ ! -x "$path" ]]; then
            out "| $name | - | - | not built ($path) |"
            continue
        fi
        copy="$WORK/size-$name"
        cp "$path" "$copy"
        strip --strip-all "$copy" 2>/dev/null || true
        size=$(stat -c %s "$copy")
        [[ -z "$first" ]] && first="$size"
        out "$(awk -v n="$name" -v s="$size" -v f="$first" \
            'BEGIN { printf "| %s | %d | %.2f | %+.2f MiB |", n, s, s / 1048576, (s - f) / 1048576 }')"
    done
    out ""
}

# overhead LABEL MODE MAX_SECS WARMUP LINGER_LIMIT -- overhead-args...: one row.
overhead_row() {
    local label="$1" mode="$2" max_secs="$3" warmup="$4" linger_limit="$5"
    shift 6
    log "overhead: $label, endpoint $mode"
    # The harness bounds itself; `timeout` is a last resort if it ever did not.
    local hard=$((max_secs * 3 + linger_limit * 2 + 120))
    timeout "$hard" "$OVERHEAD" --endpoint "$mode" --runs "$RUNS" --max-secs "$max_secs" \
        --warmup "$warmup" --run-timeout-secs 60 --hold-secs 90 \
        --linger-runs 1 --linger-limit-secs "$linger_limit" \
        --label "$label" --row "$@" | tee -a "$RESULTS" \
        || out "| $label | $mode | failed or timed out (exit $?) |"
}

# toolkit_cli_home NAME TIER: an isolated HOME where the user set
# toolkit-cli's level to TIER with telemetry-consent, as a user would. Prints
# the HOME.
toolkit_cli_home() {
    local tier="$2" home="$WORK/toolkit-home-$1"
    mkdir -p "$home/.config" "$home/.local/state" "$home/.local/share" "$home/.cache"
    env -u DO_NOT_TRACK HOME="$home" XDG_CONFIG_HOME="$home/.config" \
        XDG_STATE_HOME="$home/.local/state" XDG_DATA_HOME="$home/.local/share" \
        XDG_CACHE_HOME="$home/.cache" \
        "$CONSENT_TOOL" set toolkit-cli "$tier" </dev/null >"$WORK/toolkit-consent-$tier.log" 2>&1 \
        || { log "setting toolkit-cli consent $tier failed: $(cat "$WORK/toolkit-consent-$tier.log")"; return 1; }
    printf '%s' "$home"
}

overhead_peers() {
    out "## Wall time added per invocation: one-line CLIs vs the baseline CLI"
    out ""
    out "A = one-line CLI sending one event, B = baseline-cli (no telemetry); Δ = A − B per pair, median."
    out "\`stub\` is a loopback HTTP server answering 200 to every request (the same endpoint for every row)."
    out "toolkit-cli is telemetry-client at the tier its user set with telemetry-consent; it sends from its"
    out "detached uploader, started at most once per upload interval: the default hour, as in a real host,"
    out "or zero in the \"upload every run\" row (every run with data starts it, as the peers send every run)."
    out ""
    local baseline="$PEERS_BIN/baseline-cli" mode max warmup row label tier interval home settle
    if [[ ! -x "$baseline" ]]; then
        skip "baseline-cli not built in $PEERS_BIN"
        return
    fi
    local peers=1 toolkit_rows=()
    if [[ ! -x "$PEERS_BIN/posthog-cli" || ! -x "$PEERS_BIN/rtb-cli" ]]; then
        peers=0
        out "_posthog-cli or rtb-cli not built in $PEERS_BIN: their rows are skipped_"
    fi
    if [[ ! -x "$PEERS_BIN/toolkit-cli" || ! -x "$CONSENT_TOOL" ]]; then
        out "_toolkit-cli ($PEERS_BIN) or telemetry-consent ($CONSENT_TOOL) not built: its rows are skipped_"
    else
        # label|tier|upload interval in seconds ("" = the client's default).
        # One HOME per row for every endpoint mode: its state carries over
        # between cells, as on a user's machine.
        for row in "aggregate|aggregate|" "anonymous|anonymous|" "anonymous, upload every run|anonymous|0" \
            "anonymous, upload every run, settled|anonymous|0|settle"; do
            IFS='|' read -r label tier interval settle <<<"$row"
            if home="$(toolkit_cli_home "${#toolkit_rows[@]}" "$tier")"; then
                toolkit_rows+=("$label|$tier|$interval|$home|$settle")
            else
                out "_telemetry-client $label: consent could not be set; see the log above_"
            fi
        done
    fi
    "$OVERHEAD" --header | tee -a "$RESULTS"
    local entry env e
    for mode in stub refused blackhole blackhole-noaccept; do
        if [[ $peers -eq 1 ]]; then
            # Blackholed peers take their full request timeout per run (tens of
            # seconds), so those cells get a separate time limit and no warm-up.
            if [[ "$mode" == blackhole* ]]; then max="$SLOW_MAX_SECS" warmup=0; else max="$MAX_SECS" warmup=3; fi
            overhead_row "posthog-rs" "$mode" "$max" "$warmup" 60 -- \
                --a "$PEERS_BIN/posthog-cli {endpoint}" --b "$baseline"
            overhead_row "rtb-telemetry" "$mode" "$max" "$warmup" 60 -- \
                --a "$PEERS_BIN/rtb-cli {endpoint}/v1/events" --b "$baseline"
        fi
        # toolkit-cli never waits on the network, so every cell gets the fast
        # limits; its uploader may linger up to the client's request timeout.
        for entry in "${toolkit_rows[@]}"; do
            IFS='|' read -r label tier interval home settle <<<"$entry"
            # The endpoint goes through the client's own variable, which the
            # uploader inherits; an empty DO_NOT_TRACK keeps a caller's from
            # silently turning the row into "telemetry off".
            env=(HOME="$home" XDG_CONFIG_HOME="$home/.config" XDG_STATE_HOME="$home/.local/state"
                XDG_DATA_HOME="$home/.local/share" XDG_CACHE_HOME="$home/.cache"
                "TOOLKIT_CLI_TELEMETRY_ENDPOINT={endpoint}" DO_NOT_TRACK=)
            [[ -n "$interval" ]] && env+=("BENCH_UPLOAD_INTERVAL_SECS=$interval")
            local args=(--a "$PEERS_BIN/toolkit-cli" --b "$baseline")
            for e in "${env[@]}"; do args+=(--a-env "$e"); done
            [[ -n "$settle" ]] && args+=(--settle-secs 10)
            overhead_row "telemetry-client $label" "$mode" "$MAX_SECS" 3 60 -- "${args[@]}"
        done
    done
    out ""
}

# track_cost: telemetry-client's criterion bench of one `track()` call, with
# bounded warm-up and measurement ($TRACK_ARGS); the estimates are read from
# criterion's JSON files, which live with the results.
track_cost() {
    out "## track() cost in process (criterion, telemetry-client --bench track)"
    out ""
    out "Per \`track\` call with two props on a handle at the tier (runs of 200 calls per handle);"
    out "\`persist_10\` is one spool write of 10 recorded events, once per process. Criterion args: \`$TRACK_ARGS\`."
    out ""
    local home="$OUT/criterion" log="$WORK/track-bench.log"
    # Built first (a no-op after build_all), so the time limit below bounds
    # the measurement, not a compilation.
    if ! cargo bench --no-run --manifest-path "$ROOT/Cargo.toml" -p telemetry-client \
        --bench track >"$log" 2>&1; then
        skip "the track bench did not build: $(tail -n 3 "$log" | tr '\n' ' ')"
        return
    fi
    log "criterion: telemetry-client --bench track ($TRACK_ARGS)"
    # shellcheck disable=SC2086 # TRACK_ARGS is words on purpose
    if ! CRITERION_HOME="$home" timeout 300 cargo bench --manifest-path "$ROOT/Cargo.toml" \
        -p telemetry-client --bench track -- $TRACK_ARGS >"$log" 2>&1; then
        skip "the track bench failed or timed out: $(tail -n 3 "$log" | tr '\n' ' ')"
        return
    fi
    out "| benchmark | median | mean | mean 95% CI | per |"
    out "|---|---|---|---|---|"
    local name
    for name in aggregate anonymous persist_10_aggregate persist_10_anonymous; do
        python3 - "$home/track/$name/new/estimates.json" "$name" <<'PY' | tee -a "$RESULTS"
import json, sys
path, name = sys.argv[1], sys.argv[2]
def fmt(ns):
    return f"{ns:.1f} ns" if ns < 1000 else f"{ns / 1000:.2f} µs"
try:
    e = json.load(open(path))
except OSError:
    print(f"| track/{name} | - | - | - | no estimate at {path} |")
    sys.exit(0)
m, md = e["mean"], e["median"]
ci = m["confidence_interval"]
per = "persist (10 events)" if name.startswith("persist") else "track call"
print(f"| track/{name} | {fmt(md['point_estimate'])} | {fmt(m['point_estimate'])} "
      f"| {fmt(ci['lower_bound'])} – {fmt(ci['upper_bound'])} | {per} |")
PY
    done
    out ""
}

# demo_cli_home TIER: an isolated HOME with the user's consent at TIER, made by
# demo-cli itself ($DEMO_CLI_CONSENT TIER). Prints the HOME.
demo_cli_home() {
    local tier="$1" home="$WORK/home-$1" extra=""
    # Without a terminal, `full` needs an explicit confirmation and identity.
    [[ "$tier" == full ]] && extra="$DEMO_CLI_CONSENT_FULL"
    mkdir -p "$home/.config" "$home/.local/state" "$home/.local/share" "$home/.cache"
    # shellcheck disable=SC2086 # DEMO_CLI_CONSENT and $extra are words on purpose
    env -u DO_NOT_TRACK HOME="$home" XDG_CONFIG_HOME="$home/.config" \
        XDG_STATE_HOME="$home/.local/state" XDG_DATA_HOME="$home/.local/share" \
        XDG_CACHE_HOME="$home/.cache" \
        "$DEMO_CLI" $DEMO_CLI_CONSENT "$tier" $extra </dev/null >"$WORK/consent-$tier.log" 2>&1 \
        || { log "setting consent $tier failed: $(cat "$WORK/consent-$tier.log")"; return 1; }
    printf '%s' "$home"
}

# hook_host: the realistic host of issue 17 (benches/peers/hook-cli, a
# shell-hook CLI whose build script writes completions), built without the
# client and with each transport: sizes, dependency counts, then `add`
# (the command the hook runs on every `cd`) against the build without the
# client, telemetry off, aggregate and anonymous in steady state, and
# anonymous with an upload due on every run, in every endpoint mode.
hook_host() {
    out "## The realistic host: hook-cli (a shell-hook CLI), with and without the client"
    out ""
    local transports=(ureq curl) t bin
    local plain="$WORK/hook-cli-plain"
    log "building hook-cli without the client and with each transport (release)"
    if ! CARGO_TARGET_DIR="$PEERS_DIR/target" cargo build --release --quiet \
        --manifest-path "$PEERS_DIR/Cargo.toml" -p hook-cli; then
        skip "hook-cli did not build"
        return
    fi
    cp "$PEERS_BIN/hook-cli" "$plain"
    for t in "${transports[@]}"; do
        CARGO_TARGET_DIR="$PEERS_DIR/target" cargo build --release --quiet \
            --manifest-path "$PEERS_DIR/Cargo.toml" -p hook-cli --features "$t" \
            || { skip "hook-cli --features $t did not build"; return; }
        cp "$PEERS_BIN/hook-cli" "$WORK/hook-cli-$t"
    done
    local sizes=("without the client=$plain")
    for t in "${transports[@]}"; do sizes+=("with the client, $t=$WORK/hook-cli-$t"); done
    binary_sizes "${sizes[@]}"
    out "| build | normal dependencies (distinct crates, \`cargo tree -e normal\`) |"
    out "|---|---|"
    local features
    for features in "" "${transports[@]}"; do
        local args=(tree --quiet --locked -p hook-cli -e normal --prefix none --no-dedupe
            --manifest-path "$PEERS_DIR/Cargo.toml")
        [[ -n "$features" ]] && args+=(--features "$features")
        out "| ${features:-without the client} | $(cargo "${args[@]}" | sort -u | wc -l) |"
    done
    out ""
    if [[ ! -x "$CONSENT_TOOL" ]]; then
        skip "telemetry-consent not built ($CONSENT_TOOL): the overhead cells need it"
        return
    fi
    out "A = hook-cli with the client, B = hook-cli without it; both run \`add /tmp/project\` in the same HOME."
    out "Δ = A − B per pair; $HOOK_RUNS pairs per cell."
    out ""
    local saved_runs="$RUNS"
    RUNS="$HOOK_RUNS"
    "$OVERHEAD" --header | tee -a "$RESULTS"
    local row label tier interval settle home n=0 mode e env
    for t in "${transports[@]}"; do
        bin="$WORK/hook-cli-$t"
        # "upload due" runs pairs back to back, so every run's uploader
        # competes with the runs after it (the stress case); "settled" waits
        # for it between pairs, as a real machine has an interval between
        # uploads, so it times what a due run costs the host itself.
        for row in "off||" "aggregate|aggregate|" "anonymous|anonymous|" "upload due every run|anonymous|0" \
            "upload due every run, settled|anonymous|0|settle"; do
            IFS='|' read -r label tier interval settle <<<"$row"
            home="$WORK/hook-home-$n"
            n=$((n + 1))
            mkdir -p "$home/.config" "$home/.local/state" "$home/.local/share" "$home/.cache"
            if [[ -n "$tier" ]]; then
                env -u DO_NOT_TRACK HOME="$home" XDG_CONFIG_HOME="$home/.config" \
                    XDG_STATE_HOME="$home/.local/state" "$CONSENT_TOOL" set hook-cli "$tier" \
                    </dev/null >/dev/null 2>&1 || { out "_$t $label: consent could not be set_"; continue; }
            fi
            env=(HOME="$home" XDG_CONFIG_HOME="$home/.config" XDG_STATE_HOME="$home/.local/state"
                XDG_DATA_HOME="$home/.local/share" XDG_CACHE_HOME="$home/.cache" DO_NOT_TRACK=
                "HOOK_CLI_TELEMETRY_ENDPOINT={endpoint}")
            [[ -n "$interval" ]] && env+=("BENCH_UPLOAD_INTERVAL_SECS=$interval")
            local args=(--a "$bin add /tmp/project" --b "$plain add /tmp/project")
            for e in "${env[@]}"; do args+=(--a-env "$e" --b-env "$e"); done
            [[ -n "$settle" ]] && args+=(--settle-secs 10)
            for mode in stub refused blackhole; do
                overhead_row "hook-cli $t, $label" "$mode" "$MAX_SECS" 3 15 -- "${args[@]}"
            done
        done
    done
    RUNS="$saved_runs"
    out ""
}

# overhead_demo_cli COLLECTOR_URL: demo-cli greet at each tier vs the same
# binary with telemetry off (DEMO_CLI_TELEMETRY=off), in every endpoint mode.
overhead_demo_cli() {
    local collector_url="$1"
    out "## Wall time added per invocation: demo-cli greet, telemetry on vs off"
    out ""
    out "A = \`demo-cli greet\` at the tier, B = the same binary with DEMO_CLI_TELEMETRY=off; same HOME."
    out ""
    if [[ ! -x "$DEMO_CLI" ]]; then
        skip "demo-cli not found at $DEMO_CLI (set DEMO_CLI)"
        return
    fi
    local modes=(refused blackhole blackhole-noaccept)
    if [[ -n "$collector_url" ]]; then
        modes=("up=$collector_url" "${modes[@]}")
    else
        out "_no collector running: the \`up\` column is skipped_"
    fi
    "$OVERHEAD" --header | tee -a "$RESULTS"
    local tier home mode env
    for tier in aggregate anonymous full; do
        if ! home="$(demo_cli_home "$tier")"; then
            out "| demo-cli $tier | - | consent could not be set; see the log above |"
            continue
        fi
        env=(HOME="$home" XDG_CONFIG_HOME="$home/.config" XDG_STATE_HOME="$home/.local/state"
            XDG_DATA_HOME="$home/.local/share" XDG_CACHE_HOME="$home/.cache"
            "DEMO_CLI_TELEMETRY_ENDPOINT={endpoint}")
        for mode in "${modes[@]}"; do
            local args=(--a "$DEMO_CLI greet" --b "$DEMO_CLI greet")
            for e in "${env[@]}"; do args+=(--a-env "$e" --b-env "$e"); done
            args+=(--b-env DEMO_CLI_TELEMETRY=off)
            overhead_row "demo-cli $tier" "$mode" "$MAX_SECS" 3 15 -- "${args[@]}"
        done
    done
    out ""
}

# collector_start: starts $COLLECTOR in open mode on a free loopback port with
# a fresh database and the rate limit off; sets COLLECTOR_URL and COLLECTOR_PID
# (globals, so it must not run in a subshell).
COLLECTOR_URL=""
# collector_start [DB KEY]: a collector on a fresh SQLite file, or on the
# database URL DB with the pseudonym key file KEY (shared by the collectors
# of one PostgreSQL database).
collector_start() {
    COLLECTOR_URL=""
    local port dir db key_line=""
    dir="$(mktemp -d "$WORK/collector.XXXXXX")"
    db="${1:-$dir/telemetry.db}"
    [[ -n "${2:-}" ]] && key_line="pseudonym_key_file = \"$2\""
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    cat >"$dir/config.toml" <<EOF
listen = "127.0.0.1:$port"
db = "$db"
admin_token_file = "$dir/admin-token"
$key_line
[rate_limit]
requests_per_minute = 0
EOF
    TELEMETRY_COLLECTOR_CONFIG="$dir/config.toml" "$COLLECTOR" serve >"$dir/collector.log" 2>&1 &
    COLLECTOR_PID=$!
    local i
    for i in $(seq 1 100); do
        if curl -fsS --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
            COLLECTOR_URL="http://127.0.0.1:$port"
            log "collector up at $COLLECTOR_URL (pid $COLLECTOR_PID)"
            return 0
        fi
        kill -0 "$COLLECTOR_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "collector did not become healthy: $(tail -n 5 "$dir/collector.log")"
    collector_stop
    return 1
}

collector_stop() {
    if [[ -n "$COLLECTOR_PID" ]]; then
        kill -TERM "$COLLECTOR_PID" 2>/dev/null || true
        wait "$COLLECTOR_PID" 2>/dev/null || true
        COLLECTOR_PID=""
    fi
}

# collector_peak_rss_mib: the running collector's peak resident set (VmHWM).
collector_peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$COLLECTOR_PID/status" 2>/dev/null || printf '?'
}

# ingest_throughput URL: loadgen at every tier and batch size against URL.
ingest_throughput() {
    local url="$1"
    out "## Collector ingest throughput (loadgen, $CONCURRENCY connections, loopback)"
    out ""
    out "Each cell: at most $LOAD_REQUESTS requests or ${LOAD_SECS}s. Open mode, rate limit off; one fresh database for all cells, in this order."
    out ""
    "$LOADGEN" --header | tee -a "$RESULTS"
    local tier batch
    for tier in aggregate anonymous full; do
        for batch in 1 10 100; do
            log "ingest: $tier, batch $batch"
            timeout $((LOAD_SECS + 60)) "$LOADGEN" --url "$url" --tier "$tier" \
                --batch "$batch" --concurrency "$CONCURRENCY" --requests "$LOAD_REQUESTS" \
                --duration-secs "$LOAD_SECS" --project loadgen --row | tee -a "$RESULTS" \
                || out "| $tier | $batch | loadgen failed or timed out (exit $?) |"
        done
    done
    # Single events from many clients at once: the group commit then holds
    # more requests per fsync, as on a collector serving many CLIs.
    for tier in aggregate anonymous full; do
        log "ingest: $tier, batch 1, $WIDE_CONCURRENCY connections"
        timeout $((LOAD_SECS + 60)) "$LOADGEN" --url "$url" --tier "$tier" \
            --batch 1 --concurrency "$WIDE_CONCURRENCY" --requests "$LOAD_REQUESTS" \
            --duration-secs "$LOAD_SECS" --project loadgen --row | tee -a "$RESULTS" \
            || out "| $tier | 1 | loadgen failed or timed out (exit $?) |"
    done
    out ""
    out "The last three rows ran with $WIDE_CONCURRENCY connections."
    out ""
    out "Collector peak RSS (VmHWM) after the ingest runs: $(collector_peak_rss_mib) MiB"
    out ""
}

# raw_baseline: the collector's rows written straight through rusqlite with its
# schema and durability (rawsqlite), in one-request and bulk transactions.
raw_baseline() {
    out "## Raw SQLite baseline (rawsqlite: the same rows, the collector's schema, WAL, synchronous=FULL)"
    out ""
    if [[ ! -x "$RAWSQLITE" ]]; then
        skip "rawsqlite not built"
        return
    fi
    out "Each cell: batches of 100 events, at most $RAW_EVENTS events or ${LOAD_SECS}s, a fresh database."
    out ""
    "$RAWSQLITE" --header | tee -a "$RESULTS"
    local tier per_txn
    for tier in aggregate anonymous full; do
        for per_txn in 100 10000; do
            log "raw sqlite: $tier, $per_txn events per transaction"
            timeout $((LOAD_SECS + 60)) "$RAWSQLITE" --tier "$tier" --batch 100 \
                --per-txn "$per_txn" --events "$RAW_EVENTS" --duration-secs "$LOAD_SECS" \
                --dir "$WORK" --row | tee -a "$RESULTS" \
                || out "| $tier | $per_txn | rawsqlite failed or timed out (exit $?) |"
        done
    done
    out ""
}

# crash_drill: kill -9 the collector $CRASH_KILLS times under load, restart it
# on the same database each time, and check every event is counted once.
crash_drill() {
    out "## Crash drill: kill -9 under load, restart, count"
    out ""
    if [[ ! -x "$CRASHDRILL" || ! -x "$COLLECTOR" ]]; then
        skip "crashdrill ($CRASHDRILL) or the collector ($COLLECTOR) not built"
        return
    fi
    out "The release collector on a fresh database (open mode, rate limit off); 4 writers, half \
\`anonymous\` batches of 10 events with unique event ids, half \`aggregate\` batches of 10 \
counters under unique report ids. Each round ends with SIGKILL after a random 50–1000 \
acknowledged requests or 3 s; the collector restarts on the same database (its stats must \
already count every acknowledged event), writers resend what was cut off. After the last \
kill, what was never acknowledged is resent until it is; then the stats API must count \
exactly the distinct events sent, and a replay of every batch must store nothing."
    out ""
    log "crash drill: $CRASH_KILLS kills"
    "$CRASHDRILL" --header | tee -a "$RESULTS"
    # The drill bounds each round (3 s) itself; `timeout` is a last resort.
    timeout 120 "$CRASHDRILL" --collector "$COLLECTOR" --dir "$WORK/crashdrill" \
        --kills "$CRASH_KILLS" --row | tee -a "$RESULTS" \
        || out "| crash drill failed or timed out (exit $?); see the message above |"
    out ""
}

# fleet_drill: the long form of issue 13's fleet drill. It bounds its own
# schedule (1500 s) and every process (20 s); `timeout` is a last resort. It
# exits non-zero when a target is missed, which is reported, not fatal.
fleet_drill() {
    out "## Fleet drill: 250 installs, 14 simulated days of faults, 2 drain days (fleetdrill --long)"
    out ""
    if [[ ! -x "$FLEETDRILL" || ! -x "$RELEASE_BIN/drillhost" ]]; then
        skip "fleetdrill or drillhost not built in $RELEASE_BIN"
        return
    fi
    log "fleet drill: long form"
    # shellcheck disable=SC2086 # FLEET_ARGS is words on purpose
    timeout 2400 "$FLEETDRILL" --long --dir "$WORK/fleetdrill" $FLEET_ARGS | tee -a "$RESULTS" \
        || out "_the fleet drill missed targets, failed or timed out (exit $?); see above_"
    out ""
}

# stats_latency: statsbench at full scale, in process (no collector needed).
# The loaded database is cached in $STATS_DB; a load cut short by its time
# limit is timed once as such, then removed so the next run loads afresh.
stats_latency() {
    out "## Stats latency (statsbench: $STATS_EVENTS anonymous events, $STATS_INSTALLS installs, 90-day window)"
    out ""
    out "Loaded through the collector's store (SqliteStore::ingest, each install uploading every 7 days, 512 calls in flight), then each part timed $STATS_RUNS times after one warm-up (at most 30 s per part, 8 s per naive query beyond its first run). The stats path is \`stats::project_stats\`, what the dashboard and \`telemetry-collector stats\` run; the naive rows compute the same numbers with GROUP BY over raw events."
    out ""
    if [[ ! -x "$STATSBENCH" ]]; then
        skip "statsbench not built at $STATSBENCH"
        return
    fi
    mkdir -p "$(dirname "$STATS_DB")"
    local record="$STATS_DB.statsbench.json"
    if [[ -e "$STATS_DB" && ! -e "$record" ]]; then
        log "stats latency: $STATS_DB has no load record (an interrupted load); removing it"
        rm -f "$STATS_DB" "$STATS_DB-wal" "$STATS_DB-shm"
    fi
    log "stats latency: $STATS_EVENTS events into $STATS_DB (reused if already loaded; load limit ${STATS_LOAD_SECS}s)"
    # The load and every timed loop bound themselves; `timeout` is a last resort.
    local hard=$((STATS_LOAD_SECS + 30 * 9 + 300))
    timeout "$hard" "$STATSBENCH" --events "$STATS_EVENTS" --installs "$STATS_INSTALLS" \
        --end "$STATS_END" --db "$STATS_DB" --accept-partial \
        --max-load-secs "$STATS_LOAD_SECS" --runs "$STATS_RUNS" \
        --max-stats-secs 30 --max-naive-secs 8 --row | tee -a "$RESULTS" \
        || out "_statsbench failed or timed out (exit $?)_"
    if grep -q '"complete": false' "$record" 2>/dev/null; then
        log "stats latency: the load was cut short; removing it so the next run loads afresh"
        rm -f "$STATS_DB" "$STATS_DB-wal" "$STATS_DB-shm" "$record"
    fi
    out ""
}

# pg_schema NAME: a fresh, empty schema NAME in $BENCH_POSTGRES; prints the
# URL whose connections use it.
pg_schema() {
    psql -q -v ON_ERROR_STOP=1 "$BENCH_POSTGRES" \
        -c "DROP SCHEMA IF EXISTS $1 CASCADE" -c "CREATE SCHEMA $1" >/dev/null || return 1
    local sep='?'
    [[ "$BENCH_POSTGRES" == *'?'* ]] && sep='&'
    printf '%s%soptions=-csearch_path%%3D%s' "$BENCH_POSTGRES" "$sep" "$1"
}

# loadgen_json URL REQUESTS: one anonymous batch-100 cell, as one JSON line.
loadgen_json() {
    timeout $((LOAD_SECS + 60)) "$LOADGEN" --url "$1" --tier anonymous --batch 100 \
        --concurrency "$CONCURRENCY" --requests "$2" --duration-secs "$LOAD_SECS" \
        --project loadgen --json
}

# pg_ingest: issue 20's ingest cells on PostgreSQL against SQLite's, one run.
pg_ingest() {
    out "## Ingest on PostgreSQL (issue 20: anonymous, batches of 100, $CONCURRENCY connections per collector)"
    out ""
    if [[ ! -x "$COLLECTOR" || ! -x "$LOADGEN" || ! -x "$RAWPOSTGRES" ]]; then
        skip "the collector, loadgen or rawpostgres is not built"
        return
    fi
    if ! psql -qAt "$BENCH_POSTGRES" -c "SELECT 1" >/dev/null 2>&1; then
        skip "no PostgreSQL database at BENCH_POSTGRES (create it first)"
        return
    fi
    out "Each cell: at most $LOAD_REQUESTS requests per collector or ${LOAD_SECS}s, a fresh database or schema; PostgreSQL at ${BENCH_POSTGRES%%\?*} ($(psql -qAt "$BENCH_POSTGRES" -c 'SHOW server_version'))."
    out ""
    out "| cell | events/s | requests/s | p50 ms | p99 ms | 2xx | non-2xx | transport errors |"
    out "|---|---|---|---|---|---|---|---|"
    local row='import json, sys
rs = [json.loads(l) for l in sys.stdin if l.strip()]
ev = sum(r["events_ok"] for r in rs); secs = max(r["elapsed_secs"] for r in rs)
req = sum(r["ok"] for r in rs)
bad = sum(sum(r["non_2xx"].values()) for r in rs)
print("| %s | %.0f | %.0f | %s | %s | %d | %d | %d |" % (sys.argv[1], ev / secs, req / secs,
      " / ".join("%.2f" % r["latency_p50_ms"] for r in rs),
      " / ".join("%.2f" % r["latency_p99_ms"] for r in rs), req, bad,
      sum(r["transport_errors"] for r in rs)))'
    log "pg ingest: SQLite, one collector"
    collector_start && loadgen_json "$COLLECTOR_URL" "$LOAD_REQUESTS" \
        | python3 -c "$row" "SQLite, one collector" | tee -a "$RESULTS"
    collector_stop
    local url key="$WORK/pg-pseudonym-key"
    log "pg ingest: PostgreSQL, one collector"
    if url="$(pg_schema pgingest_one)" && collector_start "$url" "$key"; then
        loadgen_json "$COLLECTOR_URL" "$LOAD_REQUESTS" \
            | python3 -c "$row" "PostgreSQL, one collector" | tee -a "$RESULTS"
    else
        out "| PostgreSQL, one collector | failed to start |"
    fi
    collector_stop
    log "pg ingest: PostgreSQL, two collectors on one database"
    if url="$(pg_schema pgingest_two)" && collector_start "$url" "$key"; then
        local first="$COLLECTOR_URL" first_pid="$COLLECTOR_PID"
        if collector_start "$url" "$key"; then
            SECOND_PID="$COLLECTOR_PID"
            COLLECTOR_PID="$first_pid"
            { loadgen_json "$first" "$LOAD_REQUESTS" & loadgen_json "$COLLECTOR_URL" "$LOAD_REQUESTS"; wait; } \
                | python3 -c "$row" "PostgreSQL, two collectors (events/s of both; p50 and p99 of each)" \
                | tee -a "$RESULTS"
            kill -TERM "$SECOND_PID" 2>/dev/null || true
            wait "$SECOND_PID" 2>/dev/null || true
            SECOND_PID=""
        else
            COLLECTOR_PID="$first_pid"
            out "| PostgreSQL, two collectors | the second failed to start |"
        fi
    else
        out "| PostgreSQL, two collectors | failed to start |"
    fi
    collector_stop
    out ""
    out "Direct reference (rawpostgres: the same rows through tokio-postgres, one connection, a fresh schema, one multi-row statement per table per transaction, synchronous_commit on):"
    out ""
    "$RAWPOSTGRES" --header | tee -a "$RESULTS"
    local per_txn
    for per_txn in 100 10000; do
        log "pg ingest: rawpostgres, $per_txn events per transaction"
        timeout $((LOAD_SECS + 60)) "$RAWPOSTGRES" --url "$BENCH_POSTGRES" --batch 100 \
            --per-txn "$per_txn" --events "$RAW_EVENTS" --duration-secs "$LOAD_SECS" --row \
            | tee -a "$RESULTS" || out "| anonymous | $per_txn | rawpostgres failed (exit $?) |"
    done
    psql -q "$BENCH_POSTGRES" -c "DROP SCHEMA IF EXISTS pgingest_one CASCADE" \
        -c "DROP SCHEMA IF EXISTS pgingest_two CASCADE" >/dev/null 2>&1 || true
    out ""
}

# wanted SECTION: whether BENCH_SECTIONS asks for it (all when unset).
wanted() {
    if [[ "$1" == pgingest ]]; then
        # It needs a PostgreSQL server, so it runs only when asked for.
        [[ ",${BENCH_SECTIONS:-}," == *",$1,"* ]]
        return
    fi
    [[ -z "${BENCH_SECTIONS:-}" || ",$BENCH_SECTIONS," == *",$1,"* ]]
}

main() {
    local build=1
    [[ "${1:-}" == "--no-build" ]] && build=0
    local start=$SECONDS
    [[ $build -eq 1 ]] && build_all
    log "results go to $RESULTS"
    out "# Benchmark results"
    out ""
    machine_info

    if wanted sizes; then
        local demo_sizes=()
        [[ -x "$DEMO_CLI" ]] && demo_sizes+=("demo-cli=$DEMO_CLI")
        [[ -n "$DEMO_CLI_NO_TELEMETRY" ]] && demo_sizes+=("demo-cli-no-telemetry=$DEMO_CLI_NO_TELEMETRY")
        binary_sizes "baseline-cli=$PEERS_BIN/baseline-cli" "posthog-cli=$PEERS_BIN/posthog-cli" \
            "rtb-cli=$PEERS_BIN/rtb-cli" "toolkit-cli=$PEERS_BIN/toolkit-cli" "${demo_sizes[@]}"
        [[ -z "$DEMO_CLI_NO_TELEMETRY" ]] \
            && out "_demo-cli without telemetry: set DEMO_CLI_NO_TELEMETRY to a build without the client to add its row_" && out ""
    fi

    wanted track && track_cost
    wanted peers && overhead_peers
    wanted hook && hook_host

    local url=""
    if wanted demo || wanted ingest; then
        if [[ -x "$COLLECTOR" ]]; then
            collector_start || true
            url="$COLLECTOR_URL"
        else
            out "_collector not found at $COLLECTOR (set COLLECTOR): ingest and \`up\` cells skip_"
            out ""
        fi
    fi
    wanted demo && overhead_demo_cli "$url"
    if wanted ingest; then
        if [[ -n "$url" ]]; then
            # A fresh collector, so demo-cli's uploads do not share its database.
            collector_stop
            collector_start || true
            url="$COLLECTOR_URL"
        fi
        if [[ -n "$url" ]]; then
            ingest_throughput "$url"
            collector_stop
            raw_baseline
        else
            out "## Collector ingest throughput"
            out ""
            skip "no collector running"
        fi
    elif [[ -n "$url" ]]; then
        collector_stop
    fi
    wanted crash && crash_drill
    wanted stats && stats_latency
    wanted fleet && fleet_drill
    wanted pgingest && pg_ingest
    out "Suite time: $((SECONDS - start)) s"
    log "done; results in $RESULTS"
    printf '\n' >&2
    cat "$RESULTS" >&2
}

main "$@"
