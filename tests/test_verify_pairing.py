"""--verify pairs in-graph-NMS detections before comparing: tied scores may leave NMS in either order."""

from __future__ import annotations

import numpy as np

from objmtl.export.verify import compare

NAMES = ["boxes", "scores", "labels", "count"]


def _dets(boxes: list[list[float]], scores: list[float], labels: list[int]) -> list[np.ndarray]:
    pad = 4 - len(boxes)
    return [np.array([boxes + [[0, 0, 0, 0]] * pad], np.float32), np.array([scores + [0.0] * pad], np.float32),
            np.array([labels + [-1] * pad], np.int64), np.array([len(boxes)], np.int64)]


def test_swapped_ties_are_equal_and_a_moved_box_is_not() -> None:
    ours = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 9, 9]], [0.5, 0.5, 0.4], [1, 1, 2])
    swapped = _dets([[20, 20, 40, 40], [0, 0, 10, 10], [5, 5, 9, 9]], [0.5, 0.5000001, 0.4], [1, 1, 2])
    parity = compare(ours, swapped, names=NAMES, detections=True)
    assert parity.ok(1e-3), parity
    moved = _dets([[20, 20, 40, 40], [0, 0, 10, 12], [5, 5, 9, 9]], [0.5, 0.5, 0.4], [1, 1, 2])
    parity = compare(ours, moved, names=NAMES, detections=True)
    assert not parity.ok(1e-3) and parity.diffs["boxes"] == 2.0
    relabelled = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [5, 5, 9, 9]], [0.5, 0.5, 0.4], [1, 1, 3])
    assert not compare(ours, relabelled, names=NAMES, detections=True).ok(1e-3)
