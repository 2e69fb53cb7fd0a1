"""``objmtl-test`` outputs of task=ssl: its metric is the k-NN top-1 alone, with no per-image files."""

from __future__ import annotations

from objmtl.errors import UserError
from objmtl.runs.outputs import EvalOutputs

__all__ = ["SSLOutputs"]


class SSLOutputs(EvalOutputs):
    """Metrics only: ``--out`` and ``--show-dir`` are refused with a UserError (a self-supervised model
    predicts no labels; wash it and fine-tune a task model)."""

    task = "ssl"

    @classmethod
    def check_request(cls, *, files: bool) -> None:
        if files:
            raise UserError("--out / --show-dir: task=ssl writes no predictions (its metric is the k-NN top-1); "
                            "wash the checkpoint and fine-tune a task model to get some")
