#!/usr/bin/env bash
# The recognizer comparison (benchmarks/recognizers.py): rows 1-7, each recognizer kind,
# judged on the CUFSF (200) and CUHK (57) test identities with bootstrap intervals.
#
#   experiments/recognizers.sh base     # rows 1, 2, 5, 6 (no generator needed)
#   experiments/recognizers.sh encoder  # rows 1, 2, 5, 6 with the image-level `encoder` kind
#                                       # beside procrustes and adapter (comparison-encoder)
#   experiments/recognizers.sh guarded  # rows 1, 2, 5, 6: the encoder kind beside the same kind
#                                       # guarded by the artists each row does not train on
#                                       # (comparison-encoder-guarded)
#   experiments/recognizers.sh control  # rows 1, 2, 7: the other artist's real pairs added to
#                                       # row 2, row 4's control (comparison-control; KINDS=)
#   experiments/recognizers.sh v3       # rows 3, 4 on the kept bridge's sketches (comparison-v3)
#   experiments/recognizers.sh v4|v5|v6|v7|v8 # the same with a bridge that was not adopted
#   experiments/recognizers.sh v9       # rows 3, 4 on the artist-targeted bridge (cpu-artist)
#   experiments/recognizers.sh v10      # the same at identity weight 0.8 (not adopted)
#   experiments/recognizers.sh v11      # the same with the photo anchor (identity_photo 0.2)
#   experiments/recognizers.sh v12      # v11 plus the texture loss and AT&T photos in training
#   experiments/recognizers.sh v13      # v12 plus SFace feature matching against the artist
#   experiments/recognizers.sh v14      # the same blocks compared by Gram matrices
#   experiments/recognizers.sh v15      # v12 plus the offset's direction toward the artist
#
# For VERSION the synthetic sources are (1) the bridge's cufsf-artist sketches of the 394
# non-test real identities, from experiments/bridge-validate.sh (v3: ws4, v4: ws5, v5: ws6,
# v6: ws7, v7: ws9, v8: ws10, v9: ws11, v10: ws12, v11: ws13, v12: ws14, v13: ws17, v14: ws18, v15: ws19), and (2) 2,000 cufsf-artist sketches of the 1,000 synthetic mugshots of
# experiments/synthetic-mugshots.sh, drawn here into their own workspace.
# Recognizers whose inputs did not change are reused. -> $RUNS/recognizers/comparison-*/
set -euo pipefail
RUNS="${RUNS:-$HOME/clip4sketch-runs}"
source "$(dirname "$0")/common.sh"

which="${1:?usage: experiments/recognizers.sh base|encoder|guarded|control|v3 ... v15}"
rec_ws="$RUNS/recognizers/ws"
# benchmarks/ is a package: run the module, not the file
bench=("$PY" -m benchmarks.recognizers --workspace "$rec_ws" --data "$DATA")

if [ "$which" = base ]; then
    say "rows 1, 2, 5, 6"
    time $NICE "${bench[@]}" --rows 1,2,5,6 --out "$RUNS/recognizers/comparison-base"
    exit 0
fi
if [ "$which" = encoder ]; then
    say "rows 1, 2, 5, 6: procrustes, adapter and encoder"
    time $NICE "${bench[@]}" --rows 1,2,5,6 --kinds procrustes,adapter,encoder \
        --out "$RUNS/recognizers/comparison-encoder"
    exit 0
fi
if [ "$which" = guarded ]; then
    say "rows 1, 2, 5, 6: encoder and encoder-guarded"
    time $NICE "${bench[@]}" --rows 1,2,5,6 --kinds encoder,encoder-guarded \
        --out "$RUNS/recognizers/comparison-encoder-guarded"
    exit 0
fi
if [ "$which" = control ]; then
    say "rows 1, 2, 7: what the other artist's real pairs add to the few real pairs"
    time $NICE "${bench[@]}" --rows 1,2,7 --kinds "${KINDS:-procrustes,adapter}" \
        --out "${OUT:-$RUNS/recognizers/comparison-control}"
    exit 0
