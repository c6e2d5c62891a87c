#!/usr/bin/env bash
# Prove it on real music: does real, uncaptioned music in the training mix help the codec on real music it never
# heard? Trains the demo codec twice with the same step budget, on the synthetic corpus alone (RUN codec-synth) and
# on the synthetic corpus + Debian's wesnoth soundtrack ingested without captions (RUN codec-mixed,
# DATASET=<synth>+wesnoth), then scores both on the held-out real tracks (the wesnoth ingest's test split: whole
# tracks, by a hash of the file name) and on the synthetic val split. Reports land in reports/codec-*/codec_*.json.
#   bash scripts/real-music-experiment.sh [STEPS=3200 (the demo's)] [SYNTH_CLIPS=1200 (the demo's)]
# Extend to the whole chain with `make demo RUN=mixed DATASET=synth+wesnoth` (MuLan trains on the synthetic captions
# only; every other stage on both) and compare its eval.json with the synthetic-only demo's.
set -euo pipefail
steps=${1:-3200}
clips=${2:-1200}
synth=synth
[ "$clips" = 1200 ] || synth=synth-$clips  # a smaller corpus never overwrites the demo's
py=${PY:-.venv/bin/python}
make_=(make ${MAKE_FLAGS:-})
bash scripts/real-music.sh data/real/wesnoth
test -f data/shards/wesnoth/train/manifest.json ||
  "$py" -m musiclm.cli data ingest data/real/wesnoth data/shards/wesnoth --val-fraction 0.1 --test-fraction 0.2 \
    --workers "${WORKERS:-2}"
"${make_[@]}" data DATASET="$synth" SYNTH_CLIPS="$clips"
"$py" -c "import torch; from musiclm.bench import matmul_gflops as m; print(f'matmul fp32 {m(torch.float32, n=2048):.0f} GFLOP/s (2048x2048, 1 s)')"
for spec in "codec-synth:$synth" "codec-mixed:$synth+wesnoth"; do
  run=${spec%%:*}
  start=$(date +%s)
  "${make_[@]}" train-codec RUN="$run" DATASET="${spec#*:}" ARGS="--trainer.max_steps=$steps"
  echo "$run trained in $(( $(date +%s) - start )) s"
done
for run in codec-synth codec-mixed; do
  "$py" -m musiclm.cli eval codec --run "$run" --data-dir data/shards/wesnoth --split test \
    --out "reports/$run/codec_real.json"
  "$py" -m musiclm.cli eval codec --run "$run" --data-dir "data/shards/$synth" --split val \
    --out "reports/$run/codec_synth.json"
done
"$py" - <<'EOF'
import json
for run in ("codec-synth", "codec-mixed"):
    real, synth = (json.load(open(f"reports/{run}/codec_{s}.json")) for s in ("real", "synth"))
    print(f"{run}: mel distance held-out real {real['mel_distance']:.3f} ({real['num_clips']} clips, untrained "
          f"{real['untrained_mel_distance']:.3f}), synthetic val {synth['mel_distance']:.3f}")
EOF
