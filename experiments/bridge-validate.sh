#!/usr/bin/env bash
# The validate stage's verdict on a bridge's drawings of every identity in no test part
# (CUHK and CUFSF train, AT&T s1..s40: 754 photos), both artist styles, 2 samples each
# (3,016 sketches), then what the style judges call them by style and photo source.
#
# A fresh workspace of the same sources holds them (faces are content-addressed, so it has
# the same ids as $RUNS/real/ws); recognizers.sh reads its cufsf-artist sketches.
#
#   experiments/bridge-validate.sh v3 ws4          # ETA=2.5 (the docs' figures)
#   experiments/bridge-validate.sh v4 ws5
#   experiments/bridge-validate.sh v5 ws6
#   experiments/bridge-validate.sh v6 ws7; ETA=3.5 experiments/bridge-validate.sh v6 ws8
#   experiments/bridge-validate.sh v9 ws11; experiments/bridge-validate.sh v10 ws12
#   experiments/bridge-validate.sh v11 ws13; experiments/bridge-validate.sh v12 ws14
#   STYLE_ETA="cufsf-artist=3 forensic-artist=1.5" experiments/bridge-validate.sh v12 ws15
#                                                  # each style its own sampling noise
#   STYLE_ETA="cufsf-artist=3 forensic-artist=1.25" experiments/bridge-validate.sh v12 ws16
#                                                  # the bundled config's choice
#   JUDGES=all experiments/bridge-validate.sh v3 ws4   # also the four judges (~5 min more)
set -euo pipefail
RUNS="${RUNS:-$HOME/clip4sketch-runs}"
source "$(dirname "$0")/common.sh"

version="${1:?usage: experiments/bridge-validate.sh VERSION WS}"
ws="$REAL/${2:?usage: experiments/bridge-validate.sh VERSION WS}"
gen="$(generator_dir "cpu-bridge-$version")"
mapfile -t eta < <(eta_options)
mapfile -t faces < <(non_test_faces)

say "the same sources in $ws"
ingest_real_sources "$ws"

say "draw cufsf-artist and forensic-artist, 2 a photo, ${eta[*]}, with $gen"
$NICE $C4S generate --workspace "$ws" --generator "$gen" \
    --style cufsf-artist --style forensic-artist --samples-per-face 2 "${eta[@]}" "${faces[@]}"

say "validate (the version is expected to be rejected on style: exit status 1)"
$NICE $C4S validate --workspace "$ws" --style cufsf-artist --style forensic-artist \
    || echo "not published (see the report under $ws/reports/)"

say "the style judge by style and photo source, and with 4 photo-source directions projected out"
$NICE "$PY" benchmarks/style_judge.py --workspace "$ws" --project 0 4
if [ "${JUDGES:-}" = all ]; then
    say "four judges side by side"
    $NICE "$PY" benchmarks/style_judge.py --workspace "$ws" --features pooled gram gram-effnet tone
    $NICE "$PY" benchmarks/style_judge.py --workspace "$ws" --features gram --seed 1
    $NICE "$PY" benchmarks/style_judge.py --workspace "$ws" --features gram --seed 2
fi
