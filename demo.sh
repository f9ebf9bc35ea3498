#!/usr/bin/env bash
# The whole paper on the built-in corpus (called by `make demo`): corpus → text embeddings → VAE →
# generator phase 1 → phase 2 → back-translator → test-set table and pictures, on CPU in ~15 min.
# Settings are smaller than the paper's (passed explicitly below); everything else is the default.
# The back-translator trains beside the VAE and the generator, each process on half of the cores.
# Re-running continues from the checkpoints in runs/demo (train.py resumes automatically).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/demo}
D=$OUT/data
CACHE=$OUT/cache                       # text embeddings and VAE latents, shared by every stage
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
THREADS=$(( $(nproc) / 2 )); [ "$THREADS" -ge 1 ] || THREADS=1
export OMP_NUM_THREADS=$THREADS
# A smaller generator than the paper's (d_model 512, 3 + 6 layers) so that it trains in minutes on a CPU.
GEN="--d-model 128 --ff 256 --enc-layers 2 --dec-layers 2 --enc-heads 4 --dec-heads 4 --cache-dir $CACHE"
step() { echo; echo "=== [$(date +%H:%M:%S)] $*"; }

step "1/7 built-in corpus -> $D"
[ -f "$D/test.pt" ] || $PY -m corpus --out-dir "$D" --seed 0
$PY data.py check --data-dir "$D"

step "2/7 text embeddings (frozen offline BERT, cached)"
$PY data.py embed --data-dir "$D" --cache-dir "$CACHE"

step "3/7 back-translation model on ground-truth poses (§4.2), in the background: $OUT/bt/train.out"
mkdir -p "$OUT/bt"
$PY train.py --stage backtranslation --data-dir "$D" --out-dir "$OUT/bt" --epochs 25 --batch-size 32 --lr 1e-3 \
  > "$OUT/bt/train.out" 2>&1 &
BT=$!

step "4/7 VAE (§4.3), cosine learning-rate decay for the short run"
$PY train.py --stage vae --data-dir "$D" --out-dir "$OUT/vae" --epochs 30 --batch-size 32 --lr 2e-3 --lr-decay cosine

step "5/7 generator phase 1: L1 on (mu, log sigma^2), dynamic hand weights (Eq. 3, 7, 8)"
$PY train.py --stage generator --phase 1 --vae "$OUT/vae/best.pt" --data-dir "$D" --out-dir "$OUT/gen1" \
  --epochs 34 --batch-size 32 --lr 2e-3 $GEN

step "6/7 generator phase 2: + KL to the VAE posterior (Eq. 4)"
$PY train.py --stage generator --phase 2 --init "$OUT/gen1/best.pt" --vae "$OUT/vae/best.pt" --data-dir "$D" \
  --out-dir "$OUT/gen2" --epochs 10 --batch-size 32 --lr 2e-4 $GEN

step "7/7 evaluation on test (Table 7 protocol) and pictures"
if ! wait $BT; then
  tail -5 "$OUT/bt/train.out"; echo "error: the back-translator's training failed (log: $OUT/bt/train.out)"; exit 1
fi
tail -2 "$OUT/bt/train.out"
export OMP_NUM_THREADS=$(( THREADS * 2 ))
$PY evaluate.py --data-dir "$D" --split test --generator "$OUT/gen1/best.pt" "$OUT/gen2/best.pt" \
  --backtranslator "$OUT/bt/best.pt" --out "$OUT/results.json" --cache-dir "$CACHE" --pictures "$OUT"
