#!/usr/bin/env bash
# The real-data workspace every generator and recognizer experiment starts from:
# CUHK and CUFSF pairs manifests, then their night (ingest + embed) and the AT&T faces'.
#
#   experiments/real-data.sh            # -> $RUNS/real/{cuhk,cufsf}.csv and $RUNS/real/ws
#
# Also prints the SFace baseline on the 57 CUHK test identities (docs: results/performance).
set -euo pipefail
RUNS="${RUNS:-$HOME/clip4sketch-runs}"
source "$(dirname "$0")/common.sh"

say "ingest and embed CUHK, CUFSF and AT&T into $REAL_WS"
ingest_real_sources "$REAL_WS"
$C4S status --workspace "$REAL_WS"

say "SFace baseline, 57 CUHK test identities"
$NICE $C4S evaluate "$REAL/cuhk.csv" --root "$DATA/cuhk" --split cuhk --workspace "$REAL_WS"
