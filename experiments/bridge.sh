#!/usr/bin/env bash
# Train one of the measured bridge generators on the real-data workspace (run
# experiments/real-data.sh first). 131 CUHK + 223 CUFSF train identities, styles
# forensic-artist, cufsf-artist and xdog-lines, checkpoints and sample grids every 250 steps.
#
#   experiments/bridge.sh v3    # cpu-bridge-v3: the `cpu` config as it is (the kept generator)
#   experiments/bridge.sh v4    # identity loss 0.1, adversarial 0.35 (not adopted)
#   experiments/bridge.sh v5    # the `cpu` config plus --split att (AT&T photos; not adopted)
#   experiments/bridge.sh v6    # texture loss 1.0 from step 500, 4 items, 3,600 steps (not adopted)
#   experiments/bridge.sh v7    # identity target: the artist's sketch (forensic-artist,
#                               # cufsf-artist), weight 0.2, 2,250 steps (not adopted)
#   experiments/bridge.sh v8    # the same at weight 0.1, only where t <= 0.5 (SynThermFace's
#                               # recipe), 2,250 steps (not adopted)
#   experiments/bridge.sh v9    # the bundled `cpu-artist` config: the artist target at weight
#                               # 0.4, 2,250 steps (the adopted artist-targeted generator)
#   experiments/bridge.sh v10   # `cpu-artist` at identity weight 0.8, 2,250 steps: the next
#                               # point of the weight trend (0.1 -> 0.2 -> 0.4 raised CUHK rank-1)
#   experiments/bridge.sh v11   # v10 plus the photo anchor (losses.identity_photo 0.2) on the
#                               # artist-target items, 2,250 steps
#   experiments/bridge.sh v12   # v11 plus the texture loss (1.0 from step 500) and AT&T photos
#                               # (--split att), so forensic-artist is asked of AT&T-like faces
#                               # and its pencil texture is matched there, 2,250 steps: the
#                               # bundled `cpu-artist-texture` config
#   experiments/bridge.sh v13   # v12 plus SFace feature matching against the artist's sketch
#                               # (losses.identity_features 0.5 on blocks 2, 4, 6), 2,250 steps
#   experiments/bridge.sh v14   # v12 plus the same blocks compared by Gram matrices (the
#                               # artist's marks without their places; identity_features 2.0,
#                               # identity_feature_statistic gram), 2,250 steps
#   experiments/bridge.sh v15   # v12 plus the offset's direction: the drawing should leave its
#                               # mugshot the way the artist's sketch does in SFace's space
#                               # (losses.identity_direction 0.5), 2,250 steps
#
# About an hour each on 2 CPU cores (v3-v6, and v10: 64 min 42 s; v7-v9 were trained on a lent H200 through
# experiments/accelerator.py, 0.3 s a step; DEVICE=cuda trains here on a local GPU);
# after a kill, rerun with RESUME=1.
# -> $RUNS/real/ws/generators/cpu-bridge-<version>/final
set -euo pipefail
RUNS="${RUNS:-$HOME/clip4sketch-runs}"
source "$(dirname "$0")/common.sh"

version="${1:?usage: experiments/bridge.sh v3|v4|v5|v6|v7|v8|v9|v10|v11|v12|v13|v14|v15}"
name="cpu-bridge-$version"
steps=4000
splits=(--split cuhk --split cufsf)
config=cpu
# A config is data: a variant is a JSON copy of tasks/generate/configs/cpu.json.
variant() {  # $1: python statements editing the dict c
    mkdir -p "$REAL/configs"
    config="$REAL/configs/$name.json"
    "$PY" -c "import json; c = json.load(open('tasks/generate/configs/cpu.json')); \
c['name'] = '$name'; $1; json.dump(c, open('$config', 'w'), indent=2)"
}
artist_variant() {  # $1: keyword arguments for the losses of a copy of cpu-artist.json
    variant "c = json.load(open('tasks/generate/configs/cpu-artist.json')); c['name'] = '$name'; \
c['training']['losses'].update($1)"
}
case "$version" in
    v3) ;;
    v4) variant "c['training']['losses'].update(identity=0.1, adversarial=0.35)" ;;
    v5) splits+=(--split att) ;;
    v6) variant "c['training']['losses'].update(texture=1.0, texture_from_step=500, texture_items=4)"
        steps=3600 ;;  # the loss costs ~0.07 s a step: 4,000 would pass an hour
    v7) variant "c['training']['losses'].update(identity_artist_styles=['forensic-artist', \
'cufsf-artist'])"; steps=2250 ;;
    v8) variant "c['training']['losses'].update(identity=0.1, identity_max_t=0.5, \
identity_artist_styles=['forensic-artist', 'cufsf-artist'])"; steps=2250 ;;
    v9) config=cpu-artist; steps=2250 ;;
    v10) artist_variant "identity=0.8"; steps=2250 ;;
    v11) artist_variant "identity=0.8, identity_photo=0.2"; steps=2250 ;;
    # v11 plus texture=1.0 from step 500 on 4 items: bundled as tasks/generate/configs/
    # cpu-artist-texture.json (the copy this script wrote before, but for its name)
    v12) config=cpu-artist-texture; splits+=(--split att); steps=2250 ;;
    v13) variant "c = json.load(open('tasks/generate/configs/cpu-artist-texture.json')); \
c['name'] = '$name'; c['training']['losses'].update(identity_features=0.5)"
        splits+=(--split att); steps=2250 ;;
    v14) variant "c = json.load(open('tasks/generate/configs/cpu-artist-texture.json')); \
c['name'] = '$name'; c['training']['losses'].update(identity_features=2.0, \
identity_feature_statistic='gram')"
        splits+=(--split att); steps=2250 ;;
    v15) variant "c = json.load(open('tasks/generate/configs/cpu-artist-texture.json')); \
c['name'] = '$name'; c['training']['losses'].update(identity_direction=0.5)"
        splits+=(--split att); steps=2250 ;;
    *) echo "unknown version $version (v3 ... v15)" >&2; exit 2 ;;
esac
steps="${STEPS:-$steps}"
resume=()
[ -n "${RESUME:-}" ] && resume=(--resume)
[ -n "${DEVICE:-}" ] && resume+=(--device "$DEVICE")

say "train $name ($config, $steps steps)"
$NICE $C4S train-generator --workspace "$REAL_WS" --config "$config" \
    --style forensic-artist --style cufsf-artist --style xdog-lines "${splits[@]}" \
    --name "$name" --steps "$steps" --sample-every 250 "${resume[@]}"
