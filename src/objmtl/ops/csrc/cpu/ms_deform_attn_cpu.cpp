// Multi-scale deformable attention on the CPU: forward and backward, float and double.
//
// Forward parallelises over (batch, query) pairs: each task owns its output rows.
// Backward parallelises over (batch, head) pairs: each task owns value[n, :, m, :]'s gradient, so grad_value
// needs no atomics, and the rows of the location and attention-weight gradients it writes are its own too.
// The innermost loops run over the D channels of one head, contiguous in memory, four bilinear corners at a
// time; corners outside the map read a row of zeros (and write a scratch row), so those loops never branch.
#include "../ms_deform_attn.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <limits>
#include <vector>

namespace objmtl {
namespace {

// The four bilinear corners of one sampling location, in the order (y0, x0), (y0, x1), (y1, x0), (y1, x1).
template <typename T>
struct Corners {
  int64_t row[4];  // index in the level's H * W map, or -1 outside
  T weight[4];     // bilinear weights (zero where row is -1)
  T ly, lx;        // fractional parts: y - y0, x - x0
  bool any;        // false: the location is too far out to touch the map
  bool nan;        // the location is NaN
};

// align_corners=False: x in [0, 1] maps to pixel x * W - 0.5; zeros outside the map.
template <typename T>
inline Corners<T> corners(T x, T y, int64_t height, int64_t width) {
  Corners<T> c;
  c.nan = std::isnan(x) || std::isnan(y);
  const T h_im = y * static_cast<T>(height) - T(0.5);
  const T w_im = x * static_cast<T>(width) - T(0.5);
  c.any = !c.nan && h_im > T(-1) && w_im > T(-1) && h_im < static_cast<T>(height) &&
          w_im < static_cast<T>(width);
  if (!c.any) return c;
  const int64_t y0 = static_cast<int64_t>(std::floor(h_im));
  const int64_t x0 = static_cast<int64_t>(std::floor(w_im));
  c.ly = h_im - static_cast<T>(y0);
  c.lx = w_im - static_cast<T>(x0);
  const T hy = T(1) - c.ly, hx = T(1) - c.lx;
  const bool in_y0 = y0 >= 0, in_y1 = y0 + 1 < height, in_x0 = x0 >= 0, in_x1 = x0 + 1 < width;
  c.row[0] = in_y0 && in_x0 ? y0 * width + x0 : -1;
  c.row[1] = in_y0 && in_x1 ? y0 * width + x0 + 1 : -1;
  c.row[2] = in_y1 && in_x0 ? (y0 + 1) * width + x0 : -1;
  c.row[3] = in_y1 && in_x1 ? (y0 + 1) * width + x0 + 1 : -1;
  c.weight[0] = c.row[0] >= 0 ? hy * hx : T(0);
  c.weight[1] = c.row[1] >= 0 ? hy * c.lx : T(0);
  c.weight[2] = c.row[2] >= 0 ? c.ly * hx : T(0);
  c.weight[3] = c.row[3] >= 0 ? c.ly * c.lx : T(0);
  return c;
}

// out[d] += w0 * v0[d] + w1 * v1[d] + w2 * v2[d] + w3 * v3[d]
template <typename T>
inline void accumulate_sample(int64_t channels, T* __restrict__ out, const T* __restrict__ v0,
                              const T* __restrict__ v1, const T* __restrict__ v2, const T* __restrict__ v3,
                              T w0, T w1, T w2, T w3) {
#pragma omp simd
  for (int64_t d = 0; d < channels; ++d) {
    out[d] += w0 * v0[d] + w1 * v1[d] + w2 * v2[d] + w3 * v3[d];
  }
}

// dot[k] = sum_d g[d] * v_k[d] and gv_k[d] += s_k * g[d] for the four corners k, in one pass over D.
template <typename T>
inline void backward_corners(int64_t channels, const T* __restrict__ g, const T* __restrict__ v0,
                             const T* __restrict__ v1, const T* __restrict__ v2, const T* __restrict__ v3,
                             T* __restrict__ gv0, T* __restrict__ gv1, T* __restrict__ gv2,
                             T* __restrict__ gv3,
                             T s0, T s1, T s2, T s3, T dot[4]) {
  T d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
  for (int64_t d = 0; d < channels; ++d) {
    const T gd = g[d];
    d0 += gd * v0[d];
    d1 += gd * v1[d];
    d2 += gd * v2[d];
    d3 += gd * v3[d];
    gv0[d] += s0 * gd;
    gv1[d] += s1 * gd;
    gv2[d] += s2 * gd;
    gv3[d] += s3 * gd;
  }
  dot[0] = d0;
  dot[1] = d1;
  dot[2] = d2;
  dot[3] = d3;
}

struct Sizes {
  int64_t batch, spatial, heads, channels, queries, levels, points;
};

Sizes sizes_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0), value.size(1), value.size(2), value.size(3), sampling_locations.size(1),
          sampling_locations.size(3), sampling_locations.size(4)};
}

