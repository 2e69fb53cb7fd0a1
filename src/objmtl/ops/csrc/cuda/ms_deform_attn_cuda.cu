// Multi-scale deformable attention on CUDA: forward and backward, float, double and half.
//
// One thread per output element (batch, query, head, channel); neighbouring threads read neighbouring
// channels of one pixel, so loads of value coalesce. Half inputs compute in float (at::opmath_type).
// Backward: each thread scatters its channel's share of grad_value with atomicAdd (several queries sample
// one pixel), and its share of the attention-weight and location gradients, summed over channels, is
// reduced across the lanes that hold the same (batch, query, head) with warp shuffles before one lane adds
// it atomically (the head's channels are all in one segment of lanes when D is a power of two up to 32;
// other D split into several segments that add to the same address).
#include "../ms_deform_attn.h"

// Only c10's CUDA headers (ATen/cuda/CUDAContext.h would need the cuBLAS/cuSPARSE headers too, which a
// minimal toolkit of nvcc and the runtime lacks).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

namespace objmtl {
namespace {

constexpr int kThreads = 256;  // a multiple of the warp size (the backward's lane segments rely on it)

struct Sizes {
  int64_t total;  // N * Lq * M * D threads
  int64_t spatial, heads, channels, queries, levels, points;
};

// Bilinear sample of one channel; `v` points at pixel 0 of the level, `stride` elements between pixels.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t sample(const scalar_t* __restrict__ v, int64_t stride, int64_t height,
                                        int64_t width, acc_t x, acc_t y) {
  if (isnan(x) || isnan(y)) return x + y;  // NaN propagates
  const acc_t h_im = y * static_cast<acc_t>(height) - acc_t(0.5);
  const acc_t w_im = x * static_cast<acc_t>(width) - acc_t(0.5);
  if (!(h_im > acc_t(-1) && w_im > acc_t(-1) && h_im < static_cast<acc_t>(height) &&
        w_im < static_cast<acc_t>(width))) {
    return acc_t(0);
  }
  const int64_t y0 = static_cast<int64_t>(floor(h_im)), x0 = static_cast<int64_t>(floor(w_im));
  const acc_t ly = h_im - static_cast<acc_t>(y0), lx = w_im - static_cast<acc_t>(x0);
  const acc_t hy = acc_t(1) - ly, hx = acc_t(1) - lx;
  acc_t out = 0;
  if (y0 >= 0 && x0 >= 0) out += hy * hx * static_cast<acc_t>(v[(y0 * width + x0) * stride]);
  if (y0 >= 0 && x0 + 1 < width) out += hy * lx * static_cast<acc_t>(v[(y0 * width + x0 + 1) * stride]);
  if (y0 + 1 < height && x0 >= 0) out += ly * hx * static_cast<acc_t>(v[((y0 + 1) * width + x0) * stride]);
  if (y0 + 1 < height && x0 + 1 < width) {
    out += ly * lx * static_cast<acc_t>(v[((y0 + 1) * width + x0 + 1) * stride]);
  }
  return out;
}

// Backward of a * g * sample(x, y) for one channel: adds to grad_value (atomically) and returns this
// channel's terms of d/da (g * sample), d/dx and d/dy.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void sample_backward(const scalar_t* __restrict__ v, acc_t* grad_v, int64_t stride,
                                                int64_t height, int64_t width, acc_t x, acc_t y, acc_t a,
                                                acc_t g, acc_t& grad_a, acc_t& grad_x, acc_t& grad_y) {
  grad_a = grad_x = grad_y = acc_t(0);
  if (isnan(x) || isnan(y)) {
    grad_a = grad_x = grad_y = x + y;
    return;
  }
  const acc_t h_im = y * static_cast<acc_t>(height) - acc_t(0.5);
  const acc_t w_im = x * static_cast<acc_t>(width) - acc_t(0.5);
  if (!(h_im > acc_t(-1) && w_im > acc_t(-1) && h_im < static_cast<acc_t>(height) &&
        w_im < static_cast<acc_t>(width))) {
    return;
  }
  const int64_t y0 = static_cast<int64_t>(floor(h_im)), x0 = static_cast<int64_t>(floor(w_im));
  const acc_t ly = h_im - static_cast<acc_t>(y0), lx = w_im - static_cast<acc_t>(x0);
  const acc_t hy = acc_t(1) - ly, hx = acc_t(1) - lx;
  const acc_t ag = a * g;
  acc_t v00 = 0, v01 = 0, v10 = 0, v11 = 0;
  if (y0 >= 0 && x0 >= 0) {
    const int64_t i = (y0 * width + x0) * stride;
    v00 = static_cast<acc_t>(v[i]);
    atomicAdd(grad_v + i, hy * hx * ag);
  }
  if (y0 >= 0 && x0 + 1 < width) {
    const int64_t i = (y0 * width + x0 + 1) * stride;
    v01 = static_cast<acc_t>(v[i]);
    atomicAdd(grad_v + i, hy * lx * ag);
  }
  if (y0 + 1 < height && x0 >= 0) {
    const int64_t i = ((y0 + 1) * width + x0) * stride;
    v10 = static_cast<acc_t>(v[i]);
    atomicAdd(grad_v + i, ly * hx * ag);
  }
  if (y0 + 1 < height && x0 + 1 < width) {
    const int64_t i = ((y0 + 1) * width + x0 + 1) * stride;
    v11 = static_cast<acc_t>(v[i]);
    atomicAdd(grad_v + i, ly * lx * ag);
  }
  grad_a = g * (hy * hx * v00 + hy * lx * v01 + ly * hx * v10 + ly * lx * v11);
  grad_x = ag * static_cast<acc_t>(width) * (hy * (v01 - v00) + ly * (v11 - v10));
  grad_y = ag * static_cast<acc_t>(height) * (hx * (v10 - v00) + lx * (v11 - v01));
}

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                               const int64_t* __restrict__ starts, const scalar_t* __restrict__ locations,
                               const scalar_t* __restrict__ weights, scalar_t* __restrict__ output, Sizes z) {
  const int64_t stride = z.heads * z.channels;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < z.total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t d = i % z.channels, head = i / z.channels;  // head = (n * Lq + q) * M + m
    const int64_t m = head % z.heads, n = head / (z.heads * z.queries);
    const scalar_t* value_nm = value + n * z.spatial * stride + m * z.channels + d;
    const scalar_t* loc = locations + head * z.levels * z.points * 2;
    const scalar_t* attn = weights + head * z.levels * z.points;
    acc_t acc = 0;
    for (int64_t l = 0; l < z.levels; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
      const scalar_t* value_l = value_nm + starts[l] * stride;
      for (int64_t p = 0; p < z.points; ++p, loc += 2, ++attn) {
        acc += static_cast<acc_t>(*attn) * sample<scalar_t, acc_t>(value_l, stride, height, width,
                                                                   static_cast<acc_t>(loc[0]),
                                                                   static_cast<acc_t>(loc[1]));
      }
    }
    output[i] = static_cast<scalar_t>(acc);
  }
}

