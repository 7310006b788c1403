#!/usr/bin/env bash
# Judge a trained bridge (experiments/bridge.sh) with benchmarks/generator_quality.py:
#  1. the held-out identities (57 CUHK test in forensic-artist, 200 CUFSF test in
#     cufsf-artist) at ETA: SFace / dlib, sharpness, L1 and Fréchet to the artist, the style
#     judge, two seeds' similarity; contact sheets in <generator>/quality-eta<ETA>/;
#  2. the sampling-noise choice on *train* identities (40 a dataset, no dlib) for each of ETAS.
#
#   experiments/bridge-quality.sh v3                     # ETA=2.5, ETAS="2 2.5 3 4"
#   ETA=3.5 ETAS="2 2.5 3 3.5" experiments/bridge-quality.sh v6
#   ETAS= QUALITY_FLAGS="--no-second-seed --no-style" experiments/bridge-quality.sh v9
#                       # held-out figures only, without the second seed and the style
#                       # judge (how v7-v10 were measured)
set -euo pipefail
RUNS="${RUNS:-$HOME/clip4sketch-runs}"
source "$(dirname "$0")/common.sh"

version="${1:?usage: experiments/bridge-quality.sh v3 ... v12}"
gen="$(generator_dir "cpu-bridge-$version")"
eta="${ETA:-2.5}"
judges=(--judge forensic-artist=cuhk --judge cufsf-artist=cufsf)
read -r -a flags <<< "${QUALITY_FLAGS:-}"

say "held-out identities, eta $eta"
$NICE "$PY" benchmarks/generator_quality.py --workspace "$REAL_WS" --generator "$gen" \
    "${judges[@]}" --eta "$eta" "${flags[@]}" --out "$gen/quality-eta$eta"

for e in ${ETAS-2 2.5 3 4}; do
    say "train identities (the eta choice), eta $e"
    $NICE "$PY" benchmarks/generator_quality.py --workspace "$REAL_WS" --generator "$gen" \
        "${judges[@]}" --part train --limit 40 --no-dlib --eta "$e" \
        --out "$gen/quality-train-eta$e"
done
