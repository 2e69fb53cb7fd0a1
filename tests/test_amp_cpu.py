"""trainer.precision=bf16-mixed on CPU trains and evaluates every task type (issue 8's AMP on CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.helpers import SMALL_TASKS, compose_train

torch.set_num_threads(2)

pytestmark = pytest.mark.slow


class _AutocastSeen:
    """A forward hook noting the dtype of the model's first conv output (bf16 under autocast)."""

    def __init__(self) -> None:
        self.dtypes: set[torch.dtype] = set()

    def __call__(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.dtypes.add(output.dtype)


@pytest.mark.parametrize("task", list(SMALL_TASKS))
def test_bf16_mixed_trains_and_validates(task: str, synth_root: Path, tmp_path: Path, monkeypatch) -> None:
    from objmtl.runs import train as train_module

    seen = _AutocastSeen()
    build = train_module.build_task

    def build_and_hook(cfg, **kwargs):  # noqa: ANN001, ANN003, ANN202 - wraps build_task as it is
        module = build(cfg, **kwargs)
        first_conv = next(m for m in module.model.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(seen)
        return module

    monkeypatch.setattr(train_module, "build_task", build_and_hook)
    summary = train_module.train(compose_train(*SMALL_TASKS[task], "debug=fast", f"data.root={synth_root}",
                                               "trainer.precision=bf16-mixed", "logger=csv",
                                               "test_after_fit=false", run_dir=tmp_path))
    assert torch.bfloat16 in seen.dtypes
    assert summary["val"] and all(math.isfinite(v) for v in summary["val"].values())
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()  # debug=fast keeps one checkpoint: best