template <typename T>
void forward_kernel(const T* value, const int64_t* shapes, const int64_t* starts, const T* locations,
                    const T* weights, T* output, const Sizes& z) {
  const int64_t row_stride = z.heads * z.channels;  // between neighbouring pixels of value
  const int64_t per_query = z.heads * z.levels * z.points;
  // ~ work per (batch, query) pair: M * L * P samples of 4 * D multiply-adds
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, per_query * z.channels));
  at::parallel_for(0, z.batch * z.queries, grain, [&](int64_t begin, int64_t end) {
    const std::vector<T> zeros(z.channels, T(0));
    const T nan = std::numeric_limits<T>::quiet_NaN();
    for (int64_t nq = begin; nq < end; ++nq) {
      const T* value_n = value + (nq / z.queries) * z.spatial * row_stride;
      for (int64_t m = 0; m < z.heads; ++m) {
        const int64_t head = nq * z.heads + m;
        T* out = output + head * z.channels;
        const T* loc = locations + head * z.levels * z.points * 2;
        const T* attn = weights + head * z.levels * z.points;
        for (int64_t l = 0; l < z.levels; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          const T* value_l = value_n + starts[l] * row_stride + m * z.channels;
          for (int64_t p = 0; p < z.points; ++p, loc += 2, ++attn) {
            const Corners<T> c = corners(loc[0], loc[1], height, width);
            if (c.nan) {
              for (int64_t d = 0; d < z.channels; ++d) out[d] += *attn * nan;
              continue;
            }
            if (!c.any) continue;
            const T* v[4];
            for (int k = 0; k < 4; ++k) v[k] = c.row[k] >= 0 ? value_l + c.row[k] * row_stride : zeros.data();
            const T a = *attn;
            accumulate_sample(z.channels, out, v[0], v[1], v[2], v[3], a * c.weight[0], a * c.weight[1],
                              a * c.weight[2], a * c.weight[3]);
          }
        }
      }
    }
  });
}

