"""Tests for objmtl.models.detection.box_coder: round trips, clamping, anchor grids and ONNX export."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from objmtl.models.detection import DeltaXYWHCoder, anchor_points_and_boxes

torch.set_num_threads(1)


def random_boxes(*shape: int, dtype: torch.dtype = torch.float32, generator: torch.Generator) -> torch.Tensor:
    """``(*shape, 4)`` xyxy boxes with corners in [0, 200) and sides in [4, 60)."""
    xy = torch.rand(*shape, 2, generator=generator, dtype=dtype) * 200
    wh = 4 + torch.rand(*shape, 2, generator=generator, dtype=dtype) * 56
    return torch.cat([xy, xy + wh], dim=-1)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-4), (torch.float64, 1e-9)])
@pytest.mark.parametrize("means", [(0.0, 0.0, 0.0, 0.0), (0.1, -0.2, 0.05, -0.05)])
def test_round_trip_flat_and_batched(dtype: torch.dtype, tol: float, means: tuple[float, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    coder = DeltaXYWHCoder(means=means, stds=(0.1, 0.1, 0.2, 0.2))
    anchors = random_boxes(50, dtype=dtype, generator=gen)  # (A, 4)
    boxes = random_boxes(3, 50, dtype=dtype, generator=gen)  # (N, A, 4)
    deltas = coder.encode(anchors, boxes)  # anchors broadcast over the batch
    assert deltas.shape == (3, 50, 4) and deltas.dtype == dtype
    decoded = coder.decode(anchors, deltas)
    assert decoded.dtype == dtype
    torch.testing.assert_close(decoded, boxes, atol=tol, rtol=0)
    # Per-image anchors (N, A, 4) give the same; so does one flat (A, 4) image.
    batched_anchors = anchors.expand(3, -1, -1)
    torch.testing.assert_close(
        coder.decode(batched_anchors, coder.encode(batched_anchors, boxes)), boxes, atol=tol, rtol=0
    )
    torch.testing.assert_close(
        coder.decode(anchors, coder.encode(anchors, boxes[1])), boxes[1], atol=tol, rtol=0
    )
    # A box equal to its anchor encodes as -means / stds and decodes back to the anchor.
    torch.testing.assert_close(
        coder.encode(anchors, anchors),
        (-torch.tensor(means, dtype=dtype) / torch.tensor(coder.stds, dtype=dtype)).expand(50, 4),
    )


def test_known_values() -> None:
    coder = DeltaXYWHCoder()  # means 0, stds (.1, .1, .2, .2)
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size (10, 20)
    # dx = 1 -> 0.1 * 10 = 1 px right; dh = ln 2 / 0.2 -> height doubled about the centre.
    deltas = torch.tensor([[1.0, 0.0, 0.0, math.log(2) / 0.2]])
    torch.testing.assert_close(coder.decode(anchor, deltas), torch.tensor([[1.0, -10.0, 11.0, 30.0]]))
    torch.testing.assert_close(coder.encode(anchor, torch.tensor([[1.0, -10.0, 11.0, 30.0]])), deltas)


def test_clip_ratio_clamps_huge_deltas() -> None:
    coder = DeltaXYWHCoder()
    anchor = torch.tensor([[0.0, 0.0, 16.0, 16.0]])  # centre (8, 8)
    deltas = torch.tensor([[0.0, 0.0, 1e4, -1e4]])  # exp would overflow to inf / underflow to 0
    box = coder.decode(anchor, deltas)[0]
    assert torch.isfinite(box).all()
    width, height = (box[2] - box[0]).item(), (box[3] - box[1]).item()
    assert width == pytest.approx(16 * 1000 / 16, rel=1e-5)  # exp(log(1000 / 16)) = 62.5 times wider
    assert height == pytest.approx(16 * 16 / 1000, rel=1e-5)  # 62.5 times flatter
    assert ((box[:2] + box[2:]) / 2).tolist() == pytest.approx([8.0, 8.0])
    narrow = DeltaXYWHCoder(clip_ratio=math.log(2))
    assert (
        narrow.decode(anchor, deltas)[0, 2] - narrow.decode(anchor, deltas)[0, 0]
    ).item() == pytest.approx(32.0)


def test_max_shape_clips_to_the_image() -> None:
    coder = DeltaXYWHCoder()
    anchors = torch.tensor([[-10.0, -10.0, 30.0, 30.0], [50.0, 20.0, 120.0, 90.0], [5.0, 5.0, 15.0, 15.0]])
    deltas = torch.zeros(2, 3, 4)
    boxes = coder.decode(anchors, deltas, max_shape=(60, 100))  # height 60, width 100
    expected = torch.tensor([[0.0, 0.0, 30.0, 30.0], [50.0, 20.0, 100.0, 60.0], [5.0, 5.0, 15.0, 15.0]])
    torch.testing.assert_close(boxes, expected.expand(2, 3, 4))
    torch.testing.assert_close(coder.decode(anchors, deltas[0]), anchors)  # no max_shape: unclipped


def test_dtype_and_device_preserved() -> None:
    coder = DeltaXYWHCoder()
    gen = torch.Generator().manual_seed(1)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        anchors = random_boxes(5, generator=gen).to(dtype)
        out = coder.decode(anchors, torch.zeros(2, 5, 4, dtype=dtype), max_shape=(64, 64))
        assert out.dtype == dtype and out.device == anchors.device and out.shape == (2, 5, 4)


def test_bad_coder_arguments() -> None:
    with pytest.raises(ValueError, match="4 values"):
        DeltaXYWHCoder(means=(0.0, 0.0))
    with pytest.raises(ValueError, match="positive"):
        DeltaXYWHCoder(stds=(0.1, 0.1, 0.0, 0.2))


def test_anchor_points_and_boxes() -> None:
    levels = anchor_points_and_boxes([(2, 3), (1, 1)], [8, 16], dtype=torch.float64)
    (points0, anchors0), (points1, anchors1) = levels
    assert points0.shape == (6, 2) and anchors0.shape == (6, 4) and points0.dtype == torch.float64
    # Row-major: x varies fastest; centres at (x + 0.5) * stride.
    assert points0.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert anchors0[0].tolist() == [4 - 32, 4 - 32, 4 + 32, 4 + 32]  # side 8 * 8 = 64
    assert points1.tolist() == [[8, 8]] and anchors1.tolist() == [[8 - 64, 8 - 64, 8 + 64, 8 + 64]]
    ((points, anchors),) = anchor_points_and_boxes([(1, 2)], [4], octave_base_scale=2, offset=0.0)
    assert points.tolist() == [[0, 0], [4, 0]] and anchors.tolist() == [[-4, -4, 4, 4], [0, -4, 8, 4]]
    assert points.dtype == torch.float32
    with pytest.raises(ValueError, match="strides"):
        anchor_points_and_boxes([(1, 1)], [8, 16])


class _Decode(nn.Module):
    """A detector export's decoding: a batch of deltas against one anchor set, clipped to the image."""

    def __init__(self) -> None:
        super().__init__()
        self.coder = DeltaXYWHCoder(means=(0.1, -0.1, 0.05, 0.0), stds=(0.1, 0.1, 0.2, 0.2))

    def forward(self, anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        return self.coder.decode(anchors, deltas, max_shape=(120, 160))


def test_onnx_export_matches_pytorch_at_other_anchor_counts(tmp_path) -> None:
    """ObjectiveMTL FAQ 13: an ATSS coder exported but gave wrong boxes; the graph must follow A."""
    ort = pytest.importorskip("onnxruntime")
    gen = torch.Generator().manual_seed(2)
    model = _Decode().eval()
    path = tmp_path / "decode.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
        # A tensor turned into a Python number or bool would be frozen into the graph: fail instead.
        warnings.simplefilter("error", torch.jit.TracerWarning)
        torch.onnx.export(
            model,
            (random_boxes(13, generator=gen), torch.randn(2, 13, 4, generator=gen)),
            str(path),
            input_names=["anchors", "deltas"],
            output_names=["boxes"],
            dynamic_axes={"anchors": {0: "A"}, "deltas": {0: "N", 1: "A"}, "boxes": {0: "N", 1: "A"}},
            opset_version=17,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, count in [(2, 7), (1, 50)]:
        anchors = random_boxes(count, generator=gen)
        deltas = torch.randn(batch, count, 4, generator=gen) * 3
        deltas[0, 0] = torch.tensor([0.0, 0.0, 1e3, -1e3])  # exercises the clip ratio in the graph
        (onnx_boxes,) = session.run(None, {"anchors": anchors.numpy(), "deltas": deltas.numpy()})
        expected = model(anchors, deltas).numpy()
        assert onnx_boxes.shape == (batch, count, 4)
        np.testing.assert_allclose(onnx_boxes, expected, rtol=0, atol=1e-5)
