"""``ms_deform_attn``: the C++ kernel (and, on a GPU, the CUDA kernel) against the grid_sample reference,
forward and backward; the op's edge cases, fallbacks and autocast; ``MSDeformAttn`` on the kernel."""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from objmtl.ops import MSDeformAttn, build, ms_deform_attn, ms_deform_attn_reference
from tests.ms_deform_attn_cases import assert_close_relative, make_inputs, require_built

torch.set_num_threads(2)

op_module = importlib.import_module("objmtl.ops.ms_deform_attn")  # the package re-exports the function
GRADS = ("value", "sampling_locations", "attention_weights")


@pytest.fixture(scope="module", autouse=True)
def cpu_kernel() -> None:
    """The C++ kernel built into the checkout, used by ``ms_deform_attn`` in this module."""
    require_built("cpu")


def run(fn, inputs: dict[str, Tensor], grad_output: Tensor | None = None, **kwargs) -> tuple[Tensor, dict]:
    """Output and the gradients of ``GRADS`` for sum(output * grad_output) (a fixed random grad_output)."""
    leaves = {k: (v.detach().clone().requires_grad_() if k in GRADS else v) for k, v in inputs.items()}
    if fn is ms_deform_attn_reference:
        out = fn(leaves["value"], leaves["spatial_shapes"], leaves["sampling_locations"], leaves["attention_weights"])
    else:
        out = fn(**leaves, **kwargs)
    if grad_output is None:
        grad_output = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out.backward(grad_output.to(out.device, out.dtype))
    return out.detach(), {k: leaves[k].grad for k in GRADS}


def uses_kernel(out: Tensor) -> bool:
    return out.grad_fn is not None and "MSDeformAttnFunction" in type(out.grad_fn).__name__


CASES = {
    "two-levels": {},
    "four-levels-odd": {"n": 1, "heads": 2, "channels": 3, "shapes": ((5, 7), (4, 1), (1, 3), (2, 2)),
                        "queries": 9, "points": 3},
    "one-level-one-point": {"n": 3, "heads": 1, "channels": 8, "shapes": ((4, 4),), "queries": 4, "points": 1},
    "wide-range": {"low": -0.6, "high": 1.6},
}


@pytest.mark.parametrize("case", CASES)
def test_cpu_kernel_matches_reference_float64(case: str) -> None:
    inputs = make_inputs(**CASES[case])
    out = ms_deform_attn(**{k: v.clone().requires_grad_() if k in GRADS else v for k, v in inputs.items()})
    assert uses_kernel(out)
    got, got_grads = run(ms_deform_attn, inputs)
    want, want_grads = run(ms_deform_attn_reference, inputs)
    assert got.shape == want.shape == (inputs["value"].shape[0], inputs["sampling_locations"].shape[1],
                                       inputs["value"].shape[2] * inputs["value"].shape[3])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for k in GRADS:
        torch.testing.assert_close(got_grads[k], want_grads[k], rtol=0, atol=1e-10, msg=k)


def test_cpu_kernel_matches_reference_float32() -> None:
    inputs = make_inputs(n=2, heads=4, channels=16, shapes=((16, 12), (8, 6), (4, 3)), queries=50, points=4,
                         dtype=torch.float32)
    got, got_grads = run(ms_deform_attn, inputs)
    want, want_grads = run(ms_deform_attn_reference, {k: v.double() if v.is_floating_point() else v
                                                      for k, v in inputs.items()})
    assert got.dtype == torch.float32
    assert_close_relative(got, want, 1e-5, "output")
    for k in GRADS:
        assert got_grads[k].dtype == torch.float32
        assert_close_relative(got_grads[k], want_grads[k], 1e-5, k)


def test_cpu_kernel_gradcheck() -> None:
    inputs = make_inputs(n=1, heads=2, channels=2, shapes=((3, 4), (2, 1)), queries=3, points=2, seed=3)
    args = tuple(inputs[k].clone().requires_grad_() for k in GRADS)

    def f(value: Tensor, locations: Tensor, weights: Tensor) -> Tensor:
        return ms_deform_attn(value, inputs["spatial_shapes"], inputs["level_start_index"], locations, weights)

    assert uses_kernel(f(*args))
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("step", [1, 2, 3, 64])
def test_im2col_step_does_not_change_the_result(step: int) -> None:
    inputs = make_inputs(n=5)  # 5 is not a multiple of 2 or 3
    want, want_grads = run(ms_deform_attn_reference, inputs)
    got, got_grads = run(ms_deform_attn, inputs, im2col_step=step)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for k in GRADS:
        torch.testing.assert_close(got_grads[k], want_grads[k], rtol=0, atol=1e-10, msg=k)