template <typename T>
void backward_kernel(const T* value, const int64_t* shapes, const int64_t* starts, const T* locations,
                     const T* weights, const T* grad_output, T* grad_value, T* grad_locations,
                     T* grad_weights, const Sizes& z) {
  const int64_t row_stride = z.heads * z.channels;
  at::parallel_for(0, z.batch * z.heads, 1, [&](int64_t begin, int64_t end) {
    const std::vector<T> zeros(z.channels, T(0));
    std::vector<T> scratch(4 * z.channels);  // gradients of out-of-map corners land here, one row per corner
    const T nan = std::numeric_limits<T>::quiet_NaN();
    for (int64_t nm = begin; nm < end; ++nm) {
      const int64_t n = nm / z.heads, m = nm % z.heads;
      const T* value_nm = value + n * z.spatial * row_stride + m * z.channels;
      T* grad_value_nm = grad_value + n * z.spatial * row_stride + m * z.channels;
      for (int64_t q = 0; q < z.queries; ++q) {
        const int64_t head = (n * z.queries + q) * z.heads + m;
        const T* g = grad_output + head * z.channels;
        const T* loc = locations + head * z.levels * z.points * 2;
        const T* attn = weights + head * z.levels * z.points;
        T* grad_loc = grad_locations + head * z.levels * z.points * 2;
        T* grad_attn = grad_weights + head * z.levels * z.points;
        for (int64_t l = 0; l < z.levels; ++l) {
          const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
          const T* value_l = value_nm + starts[l] * row_stride;
          T* grad_value_l = grad_value_nm + starts[l] * row_stride;
          for (int64_t p = 0; p < z.points; ++p, loc += 2, grad_loc += 2, ++attn, ++grad_attn) {
            const Corners<T> c = corners(loc[0], loc[1], height, width);
            if (c.nan) {
              *grad_attn = nan;
              grad_loc[0] = grad_loc[1] = nan;
              continue;
            }
            if (!c.any) continue;
            const T a = *attn;
            const T* v[4];
            T* gv[4];
            for (int k = 0; k < 4; ++k) {
              const bool in = c.row[k] >= 0;
              v[k] = in ? value_l + c.row[k] * row_stride : zeros.data();
              gv[k] = in ? grad_value_l + c.row[k] * row_stride : scratch.data() + k * z.channels;
            }
            T dot[4];  // dot[k] = <grad_output, value at corner k>
            backward_corners(z.channels, g, v[0], v[1], v[2], v[3], gv[0], gv[1], gv[2], gv[3],
                             a * c.weight[0], a * c.weight[1], a * c.weight[2], a * c.weight[3], dot);
            *grad_attn = c.weight[0] * dot[0] + c.weight[1] * dot[1] + c.weight[2] * dot[2] +
                         c.weight[3] * dot[3];
            // d(weights)/dx and /dy of the bilinear weights, times the pixel scale (x * W - 0.5)
            const T hy = T(1) - c.ly, hx = T(1) - c.lx;
            const T d_w_im = hy * (dot[1] - dot[0]) + c.ly * (dot[3] - dot[2]);
            const T d_h_im = hx * (dot[2] - dot[0]) + c.lx * (dot[3] - dot[1]);
            grad_loc[0] = a * d_w_im * static_cast<T>(width);
            grad_loc[1] = a * d_h_im * static_cast<T>(height);
          }
        }
      }
    }
  });
}

}  // namespace

void ms_deform_attn_forward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                const at::Tensor& attention_weights, at::Tensor& output) {
  const Sizes z = sizes_of(value, sampling_locations);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_forward_cpu", [&] {
    forward_kernel<scalar_t>(value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
                             level_start_index.const_data_ptr<int64_t>(),
                             sampling_locations.const_data_ptr<scalar_t>(),
                             attention_weights.const_data_ptr<scalar_t>(),
                             output.mutable_data_ptr<scalar_t>(), z);
  });
}

void ms_deform_attn_backward_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                 const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                 const at::Tensor& attention_weights, const at::Tensor& grad_output,
                                 at::Tensor& grad_value, at::Tensor& grad_sampling_locations,
                                 at::Tensor& grad_attention_weights) {
  const Sizes z = sizes_of(value, sampling_locations);
  AT_DISPATCH_FLOATING_TYPES(value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
    backward_kernel<scalar_t>(value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
                              level_start_index.const_data_ptr<int64_t>(),
                              sampling_locations.const_data_ptr<scalar_t>(),
                              attention_weights.const_data_ptr<scalar_t>(),
                              grad_output.const_data_ptr<scalar_t>(),
                              grad_value.mutable_data_ptr<scalar_t>(),
                              grad_sampling_locations.mutable_data_ptr<scalar_t>(),
                              grad_attention_weights.mutable_data_ptr<scalar_t>(), z);
  });
}

}  // namespace objmtl
