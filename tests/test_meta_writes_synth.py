"""${meta:...} read before prepare_data (task=pose's crop transform, task=mtl) writes the synthetic set first.

Found on a fresh cache: `objmtl-train task=pose` stopped with "synth-n1000-s0-px128: no such shard folder",
because its data config's transforms read ${meta:num_keypoints} while the data module was being built.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from objmtl.data.datamodule import meta_of


def test_meta_of_an_unwritten_synthetic_set_writes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJMTL_CACHE", str(tmp_path))
    meta = meta_of(None, {"n": 20, "seed": 3, "image_size": 32}, None)
    assert (tmp_path / "synth-n20-s3-px32" / "meta.json").is_file()
    assert meta.num_keypoints == 4 and sum(meta.count(s) for s in ("train", "val", "test")) == 20
