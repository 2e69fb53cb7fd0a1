#!/usr/bin/env bash
# The pretraining pipeline (ObjectiveMTL's demos/pipeline_pretrain): self-supervised pretraining (MoBY) ->
# wash the checkpoint down to its backbone -> fine-tune a task model from it -> evaluate -> export -> verify.
# Every step is the CLI a user would type; the output folder keeps all runs and files.
#
#   scripts/pipeline_pretrain.sh [-t cls|det|seg|pose] [-d SHARDS] [-o OUT] [-p 'k=v ...'] [-f 'k=v ...'] [k=v ...]
#
#   -t  the fine-tuned task type (default cls)
#   -d  a shard set with image labels (the k-NN metric of task=ssl reads them) and the task's annotations;
#       default: the synthetic set (all four kinds), written to OUT/data
#   -o  output folder (default runs/pipeline_pretrain/<time>)
#   -p  overrides for the pretraining run only (e.g. 'trainer.max_epochs=100 data.batch_size=256')
#   -f  overrides for the fine-tuning run only
#   k=v ...  overrides for both runs (e.g. model.backbone.name=resnet50 trainer=gpu)
set -euo pipefail
BIN=${BIN:-$(dirname "$(command -v objmtl-train || echo .venv/bin/objmtl-train)")}
TASK=cls DATA="" OUT="runs/pipeline_pretrain/$(date +%Y-%m-%d_%H-%M-%S)" PRE="" FT=""
while getopts "t:d:o:p:f:" opt; do
  case $opt in
    t) TASK=$OPTARG ;; d) DATA=$OPTARG ;; o) OUT=$OPTARG ;; p) PRE=$OPTARG ;; f) FT=$OPTARG ;;
    *) sed -n '5,15p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
read -r -a PRE_ARGS <<< "$PRE"
read -r -a FT_ARGS <<< "$FT"
mkdir -p "$OUT"
set -x
# MoBY's model and views unless told otherwise (task=ssl's defaults, model=moby_small and data=ssl_synth, are a
# first run on the synthetic set; moby_small's backbone stops at C4, so fine-tuning would get no pretrained C5)
VIEWS=(data=ssl) MODEL=(model=moby) SEG_DATA=()
if [ -z "$DATA" ]; then                                                                # 1. pack data
  DATA="$OUT/data"
  [ -f "$DATA/meta.json" ] || "$BIN/objmtl-data" synth --out "$DATA" --n "${SYNTH_N:-2000}" --seed 0
  # random colours per image: grayscale views, or MoBY learns colour (docs/training_and_evaluating.md)
  VIEWS=(data=ssl_gray)
elif [ "$TASK" = seg ] && [[ " $FT $* " != *" data="* ]]; then
  SEG_DATA=(data=seg)  # your shards keep data=seg's rescale; task=seg's default (data=seg_synth) is for the synthetic set
fi
if [[ " $PRE $* " == *" data="* || " $PRE $* " == *" experiment="* ]]; then VIEWS=(); fi
if [[ " $PRE $* " == *" model="* || " $PRE $* " == *" experiment="* ]]; then MODEL=(); fi
"$BIN/objmtl-train" task=ssl ${MODEL[@]+"${MODEL[@]}"} ${VIEWS[@]+"${VIEWS[@]}"} "data.root=$DATA" "hydra.run.dir=$OUT/pretrain" \
    test_after_fit=false "$@" ${PRE_ARGS[@]+"${PRE_ARGS[@]}"}                         # 2. pretrain (MoBY)
"$BIN/objmtl-ckpt" wash "$OUT/pretrain" --out "$OUT/backbone.pth"                     # 3. keep the backbone
"$BIN/objmtl-train" "task=$TASK" ${SEG_DATA[@]+"${SEG_DATA[@]}"} "data.root=$DATA" "load_from=$OUT/backbone.pth" \
    "hydra.run.dir=$OUT/finetune" "$@" ${FT_ARGS[@]+"${FT_ARGS[@]}"}                  # 4. fine-tune
"$BIN/objmtl-test" "$OUT/finetune" data.num_workers=0                                   # 5. evaluate
"$BIN/objmtl-export" onnx "$OUT/finetune" --out "$OUT/export/model.onnx" --dynamic --verify \
    --image "$DATA" --triton "$OUT/export/triton"                                       # 6. export + verify
set +x
echo "pipeline done: $OUT (pretrain/, backbone.pth, finetune/, export/model.onnx, export/triton/)"
