// Multi-scale deformable attention (Zhu et al., "Deformable DETR", ICLR 2021): kernel declarations.
//
// Shapes (all tensors contiguous when they reach a kernel; the bindings make them so):
//   value              [N, S, M, D]        S = sum over levels of H_l * W_l, levels concatenated row-major
//   spatial_shapes     [L, 2] int64        (H_l, W_l)
//   level_start_index  [L] int64           offset of level l in S
//   sampling_locations [N, Lq, M, L, P, 2] (x, y) in [0, 1]; x * W_l - 0.5 is the pixel column
//   attention_weights  [N, Lq, M, L, P]
//   output             [N, Lq, M, D]       (the caller views it as [N, Lq, M * D])
//
// Sampling is bilinear with zeros outside the map (grid_sample's padding_mode="zeros", align_corners=False):
// a location whose pixel coordinate lies at or beyond one pixel outside the map contributes nothing.
// A NaN location yields a NaN sample (it propagates; it is never turned into an index).
#pragma once

#include <ATen/core/Tensor.h>

namespace objmtl {

// CPU kernels (csrc/cpu/ms_deform_attn_cpu.cpp): float and double. `output` and the gradients must be
// zero-filled tensors of the inputs' shapes; the kernels accumulate into them.
void ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                const at::Tensor& attention_weights, at::Tensor& output);

void ms_deform_attn_backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, const at::Tensor& grad_output,
                                 at::Tensor& grad_value, at::Tensor& grad_sampling_locations,
                                 at::Tensor& grad_attention_weights);

#ifdef OBJMTL_WITH_CUDA
// CUDA kernels (csrc/cuda/ms_deform_attn_cuda.cu): float, double and half. Same contract as the CPU ones;
// the gradients may be of a wider type than the inputs (float for half inputs) and are accumulated with
// atomicAdd.
void ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, at::Tensor& output);

void ms_deform_attn_backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                  const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                  const at::Tensor& attention_weights, const at::Tensor& grad_output,
                                  at::Tensor& grad_value, at::Tensor& grad_sampling_locations,
                                  at::Tensor& grad_attention_weights);
#endif

}  // namespace objmtl
