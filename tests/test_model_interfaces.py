"""Every shipped model config builds a model that offers what its kind's Protocol (models/interfaces.py) lists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate

from objmtl.config import CONFIG_DIR
from objmtl.models import interfaces
from objmtl.models.instance import InstanceSegmenter
from objmtl.models.regressor import RegressorModel
from objmtl.runs.train import _kind
from tests.helpers import compose_train

PROTOCOLS = {"cls": interfaces.Classifier, "det": interfaces.Detector, "seg": interfaces.Segmenter,
             "pose": interfaces.PoseModel, "ssl": interfaces.SSLModel, "mtl": interfaces.MultiTaskModel,
             "reg": RegressorModel, "inst": InstanceSegmenter}
MODELS = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


def _target(name: str) -> str | None:
    node = yaml.safe_load((CONFIG_DIR / "model" / f"{name}.yaml").read_text()) or {}
    while "_target_" not in node and node.get("defaults"):  # a config built on another (atss_small: atss)
        base = next(d for d in node["defaults"] if d != "_self_")
        node = yaml.safe_load((CONFIG_DIR / "model" / f"{base}.yaml").read_text()) or {}
    return node.get("_target_")


def _missing(model: object, protocol: type) -> list[str]:
    names = {n for c in protocol.__mro__ if c.__module__ == interfaces.__name__
             for n in [*getattr(c, "__annotations__", {}), *(k for k in vars(c) if not k.startswith("_"))]}
    return sorted(n for n in names if not hasattr(model, n))


@pytest.mark.parametrize("name", MODELS)
def test_model_config_builds_a_model_of_its_kind(name: str, synth_root: Path, reg_synth_root: Path,
                                                tmp_path: Path) -> None:
    kind = _kind(_target(name))
    root = reg_synth_root if kind == "reg" else synth_root  # a regressor's size comes from meta.json's targets
    assert kind in PROTOCOLS, f"conf/model/{name}.yaml: its model declares no known kind ({kind!r})"
    torch.manual_seed(0)
    model = instantiate(compose_train(f"task={kind}", f"model={name}", f"data.root={root}",
                                      run_dir=tmp_path).model)
    assert isinstance(model, torch.nn.Module) and model.kind == kind
    protocol = PROTOCOLS[kind]
    assert isinstance(model, protocol), f"{name} lacks some of {protocol.__name__}: {_missing(model, protocol)}"
    if kind == "det" and "DETR" not in type(model).__name__:
        assert isinstance(model, interfaces.DenseDetectorModel), f"{name}: export's DetectorGraph needs more"


def test_a_protocol_notices_what_is_missing() -> None:
    class Half(torch.nn.Module):
        kind, num_classes = "det", 2

        def forward(self, images):
            return images

        def loss(self, outputs, targets):
            return {}

    assert isinstance(Half(), interfaces.TaskModel)
    assert not isinstance(Half(), interfaces.Detector)  # no postprocess

