#!/usr/bin/env bash
# `make demo`: synthetic faces -> train a small DML-CSR on the CPU -> evaluate on held-out faces -> draw predictions.
set -euo pipefail
PY=${1:-.venv/bin/python}; CONFIG=${2:-configs/synthetic_dml_csr_tiny.yaml}
DATA=${3:-data/synthetic}; RUN=${4:-runs/demo}
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
echo "== 1/3 synthetic faces -> $DATA"
"$PY" scripts/prepare_synthetic.py --out "$DATA" --train 600 --val 60 --test 60
echo "== 2/3 training ($CONFIG) -> $RUN"
rm -rf "$RUN"
"$PY" scripts/train.py --config "$CONFIG" --set data.root="$DATA" output_dir="$(dirname "$RUN")" name="$(basename "$RUN")"
echo "== 3/3 evaluation on the held-out test split, with colourised predictions"
"$PY" scripts/evaluate.py --config "$RUN/config.yaml" --checkpoint "$RUN/best.pt" --split test \
    --out "$RUN/eval_test" --save-predictions
echo
echo "run directory:      $RUN  (config.yaml, metrics.jsonl, tb/, checkpoints/, best.pt)"
echo "test metrics:       $RUN/eval_test/metrics.json"
echo "prediction images:  $RUN/eval_test/colour/ (colourised), $RUN/eval_test/labels/ (label PNGs)"
echo "TensorBoard:        $PY -m tensorboard.main --logdir $RUN/tb"
echo
echo "next, with the interpreter this demo used ($PY):"
echo "  $PY scripts/predict.py photos/ --checkpoint $RUN/best.pt --out preds --detect"
echo "  $PY -m dml_csr.app --checkpoint $RUN/best.pt"
echo "  $PY -c 'from dml_csr import FaceParser; print(FaceParser.from_checkpoint(\"$RUN/best.pt\"))'"
case "$PY" in
    .venv/*|./.venv/*) echo "  (or activate it first: source .venv/bin/activate, then python ... as in the README)";;
esac