def test_zero_queries() -> None:
    inputs = make_inputs(queries=0)
    out, grads = run(ms_deform_attn, inputs)
    assert out.shape == (2, 0, 3 * 5)
    assert grads["value"].shape == inputs["value"].shape and not grads["value"].any()
    assert grads["sampling_locations"].shape == (2, 0, 3, 2, 2, 2)


def test_non_contiguous_inputs() -> None:
    inputs = make_inputs(n=3, channels=4)
    value = inputs["value"].transpose(0, 2).contiguous().transpose(0, 2)  # same values, strides permuted
    locations = inputs["sampling_locations"].transpose(1, 3).contiguous().transpose(1, 3)
    weights = torch.stack([inputs["attention_weights"]] * 2, dim=-1)[..., 1]  # every other element
    strided = {**inputs, "value": value, "sampling_locations": locations, "attention_weights": weights,
               "level_start_index": torch.tensor([0, 0, 24, 24])[::2]}
    assert not any(strided[k].is_contiguous() for k in (*GRADS, "level_start_index"))
    got, got_grads = run(ms_deform_attn, strided)
    want, want_grads = run(ms_deform_attn_reference, inputs)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    for k in GRADS:
        torch.testing.assert_close(got_grads[k], want_grads[k], rtol=0, atol=1e-10, msg=k)


