# Two commands do all set-up on a fresh machine:
#   make demo   venv + install + synthetic data + train + evaluate a classifier on CPU,
#               export it to ONNX (verified against PyTorch) and predict with onnxruntime
#   make test   venv + install (with dev extra) + the test suite
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
DEMO_DATA ?= data/synth
DEMO_RUN  := runs/demo/$(shell date +%Y-%m-%d_%H-%M-%S)
PYTEST_ARGS ?=

.PHONY: demo test install lint clean pipeline-basic pipeline-pretrain

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	@test -f $(DEMO_DATA)/meta.json || $(BIN)/objmtl-data synth --out $(DEMO_DATA) --n 4000 --seed 0
	$(BIN)/objmtl-train experiment=cls_resnet18_synth data.root=$(DEMO_DATA) hydra.run.dir=$(DEMO_RUN)
	$(BIN)/objmtl-test $(DEMO_RUN) --split test
	$(BIN)/objmtl-export onnx $(DEMO_RUN) --out $(DEMO_RUN)/export/model.onnx --dynamic --verify \
	    --image $(DEMO_DATA) --show $(DEMO_RUN)/export/onnx_result.png --triton $(DEMO_RUN)/export/triton
	$(BIN)/objmtl-predict $(DEMO_RUN)/export/model.onnx $(DEMO_DATA) --limit 16 --out $(DEMO_RUN)/predict
	@echo "demo run: $(DEMO_RUN)  (checkpoints/, metrics.json, plots/*.png, tensorboard/, export/, predict/)"

# pack (synthetic unless DATA=shards) -> train -> test -> export -> verify -> predict; TASK=cls|det|seg|pose
TASK ?= cls
DATA ?=
ARGS ?=
pipeline-basic: install
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/pipeline_basic.sh -t $(TASK) $(if $(DATA),-d $(DATA)) $(ARGS)

# MoBY pretraining -> wash -> fine-tune TASK -> test -> export -> verify (synthetic unless DATA=shards);
# PRETRAIN_ARGS / FINETUNE_ARGS: overrides of one of the two runs, ARGS: of both
PRETRAIN_ARGS ?=
FINETUNE_ARGS ?=
pipeline-pretrain: install
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/pipeline_pretrain.sh -t $(TASK) $(if $(DATA),-d $(DATA)) \
	    -p "$(PRETRAIN_ARGS)" -f "$(FINETUNE_ARGS)" $(ARGS)

test: install
	$(BIN)/pytest --durations=40 $(PYTEST_ARGS)

# ruff, then the import contract of docs/architecture.md ([tool.importlinter] in pyproject.toml)
lint: install
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs data/synth .pytest_cache
