"""Compiled ops with a CPU kernel, a CUDA kernel and a pure-PyTorch reference."""

from objmtl.ops.ms_deform_attn import ms_deform_attn
from objmtl.ops.ms_deform_attn_module import DeformAttention, MSDeformAttn
from objmtl.ops.ms_deform_attn_reference import ms_deform_attn_reference

__all__ = ["DeformAttention", "MSDeformAttn", "ms_deform_attn", "ms_deform_attn_reference"]
