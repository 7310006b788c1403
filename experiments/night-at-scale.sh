#!/usr/bin/env bash
# What a night costs on a real-sized workspace: a copy of the real-data night's workspace
# (experiments/real-night.sh VERSION: ~4,500 faces, ~12,000 drawings in three styles), then
# nights as a schedule would run them there: one with nothing new, one with one new face, one
# with ten. Each night's stages and the validate stage's own steps come from its run record;
# benchmarks/nights.py measures the same on a workspace of ~150 faces.
#
#   STYLE_ETA="cufsf-artist=3 forensic-artist=1.25" NIGHT_SUFFIX=-style-eta-1.25 \
#       experiments/night-at-scale.sh v12     # the real-data night of the bundled choice
#
# The new faces are procedural demo mugshots (tasks/demo/faces.py), drawn afresh for each
# night into $RUNS/real/new-faces-N. -> $RUNS/real/night-<version><suffix>-scale/ and
# $RUNS/real/night-<version><suffix>-scale.json (every night's stages, side by side).
set -euo pipefail
RUNS="${RUNS:-$HOME/clip4sketch-runs}"
source "$(dirname "$0")/common.sh"

version="${1:?usage: experiments/night-at-scale.sh VERSION (v12, ...)}"
gen="$(generator_dir "cpu-bridge-$version")"
night="$REAL/night-$version${NIGHT_SUFFIX:-}"
ws="$night-scale"
[ -d "$night/lancedb" ] || { echo "no $night: run experiments/real-night.sh $version first" >&2; exit 2; }
export_style_eta
generator_styles "$gen" styles

say "a copy of $night"
rm -rf "$ws"
cp -a "$night" "$ws"

records=()
for count in 0 1 10; do
    sources=("$RUNS/synthetic/src" "$DATA/orl")
    if [ "$count" -gt 0 ]; then
        new="$REAL/new-faces-$count"
        rm -rf "$new"
        # A seed no other night used, and identity folders named for the night: new people,
        # not the same ones again under the demo's identity names.
        "$PY" - "$new" "$count" <<'EOF'
import sys
from pathlib import Path

from tasks.demo.faces import make_demo_source

root, count = Path(sys.argv[1]), int(sys.argv[2])
make_demo_source(root, identities=count, photos_per_identity=1, seed=1000 + count)
for folder in sorted((root / "photos").iterdir()):
    folder.rename(folder.with_name(f"night{count}-{folder.name}"))
EOF
        sources+=("$new/photos")
    fi
    say "a night with $count new face(s)"
    # A rejected version is a result here, not a failure of the measurement.
    time $NICE $C4S nightly "${sources[@]}" --workspace "$ws" --generator "$gen" "${styles[@]}" || true
    records+=("$(ls -t "$ws"/runs/nightly-*.json | head -1)")
done

"$PY" - "$ws.json" "${records[@]}" <<'EOF'
import json
import sys

out, paths = sys.argv[1], sys.argv[2:]
rows = []
for count, path in zip((0, 1, 10), paths, strict=True):
    record = json.load(open(path))
    stages = {name: stage["seconds"] for name, stage in record["summary"].items()}
    validate = record["stages"].get("validate") or {}
    steps = {"metrics": (validate.get("metrics") or {}).get("seconds"),
             **(validate.get("seconds") or {})}
    rows.append({"new_faces": count, "record": path, "stages": stages,
                 "stage_seconds": sum(stages.values()), "validate_steps": steps,
                 "sketches": (validate.get("dataset") or {}).get("sketches"),
                 "status": validate.get("status")})
json.dump(rows, open(out, "w"), indent=1)
print(f"{'new faces':>9} {'status':>9} {'sketches':>9} {'stages s':>9}  stages; validate steps")
for r in rows:
    print(f"{r['new_faces']:9d} {str(r['status']):>9} {str(r['sketches']):>9} "
          f"{r['stage_seconds']:9.1f}  "
          + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()) + "; "
          + ", ".join(f"{k} {v:.1f}" for k, v in r["validate_steps"].items() if v is not None))
print(f"-> {out}")
EOF
