"""notebooks/quickstart.ipynb runs top to bottom (nbclient, the venv's own kernel), so it never rots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("OBJMTL_QUICKSTART_FAST", "1")
    monkeypatch.setenv("OBJMTL_QUICKSTART_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4, "the curves, the confusion matrix, the predictions and the onnxruntime result"
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "onnxruntime says" in text
    assert (tmp_path / "work" / "model.onnx").is_file()