BAD = {
    "value-rank": ({"value": lambda t: t[0]}, ValueError, r"value must be \[N, S, M, D\]"),
    "locations-last-dim": ({"sampling_locations": lambda t: t[..., :1]}, ValueError, "sampling_locations must be"),
    "weights-shape": ({"attention_weights": lambda t: t[:, :, :, :, :1]}, ValueError, "attention_weights must be"),
    "heads-mismatch": ({"value": lambda t: t[:, :, :2]}, ValueError, "sampling_locations must be"),
    "shapes-sum": ({"spatial_shapes": lambda t: torch.tensor([[6, 4], [3, 3]])}, ValueError,
                   r"sum\(H \* W\) = 33, but value has S = 30"),
    "start-index": ({"level_start_index": lambda t: torch.tensor([0, 23])}, ValueError, "level_start_index"),
    "shapes-float": ({"spatial_shapes": lambda t: t.double()}, TypeError, "spatial_shapes must be an integer"),
    "value-int": ({"value": lambda t: t.long()}, TypeError, "value must be floating point"),
    "mixed-dtypes": ({"attention_weights": lambda t: t.float()}, TypeError, "must share one dtype"),
    "im2col-zero": ({}, ValueError, "im2col_step must be a positive int"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_refused_clearly(case: str) -> None:
    changes, error, message = BAD[case]
    inputs = make_inputs()
    inputs.update({k: change(inputs[k]) for k, change in changes.items()})
    with pytest.raises(error, match=message):
        ms_deform_attn(**inputs, im2col_step=0 if case == "im2col-zero" else 64)


def test_locations_outside_the_maps_contribute_zero() -> None:
    inputs = make_inputs()
    h, w = 6, 4  # level 0; beyond one pixel outside (pixel = x * W - 0.5 <= -1 or >= W) nothing is sampled
    far = torch.tensor([[-0.5, 0.5], [1.5, 0.5], [0.5, -0.2], [0.5, 1.3], [-1 / (2 * w), 0.5], [0.5, 1 + 1 / (2 * h)],
                        [-1e30, 0.5], [float("inf"), 0.5]], dtype=torch.float64)
    locations = inputs["sampling_locations"].clone()
    locations[:, :, :, 0, 0] = far[torch.arange(7) % len(far)][None, :, None]
    locations[:, :, :, 1] = 5.0  # all of level 1 off the map
    inputs["sampling_locations"] = locations
    out, grads = run(ms_deform_attn, inputs)
    only = {**inputs, "attention_weights": inputs["attention_weights"].clone()}
    only["attention_weights"][:, :, :, 0, 0] = 0  # the far points removed by weight instead of location
    only["attention_weights"][:, :, :, 1] = 0
    without, _ = run(ms_deform_attn, only)
    torch.testing.assert_close(out, without, rtol=0, atol=1e-12)
    assert not grads["sampling_locations"][:, :, :, 0, 0].any() and not grads["sampling_locations"][:, :, :, 1].any()
    assert not grads["attention_weights"][:, :, :, 1].any()
    assert not grads["value"][:, 24:].any()  # level 1's values were never sampled


def test_nan_propagates_without_a_crash() -> None:
    inputs = make_inputs(low=0.2, high=0.8)  # all on the map
    inputs["sampling_locations"][0, 3, 1, 0, 0, 0] = float("nan")
    inputs["attention_weights"][1, 5, 2, 1, 1] = float("nan")
    out, grads = run(ms_deform_attn, inputs)
    heads = out.view(2, 7, 3, 5).isnan().all(-1)  # [N, Lq, M]
    expected = torch.zeros_like(heads)
    expected[0, 3, 1] = expected[1, 5, 2] = True
    assert torch.equal(heads, expected)
    assert grads["sampling_locations"][0, 3, 1, 0, 0].isnan().all()
    assert grads["attention_weights"][0, 3, 1, 0, 0].isnan()
    nan_grads = grads["sampling_locations"].isnan().any(-1)  # [N, Lq, M, L, P]
    expected = torch.zeros_like(nan_grads)
    expected[0, 3, 1, 0, 0] = expected[1, 5, 2, 1, 1] = True  # only the two points' own gradients
    assert torch.equal(nan_grads, expected)
    nan_value = make_inputs(low=0.2, high=0.8)
    nan_value["value"][:, 0] = float("nan")  # pixel (0, 0) of level 0
    out, _ = run(ms_deform_attn, nan_value)
    want, _ = run(ms_deform_attn_reference, nan_value)
    assert out.isnan().any()
    assert torch.equal(out.isnan(), want.isnan())


def test_autocast_bfloat16_computes_in_float32() -> None:
    inputs = make_inputs(channels=8, dtype=torch.float32)
    value = inputs["value"].bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = run(ms_deform_attn, {**inputs, "value": value})
    assert out.dtype == torch.bfloat16
    assert grads["value"].dtype == torch.bfloat16 and grads["sampling_locations"].dtype == torch.float32
    want, _ = run(ms_deform_attn_reference, {**inputs, "value": value.float()})
    assert_close_relative(out.float(), want, 1e-2, "bf16 output")  # bf16 keeps 8 bits of mantissa


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cpu_goes_through_float32(dtype: torch.dtype) -> None:
    inputs = make_inputs(dtype=dtype)
    out, grads = run(ms_deform_attn, inputs)
    assert out.dtype == dtype and all(g.dtype == dtype for g in grads.values())
    want, _ = run(ms_deform_attn_reference, {k: v.float() if v.is_floating_point() else v for k, v in inputs.items()})
    assert_close_relative(out.float(), want, 1e-2, "output")


def _no_kernel_allowed(device_type: str) -> None:
    raise AssertionError(f"the compiled kernel was asked for ({device_type})")


def test_objmtl_no_ext_uses_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJMTL_NO_EXT", "1")
    monkeypatch.setattr(build, "get_extension", _no_kernel_allowed)
    inputs = make_inputs()
    out, _ = run(ms_deform_attn, inputs)
    assert not uses_kernel(out)
    torch.testing.assert_close(out, run(ms_deform_attn_reference, inputs)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="but value has S = 30"):  # the same checks as the kernel's path
        ms_deform_attn(**{**inputs, "spatial_shapes": torch.tensor([[6, 4], [3, 3]])})


def test_tracing_uses_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "get_extension", _no_kernel_allowed)
    inputs = make_inputs(dtype=torch.float32)
    shapes = inputs["spatial_shapes"]

    def f(value: Tensor, locations: Tensor, weights: Tensor) -> Tensor:
        return ms_deform_attn(value, shapes, inputs["level_start_index"], locations, weights)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constant sizes
        traced = torch.jit.trace(f, tuple(inputs[k] for k in GRADS), check_trace=False)
    assert "grid_sampler" in str(traced.graph)


def test_one_warning_naming_why_when_the_build_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(build, "get_extension", lambda device_type: (None, "the compiler exploded"))
    monkeypatch.setattr(op_module, "_warned", set())
    inputs = make_inputs()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outs = [run(ms_deform_attn, inputs)[0] for _ in range(3)]
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "the compiler exploded" in messages[0] and "reference" in messages[0]
    torch.testing.assert_close(outs[0], run(ms_deform_attn_reference, inputs)[0], rtol=0, atol=0)


def test_msdeformattn_module_on_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=2)
    with torch.no_grad():  # leave the paper's init (zero offsets' weights) for something less symmetric
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    shapes = torch.tensor([[8, 6], [4, 3]])
    starts = torch.tensor([0, 48])
    query, source = torch.randn(2, 10, 32), torch.randn(2, 60, 32)
    ref_points = torch.rand(2, 10, 2, 2)
    mask = torch.zeros(2, 60, dtype=torch.bool)
    mask[1, 50:] = True

    def forward_backward() -> tuple[Tensor, list[Tensor]]:
        module.zero_grad()
        out = module(query, ref_points, source, shapes, starts, mask)
        out.square().sum().backward()
        return out.detach(), [p.grad.clone() for p in module.parameters()]

    out, grads = forward_backward()
    monkeypatch.setenv("OBJMTL_NO_EXT", "1")
    want, want_grads = forward_backward()
    assert out.shape == (2, 10, 32)
    assert_close_relative(out, want, 1e-5, "output")
    for (name, _), g, w in zip(module.named_parameters(), grads, want_grads, strict=True):
        assert_close_relative(g, w, 1e-4, name)