// `segment`: lanes that hold channels of one head (a power of two dividing both 32 and D).
template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
                                const int64_t* __restrict__ starts, const scalar_t* __restrict__ locations,
                                const scalar_t* __restrict__ weights,
                                const scalar_t* __restrict__ grad_output,
                                acc_t* grad_value, acc_t* grad_locations, acc_t* grad_weights, Sizes z,
                                int segment) {
  const int64_t stride = z.heads * z.channels;
  const int lane = threadIdx.x % 32;
  // Every thread of a block runs the same iterations (base is block-uniform): the shuffles need whole warps.
  for (int64_t base = blockIdx.x * static_cast<int64_t>(blockDim.x); base < z.total;
       base += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t i = base + threadIdx.x;
    const bool active = i < z.total;
    const int64_t j = active ? i : 0;
    const int64_t d = j % z.channels, head = j / z.channels;
    const int64_t m = head % z.heads, n = head / (z.heads * z.queries);
    const int64_t offset = n * z.spatial * stride + m * z.channels + d;
    const acc_t g = active ? static_cast<acc_t>(grad_output[j]) : acc_t(0);
    const scalar_t* loc = locations + head * z.levels * z.points * 2;
    const scalar_t* attn = weights + head * z.levels * z.points;
    acc_t* grad_loc = grad_locations + head * z.levels * z.points * 2;
    acc_t* grad_attn = grad_weights + head * z.levels * z.points;
    for (int64_t l = 0; l < z.levels; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
      const int64_t level_offset = offset + starts[l] * stride;
      for (int64_t p = 0; p < z.points; ++p, loc += 2, grad_loc += 2, ++attn, ++grad_attn) {
        acc_t grad_a = 0, grad_x = 0, grad_y = 0;
        if (active) {
          sample_backward<scalar_t, acc_t>(value + level_offset, grad_value + level_offset, stride, height,
                                           width, static_cast<acc_t>(loc[0]), static_cast<acc_t>(loc[1]),
                                           static_cast<acc_t>(*attn), g, grad_a, grad_x, grad_y);
        }
        for (int delta = segment / 2; delta > 0; delta /= 2) {
          grad_a += __shfl_down_sync(0xffffffffu, grad_a, delta, segment);
          grad_x += __shfl_down_sync(0xffffffffu, grad_x, delta, segment);
          grad_y += __shfl_down_sync(0xffffffffu, grad_y, delta, segment);
        }
        if (active && lane % segment == 0) {
          atomicAdd(grad_attn, grad_a);
          atomicAdd(grad_loc, grad_x);
          atomicAdd(grad_loc + 1, grad_y);
        }
      }
    }
  }
}

