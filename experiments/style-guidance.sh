#!/usr/bin/env bash
# Does a sampling setting (classifier-free guidance, or PARAM=eta: the sampling noise)
# strengthen a bridge's styles enough for the style contract?
# The v11 night was rejected on style pairs alone (forensic-artist won 89.8 % of its
# same-face comparisons, 9 pairs short of 90 %). For each guidance value this draws a seeded
# sample of the real-data workspace's photos (CUHK, CUFSF dev, AT&T; FACES of them, default
# 150) in every style the bridge was trained in, two samples each, in a copy of that
# workspace, validates under data_contracts/thresholds.yaml and prints each style's pair
# verdict, its pairs won against each other style, and the identity bar's verdict.
#
#   experiments/style-guidance.sh v11 1.0 1.5 2.0          # guidance (the bridge's own: 1.0)
#   PARAM=eta experiments/style-guidance.sh v11 1.5 3.5     # eta (the bridge's own: 2.5)
#   experiments/style-guidance.sh v12 1.0                  # another bridge at its own setting
#
# -> $RUNS/real/guidance-<version>/<param><value>/ (a workspace each; its report under reports/),
#    and the summary in $RUNS/real/guidance-<version>/summary.txt.
set -euo pipefail
RUNS="${RUNS:-$HOME/clip4sketch-runs}"
source "$(dirname "$0")/common.sh"

version="${1:?usage: [PARAM=guidance|eta] experiments/style-guidance.sh VERSION VALUE...}"
shift
[ "$#" -gt 0 ] || set -- 1.0 1.5 2.0
param="${PARAM:-guidance}"
case "$param" in guidance) tag=g ;; eta) tag=eta ;; *) echo "PARAM: guidance or eta" >&2; exit 2 ;; esac
gen="$(generator_dir "cpu-bridge-$version")"
out="$REAL/guidance-$version"
mkdir -p "$out"
generator_styles "$gen" styles

faces=()
while read -r face; do faces+=(--face "$face"); done < <("$PY" - "$REAL_WS" "${FACES:-150}" <<'EOF'
import sys

import numpy as np

from tasks import storage
from tasks.storage import Workspace

rows = storage.read(Workspace.open(sys.argv[1]), "faces", columns=["face_id", "kind"])
photos = sorted(f for f, k in zip(rows.column("face_id").to_pylist(),
                                  rows.column("kind").to_pylist(), strict=True) if k == "photo")
for face in np.random.default_rng(0).choice(photos, int(sys.argv[2]), replace=False):
    print(face)
EOF
)

summary="$out/summary.txt"
touch "$summary"
previous=""
for g in "$@"; do
    ws="$out/$tag$g"
    if [ ! -d "$ws/lancedb" ]; then
        say "a copy of $REAL_WS (tables only) into $ws"
        mkdir -p "$ws"
        for part in lancedb datasets runs logs; do
            [ -e "$REAL_WS/$part" ] && cp -a "$REAL_WS/$part" "$ws/"
        done
        # The style judge is trained from the same examples in every copy: train it once.
        if [ -n "$previous" ] && [ -d "$previous/validation/style-classifier" ]; then
            mkdir -p "$ws/validation" && cp -a "$previous/validation/style-classifier" "$ws/validation/"
        fi
    fi
    say "$param $g: ${styles[*]} for $((${#faces[@]} / 2)) faces with $gen"
    time $NICE $C4S generate --workspace "$ws" --generator "$gen" "${styles[@]}" "${faces[@]}" \
        --samples-per-face 2 "--$param" "$g"
    say "$param $g: validate"
    $NICE $C4S validate --workspace "$ws" || true  # a rejected version is a result here
    "$PY" - "$ws" "$param $g" >> "$summary" <<'EOF'
import json
import sys
from pathlib import Path

ws, g = Path(sys.argv[1]), sys.argv[2]
folder = max(ws.glob("datasets/*/ds-*"), key=lambda p: p.stat().st_mtime)
dataset = json.loads((folder / "dataset.json").read_text())["dataset"]
print(f"{g}: {folder.parent.name} {folder.name}")
for style, figures in sorted(dataset["per_style"].items()):
    pairs = figures.get("pair_verdict") or {}
    against = ", ".join(f"vs {o} {w}/{n}" for o, (w, n) in sorted(pairs.get("against", {}).items()))
    bar = figures.get("identity_bar") or {}
    print(f"  {style}: pairs {pairs.get('pairs_won')}/{pairs.get('pairs')} "
          f"({(pairs.get('share') or 0):.1%}, {'pass' if pairs.get('passed') else 'FAIL'}); "
          f"{against}; identity contract "
          f"{'not judged' if not bar else 'pass' if bar.get('passed') else 'FAIL'}")
EOF
    tail -n 4 "$summary"
    previous="$ws"
done
say "summary: $summary"
cat "$summary"