fi

case "$which" in
    v3) real_ws=ws4 ;; v4) real_ws=ws5 ;; v5) real_ws=ws6 ;; v6) real_ws=ws7 ;;
    v7) real_ws=ws9 ;; v8) real_ws=ws10 ;; v9) real_ws=ws11 ;; v10) real_ws=ws12 ;;
    v11) real_ws=ws13 ;; v12) real_ws=ws14 ;; v13) real_ws=ws17 ;; v14) real_ws=ws18 ;; v15) real_ws=ws19 ;;
    *) echo "unknown version $which (base, encoder, guarded, control, v3 ... v15)" >&2; exit 2 ;;
esac
n="${which#v}"
gen="$(generator_dir "cpu-bridge-$which")"
# REAL_WS_NAME= reads another bridge-validate workspace (v12 with each style's own noise:
# REAL_WS_NAME=ws15 STYLE_ETA="cufsf-artist=3 forensic-artist=1.5"; the synthetic mugshots'
# sketches then go to their own workspace, SYN_SUFFIX=-style-eta).
real_ws="${REAL_WS_NAME:-$real_ws}"
syn_ws="$RUNS/synthetic-sketches$n${SYN_SUFFIX:-}/ws"
[ -d "$REAL/$real_ws" ] || { echo "run experiments/bridge-validate.sh $which $real_ws first" >&2; exit 2; }
mapfile -t eta < <(eta_options)

if [ ! -f "$RUNS/synthetic/src/synthetic-manifest.json" ]; then
    "$REPO/experiments/synthetic-mugshots.sh"
fi
say "the 1,000 synthetic mugshots, ingested and embedded into $syn_ws"
$NICE $C4S nightly "$RUNS/synthetic/src" --workspace "$syn_ws"

say "2,000 cufsf-artist sketches of them with $gen"
$NICE $C4S generate --workspace "$syn_ws" --generator "$gen" --style cufsf-artist \
    --samples-per-face 2 "${eta[@]}"

# ROWS=1,2,3,4 KINDS=procrustes,adapter narrows the comparison (the default: every row and
# kind); OUT= writes it elsewhere (the v9 encoder rows: OUT=$RUNS/recognizers/comparison-v9-encoder
# ROWS=1,2,3,4 KINDS=procrustes,adapter,encoder; rows 3 and 4 guarded:
# OUT=$RUNS/recognizers/comparison-v9-guarded ROWS=1,2,3,4 KINDS=encoder,encoder-guarded;
# the encoder kind with the curriculum candidate on v12's sketches:
# OUT=$RUNS/recognizers/comparison-v12-encoder ROWS=1,2,4 KINDS=encoder; the adapter with
# drawn identities as negatives only among its candidates, on the per-style drawings:
# REAL_WS_NAME=ws15 SYN_SUFFIX=-style-eta OUT=$RUNS/recognizers/comparison-v12-negatives
# ROWS=1,2,3,4 KINDS=procrustes,adapter).
# REAL_IDS=56 trains rows 2 and 4 on 56 of the 223 CUFSF train identities (seeded, nested;
# saved as row2-adapter-real56 ...): what the drawings add when the real pairs are fewer.
# ENCODER_BLOCKS=8 lets the encoder kinds' search try k = 8 only (saved as row2-encoder-k8 ...).
narrow=()
[ -n "${REAL_IDS:-}" ] && narrow+=(--real-identities "$REAL_IDS")
for k in ${ENCODER_BLOCKS:-}; do narrow+=(--encoder-blocks "$k"); done
[ -n "${ROWS:-}" ] && narrow+=(--rows "$ROWS")
[ -n "${KINDS:-}" ] && narrow+=(--kinds "$KINDS")
say "the comparison, rows ${ROWS:-1-6}"
time $NICE "${bench[@]}" --synthetic "$REAL/$real_ws" --synthetic "$syn_ws" \
    --synthetic-style cufsf-artist "${narrow[@]}" --out "${OUT:-$RUNS/recognizers/comparison-$which}"
