#!/usr/bin/env bash
# The stripped size each client transport adds to a host (issue 17), from
# release builds of the test host in tests/transports/ (the workspace's
# release profile plus strip = true), one feature set at a time, as a host
# crate would build it. Prints a Markdown table for docs/benchmarks.md.
#
#   scripts/transport-sizes.sh                # all rows
#   scripts/transport-sizes.sh curl reqwest   # some rows: ureq curl typed
#                                             # aws-lc-rs reqwest own-rustls
#
# Pairs: each "with the client" row is compared with the host alone built
# with the same libraries of its own (none, its own reqwest, its own rustls).
set -euo pipefail
cd "$(dirname "$0")/.."
manifest=tests/transports/Cargo.toml
target=${TRANSPORT_SIZES_TARGET:-target/transports}
out_dir=$target/sizes
mkdir -p "$out_dir"

build() { # NAME FEATURES
    local name="$1" features="$2"
    cargo build --quiet --release -p transport-host --manifest-path "$manifest" \
        --target-dir "$target" ${features:+--features "$features"}
    cp "$target/release/transport-host" "$out_dir/$name"
    stat -c %s "$out_dir/$name"
}

row() { # LABEL BASE_NAME BASE_FEATURES NAME FEATURES
    local base size
    base=$(build "$2" "$3")
    size=$(build "$4" "$5")
    awk -v l="$1" -v b="$base" -v s="$size" -v f="$5" \
        'BEGIN { printf "| %s | `%s` | %d B | %d B | %+.2f MiB |\n", l, f, b, s, (s - b) / 1048576 }'
}

ROWS="$*"
want_row() { [[ -z "$ROWS" ]] || [[ " $ROWS " == *" $1 "* ]]; }

echo "| host | features | host alone | with the client | added |"
echo "|---|---|---|---|---|"
want_row ureq && row "one-line" alone "" ureq ureq
want_row curl && row "one-line" alone "" curl curl
want_row typed && row "one-line, on \`manifest!\`" alone "" curl-typed curl,typed
want_row aws-lc-rs && row "one-line" alone "" ureq-aws-lc-rs ureq-aws-lc-rs
want_row reqwest && row "one-line, with its own reqwest 0.13" own-reqwest own-reqwest reqwest own-reqwest,reqwest
want_row own-rustls && row "one-line, with its own rustls (aws-lc-rs)" own-rustls own-rustls rustls-awslc own-rustls,ureq-aws-lc-rs
true
