#!/usr/bin/env bash
# The basic pipeline (ObjectiveMTL's demos/pipeline_basic): pack data -> train -> evaluate -> export -> verify
# -> predict with onnxruntime. Every step is the CLI a user would type; the run folder keeps all outputs.
#
#   scripts/pipeline_basic.sh [-t cls|det|seg|pose] [-d SHARDS] [-o OUT] [key=value ...]
#
#   -t  task type (default cls)
#   -d  a shard set (objmtl-data convert ... --out SHARDS); default: the synthetic set, written to OUT/data
#   -o  output folder (default runs/pipeline_basic/<time>)
#   key=value ...  objmtl-train overrides (e.g. trainer.max_epochs=20 model.backbone.name=resnet50)
set -euo pipefail
BIN=${BIN:-$(dirname "$(command -v objmtl-train || echo .venv/bin/objmtl-train)")}
TASK=cls DATA="" OUT="runs/pipeline_basic/$(date +%Y-%m-%d_%H-%M-%S)"
while getopts "t:d:o:" opt; do
  case $opt in
    t) TASK=$OPTARG ;; d) DATA=$OPTARG ;; o) OUT=$OPTARG ;;
    *) sed -n '5,11p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
RUN="$OUT/run"
PRED="$OUT/predictions.json"; [ "$TASK" = seg ] && PRED="$OUT/predictions"   # seg: a folder of class-index PNGs
mkdir -p "$OUT"
SEG_DATA=()
set -x
if [ -z "$DATA" ]; then                                                      # 1. pack data
  DATA="$OUT/data"
  [ -f "$DATA/meta.json" ] || "$BIN/objmtl-data" synth --out "$DATA" --n "${SYNTH_N:-2000}" --seed 0
elif [ "$TASK" = seg ] && [[ " $* " != *" data="* ]]; then
  SEG_DATA=(data=seg)  # your shards keep data=seg's rescale; task=seg's default (data=seg_synth) is for the synthetic set
fi
"$BIN/objmtl-data" inspect "$DATA" > "$OUT/inspect.txt"
"$BIN/objmtl-train" "task=$TASK" ${SEG_DATA[@]+"${SEG_DATA[@]}"} "data.root=$DATA" "hydra.run.dir=$RUN" "$@"   # 2. train
"$BIN/objmtl-test" "$RUN" --out "$PRED" --show-dir "$OUT/show" data.num_workers=0  # 3. evaluate
"$BIN/objmtl-export" onnx "$RUN" --out "$OUT/export/model.onnx" --dynamic --verify \
    --image "$DATA" --triton "$OUT/export/triton"                               # 4. export + verify
"$BIN/objmtl-predict" "$OUT/export/model.onnx" "$DATA" --limit 8 --out "$OUT/predict"   # 5. onnxruntime
set +x
echo "pipeline done: $OUT (run/, predictions, show/, export/model.onnx, export/triton/, predict/)"
