#!/usr/bin/env bash
# The real-data night of issue 20: CUHK + CUFSF dev + AT&T + the 1,000 synthetic mugshots
# (experiments/synthetic-mugshots.sh) in a fresh workspace, drawn by a trained bridge in every
# style it was trained in, validated under data_contracts/thresholds.yaml, published or not.
#
#   experiments/real-night.sh v9     # the artist-targeted bridge (cpu-artist)
#   experiments/real-night.sh v11    # the same with the photo anchor (identity_photo 0.2)
#   experiments/real-night.sh v12    # v11 plus the texture loss and AT&T photos in training
#   STYLE_ETA="cufsf-artist=3 forensic-artist=1.5" NIGHT_SUFFIX=-style-eta \
#       experiments/real-night.sh v12  # each style its own sampling noise (the settings'
#                                      # CLIP4SKETCH_GENERATE_STYLE_ETA, as a deployment sets it)
#   STYLE_ETA="cufsf-artist=3 forensic-artist=1.25" NIGHT_SUFFIX=-style-eta-1.25 \
#       experiments/real-night.sh v12  # the bundled config's choice
#
# -> $RUNS/real/night-<version>/ (its report: reports/<version>/report.html; the night's run
#    manifest: runs/nightly-<id>.json). Exit status 1 when the version is rejected.
set -euo pipefail
RUNS="${RUNS:-$HOME/clip4sketch-runs}"
source "$(dirname "$0")/common.sh"

version="${1:?usage: experiments/real-night.sh VERSION (v9, ...)}"
gen="$(generator_dir "cpu-bridge-$version")"
ws="$REAL/night-$version${NIGHT_SUFFIX:-}"
export_style_eta
generator_styles "$gen" styles
[ -f "$RUNS/synthetic/src/synthetic-manifest.json" ] || "$REPO/experiments/synthetic-mugshots.sh"

say "CUHK, CUFSF and AT&T into $ws (ingest and embed)"
ingest_real_sources "$ws"

say "the night: the synthetic mugshots, then ${styles[*]} for every face with $gen"
time $NICE $C4S nightly "$RUNS/synthetic/src" --workspace "$ws" --generator "$gen" "${styles[@]}"
