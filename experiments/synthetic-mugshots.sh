#!/usr/bin/env bash
# 1,000 synthetic identities in one night (needs `make synthetic`): draw them with
# synthesize-mugshots (seed 0, psi 1.0, 512 px, 2 workers x 1 thread), then a night ingests
# and embeds them. The command prints what it kept and refused, the CPU time per candidate and
# the SFace impostor distribution between kept identities; the night's run manifest
# ($RUNS/synthetic/ws/runs/nightly-*.json) has each stage's seconds and counts.
#
#   experiments/synthetic-mugshots.sh              # -> $RUNS/synthetic/src, $RUNS/synthetic/ws
#   TRUNCATION=1 experiments/synthetic-mugshots.sh # also the truncation figures (psi 0.7 run)
set -euo pipefail
RUNS="${RUNS:-$HOME/clip4sketch-runs}"
source "$(dirname "$0")/common.sh"

src="$RUNS/synthetic/src"
ws="$RUNS/synthetic/ws"

say "draw 1,000 people into $src"
time $NICE $C4S --workspace "$ws" synthesize-mugshots 1000 --out "$src" --workers 2

say "the night: ingest and embed them"
time $NICE $C4S --workspace "$ws" nightly "$src"

if [ -n "${TRUNCATION:-}" ]; then
    say "impostor cosine between drawn people at psi 0.7 / 0.85 / 1.0 (60 faces, seed 7)"
    $NICE "$PY" benchmarks/synthetic_truncation.py --faces 60 --seed 7 --psi 0.7 0.85 1.0
    say "psi 0.7 with the command itself: the candidate budget runs out (exit status 1)"
    $NICE $C4S --workspace "$RUNS/synthetic/ws-psi0.7" synthesize-mugshots 1000 \
        --out "$RUNS/synthetic/src-psi0.7" --truncation 0.7 --max-candidates 192 \
        || echo "short of 1,000, as expected"
fi
