#!/usr/bin/env bash
# Generates this release's compatibility corpus: the exact bodies the real
# client (through demo-cli, in debug mode, which prints each body instead of
# sending it) produces at each tier, and its deletion requests.
#
#   tests/compat/generate.sh v0.2.0
#
# Run it once per release, for a version folder that does not exist yet, and
# commit the folder. Never edit or regenerate an old folder: the corpus
# test (tests/e2e/compat.rs) feeds every folder to the current collector, and
# an old folder is exactly what released clients still send.
set -euo pipefail

version=${1:?usage: tests/compat/generate.sh vX.Y.Z}
root=$(cd "$(dirname "$0")/../.." && pwd)
out="$root/tests/compat/$version"
if [ -e "$out" ]; then
    echo "$out exists; a release's corpus is never regenerated" >&2
    exit 1
fi
cargo build --quiet -p demo-cli --manifest-path "$root/Cargo.toml"
demo="$root/target/debug/demo-cli"
mkdir -p "$out"

# Runs demo-cli in the isolated home $home, with no terminal.
run() {
    HOME="$home" XDG_CONFIG_HOME="$home/.config" XDG_STATE_HOME="$home/.local/state" \
        XDG_DATA_HOME="$home/.local/share" XDG_CACHE_HOME="$home/.cache" \
        DEMO_CLI_TELEMETRY_ENDPOINT=http://127.0.0.1:9 \
        env -u DO_NOT_TRACK -u DEMO_CLI_TELEMETRY "$@" </dev/null
}

# Writes each body `demo-cli telemetry flush` prints in debug mode to
# $out/<name>-<n>.json.
capture() {
    local name=$1 n=0 line
    while IFS= read -r line; do
        case "$line" in
            "telemetry (debug, not sent): POST /v1/ingest "*)
                n=$((n + 1))
                printf '%s\n' "${line#telemetry (debug, not sent): POST /v1/ingest }" >"$out/$name-ingest-$n.json"
                ;;
            "telemetry (debug, not sent): POST /v1/delete "*)
                n=$((n + 1))
                printf '%s\n' "${line#telemetry (debug, not sent): POST /v1/delete }" >"$out/$name-delete-$n.json"
                ;;
        esac
    done < <(run env DEMO_CLI_TELEMETRY_DEBUG=1 "$demo" telemetry flush 2>&1)
}

for tier in aggregate anonymous full; do
    home=$(mktemp -d)
    if [ "$tier" = full ]; then
        run "$demo" telemetry enable full --yes \
            --identity email=user@example.org --identity organization=Acme >/dev/null
    else
        run "$demo" telemetry enable "$tier" --yes >/dev/null
    fi
    run "$demo" init --default-name Ada >/dev/null
    run "$demo" greet >/dev/null
    run "$demo" greet --name Ada >/dev/null
    capture "$tier"
    if [ "$tier" != aggregate ]; then
        # A reset and an opt-out each queue a deletion request.
        run "$demo" telemetry reset-id >/dev/null
        run "$demo" greet >/dev/null
        capture "$tier-after-reset"
        run "$demo" telemetry disable >/dev/null
        capture "$tier-after-disable"
    fi
    rm -rf "$home"
done
ls "$out"
