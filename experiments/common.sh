# Sourced by the experiments/*.sh scripts (not run on its own): where things are, and the
# in-repository commands they call. Every script takes its run folder from RUNS
# (default ~/clip4sketch-runs) and the research data from DATA (default ../shared/data).
# Drawn faces, sketches and workspaces land under RUNS, never in the repository.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${RUNS:-$HOME/clip4sketch-runs}"
DATA="${DATA:-$REPO/../shared/data}"
C4S="$REPO/.venv/bin/clip4sketch"
PY="$REPO/.venv/bin/python"
# The measurements were taken on a shared 2-core machine, niced; NICE= runs at full priority.
NICE="${NICE-nice -n 15}"
export DO_NOT_TRACK=1 PREFECT_SERVER_ANALYTICS_ENABLED=false HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 LANCEDB_LOG=error
cd "$REPO"

# The real-data workspace: CUHK + CUFSF pairs and the AT&T faces, ingested and embedded.
REAL="$RUNS/real"
REAL_WS="$REAL/ws"

say() { printf '\n== %s\n' "$*"; }

# `--face ID` arguments for every identity in no test part: the CUHK and CUFSF train
# identities of schemas/splits/ and the 40 AT&T identities s1..s40 (754 photos in all).
non_test_faces() {
    local split
    for split in schemas/splits/cuhk.csv schemas/splits/cufsf.csv; do
        awk -F, 'NR > 1 && $2 == "train" { printf "--face\n%s\n", $1 }' "$split"
    done
    local i
    for i in $(seq 1 40); do printf -- '--face\ns%d\n' "$i"; done
}

# A saved bridge generator of the real-data workspace, by its run name (cpu-bridge-v3, ...).
generator_dir() { printf '%s/generators/%s/final' "$REAL_WS" "$1"; }

# Ingest and embed the real sources into a workspace (a night with no generator yet: it
# ingests, embeds and records generation as skipped). Idempotent: a rerun only hashes files.
ingest_real_sources() {
    local ws="$1"
    mkdir -p "$REAL"
    [ -f "$REAL/cuhk.csv" ] || $C4S make-manifest "$DATA/cuhk" "$REAL/cuhk.csv"
    [ -f "$REAL/cufsf.csv" ] || $C4S make-manifest "$DATA/cufsf" "$REAL/cufsf.csv" \
        --layout cufsf --style cufsf-artist
    $NICE $C4S nightly "$REAL/cuhk.csv" "$REAL/cufsf.csv" --root "$DATA" --workspace "$ws"
    $NICE $C4S nightly "$DATA/orl" --workspace "$ws"
}

# The sampling-noise options of `generate` for the experiments: STYLE_ETA="cufsf-artist=3
# forensic-artist=1.25" gives each style its own (docs/results/generator.md, "Sampling noise
# per style"); unset, ETA (default 2.5) for every style.
eta_options() {
    if [ -n "${STYLE_ETA:-}" ]; then
        local pair
        for pair in $STYLE_ETA; do printf -- '--style-eta\n%s\n' "$pair"; done
    else
        printf -- '--eta\n%s\n' "${ETA:-2.5}"
    fi
}

# STYLE_ETA as the JSON of CLIP4SKETCH_GENERATE_STYLE_ETA: what a night reads (the nightly
# command has no sampling options; a deployment sets them in its environment).
style_eta_json() {
    local pair out=""
    for pair in ${STYLE_ETA:-}; do out+="${out:+, }\"${pair%%=*}\": ${pair#*=}"; done
    printf '{%s}' "$out"
}

# `--style NAME` arguments for every style a saved generator was trained in (its
# training.json), in the array named by $2: `generator_styles "$gen" styles`.
generator_styles() {
    local -n out="$2"
    out=()
    local style
    while read -r style; do out+=(--style "$style"); done < <(
        "$PY" -c "import json, sys; [print(s) for s in json.load(open(sys.argv[1]))['examples_per_style']]" \
            "$1/training.json")
}

# A night reads each style's sampling noise from its environment (the nightly command has no
# sampling options; a deployment sets them there): STYLE_ETA, when set, exported as such.
export_style_eta() {
    if [ -n "${STYLE_ETA:-}" ]; then
        CLIP4SKETCH_GENERATE_STYLE_ETA="$(style_eta_json)"
        export CLIP4SKETCH_GENERATE_STYLE_ETA
    fi
}
