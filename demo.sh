#!/usr/bin/env bash
# The whole paper on the built-in corpus (called by `make demo`): corpus → text embeddings → VAE →
# generator phase 1 → phase 2 → back-translator → test-set table and pictures, on CPU in ~15 min.
# Settings are smaller than the paper's (passed explicitly below); everything else is the default.
# Re-running continues from the checkpoints in runs/demo (train.py resumes automatically).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/demo}
D=$OUT/data
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# A smaller generator than the paper's (d_model 512, 3 + 6 layers) so that it trains in minutes on a CPU.
GEN="--d-model 128 --ff 256 --enc-layers 2 --dec-layers 2 --enc-heads 4 --dec-heads 4"
step() { echo; echo "=== [$(date +%H:%M:%S)] $*"; }

step "1/7 built-in corpus -> $D"
[ -f "$D/test.pt" ] || $PY -m corpus --out-dir "$D" --seed 0
$PY data.py check --data-dir "$D"

step "2/7 text embeddings (frozen offline BERT, cached)"
$PY data.py embed --data-dir "$D"

step "3/7 VAE (§4.3)"
$PY train.py --stage vae --data-dir "$D" --out-dir "$OUT/vae" --epochs 10 --batch-size 32 --lr 2e-3

step "4/7 generator phase 1: L1 on (mu, log sigma^2), dynamic hand weights (Eq. 3, 7, 8)"
$PY train.py --stage generator --phase 1 --vae "$OUT/vae/best.pt" --data-dir "$D" --out-dir "$OUT/gen1" \
  --epochs 12 --batch-size 32 --lr 1e-3 $GEN

step "5/7 generator phase 2: + KL to the VAE posterior (Eq. 4)"
$PY train.py --stage generator --phase 2 --init "$OUT/gen1/best.pt" --vae "$OUT/vae/best.pt" --data-dir "$D" \
  --out-dir "$OUT/gen2" --epochs 3 --batch-size 32 --lr 2e-4 $GEN

step "6/7 back-translation model on ground-truth poses (§4.2)"
$PY train.py --stage backtranslation --data-dir "$D" --out-dir "$OUT/bt" --epochs 25 --batch-size 32 --lr 1e-3

step "7/7 evaluation on test (Table 7 protocol) and pictures"
$PY -c "import matplotlib" 2>/dev/null || $PY -m pip install --quiet --disable-pip-version-check matplotlib \
  || echo "matplotlib could not be installed: no pictures"
$PY evaluate.py --data-dir "$D" --split test --generator "$OUT/gen1/best.pt" "$OUT/gen2/best.pt" \
  --backtranslator "$OUT/bt/best.pt" --out "$OUT/results.json" --pictures "$OUT"