# --- the CUDA kernel: needs a GPU --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda_kernel() -> Iterator[None]:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)")
    if build.find_cuda_toolkit() is None:
        message = "a GPU but no nvcc (set CUDA_HOME): the CUDA kernel cannot be built"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    require_built("cuda")
    yield
    require_built("cpu")


GPU_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 5e-3}


@pytest.mark.gpu
@pytest.mark.parametrize("channels", [32, 48, 5])  # one warp segment per head; several; one lane per head
@pytest.mark.parametrize("dtype", list(GPU_TOLERANCE))
def test_cuda_kernel_matches_reference(cuda_kernel: None, dtype: torch.dtype, channels: int) -> None:
    inputs = make_inputs(n=3, heads=2, channels=channels, shapes=((9, 7), (4, 5), (2, 2)), queries=40, points=3,
                         dtype=dtype, device="cuda")
    got, got_grads = run(ms_deform_attn, inputs, im2col_step=2)
    assert uses_kernel(ms_deform_attn(**{k: v.clone().requires_grad_() if k in GRADS else v for k, v in inputs.items()}))
    want, want_grads = run(ms_deform_attn_reference, {k: v.double() if v.is_floating_point() else v
                                                      for k, v in inputs.items()})
    assert got.dtype == dtype and got.is_cuda
    tol = GPU_TOLERANCE[dtype]
    assert_close_relative(got, want, tol, "output")
    for k in GRADS:
        assert got_grads[k].dtype == dtype
        assert_close_relative(got_grads[k], want_grads[k], tol * (4 if dtype == torch.float16 else 1), k)


@pytest.mark.gpu
def test_cuda_kernel_edge_cases(cuda_kernel: None) -> None:
    empty = make_inputs(queries=0, device="cuda", dtype=torch.float32)
    out, grads = run(ms_deform_attn, empty)
    assert out.shape == (2, 0, 15) and not grads["value"].any()
    inputs = make_inputs(low=0.2, high=0.8, device="cuda")
    inputs["sampling_locations"][0, 3, 1, 0, 0, 0] = float("nan")
    out, grads = run(ms_deform_attn, inputs)
    assert out.view(2, 7, 3, 5)[0, 3, 1].isnan().all() and out.view(2, 7, 3, 5)[1].isfinite().all()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf16 = {**make_inputs(device="cuda", dtype=torch.float32)}
        bf16["value"] = bf16["value"].bfloat16()
        assert ms_deform_attn(**bf16).dtype == torch.bfloat16