Sizes sizes_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  const int64_t n = value.size(0), lq = sampling_locations.size(1), m = value.size(2), d = value.size(3);
  return {n * lq * m * d, value.size(1), m, d, lq, sampling_locations.size(3), sampling_locations.size(4)};
}

unsigned blocks_for(int64_t total, c10::DeviceIndex device) {
  int processors = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&processors, cudaDevAttrMultiProcessorCount, device));
  const int64_t cap = static_cast<int64_t>(std::max(processors, 1)) * 64;
  const int64_t needed = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(needed, cap)));
}

int segment_for(int64_t channels) {
  int segment = 32;
  while (channels % segment) segment /= 2;
  return segment;
}

}  // namespace

void ms_deform_attn_forward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, at::Tensor& output) {
  const c10::cuda::CUDAGuard guard(value.device());
  const Sizes z = sizes_of(value, sampling_locations);
  if (z.total == 0) return;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(value.scalar_type(), "ms_deform_attn_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t, acc_t><<<blocks_for(z.total, value.device().index()), kThreads, 0, stream>>>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<scalar_t>(),
        attention_weights.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), z);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void ms_deform_attn_backward_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                  const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                  const at::Tensor& attention_weights, const at::Tensor& grad_output,
                                  at::Tensor& grad_value, at::Tensor& grad_sampling_locations,
                                  at::Tensor& grad_attention_weights) {
  const c10::cuda::CUDAGuard guard(value.device());
  const Sizes z = sizes_of(value, sampling_locations);
  if (z.total == 0) return;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    TORCH_CHECK(grad_value.scalar_type() == c10::CppTypeToScalarType<acc_t>::value,
                "ms_deform_attn_backward_cuda: gradients must be accumulated in ",
                c10::CppTypeToScalarType<acc_t>::value);
    backward_kernel<scalar_t, acc_t><<<blocks_for(z.total, value.device().index()), kThreads, 0, stream>>>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), sampling_locations.const_data_ptr<scalar_t>(),
        attention_weights.const_data_ptr<scalar_t>(), grad_output.const_data_ptr<scalar_t>(),
        grad_value.mutable_data_ptr<acc_t>(), grad_sampling_locations.mutable_data_ptr<acc_t>(),
        grad_attention_weights.mutable_data_ptr<acc_t>(), z, segment_for(z.channels));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace objmtl
