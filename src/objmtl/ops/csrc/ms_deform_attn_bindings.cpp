// Python bindings of multi-scale deformable attention: checks, batch chunking (im2col_step) and the choice of
// kernel by device (CUDA kernel for CUDA tensors where built with OBJMTL_WITH_CUDA, CPU kernel otherwise).
#include "ms_deform_attn.h"

#include <torch/extension.h>

#include <algorithm>
#include <vector>

namespace objmtl {
namespace {

void check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                  const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                  const at::Tensor& attention_weights, int64_t im2col_step) {
  TORCH_CHECK(value.dim() == 4, "value must be [N, S, M, D], got ", value.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(5) == 2,
              "sampling_locations must be [N, Lq, M, L, P, 2], got ", sampling_locations.sizes());
  TORCH_CHECK(attention_weights.dim() == 5, "attention_weights must be [N, Lq, M, L, P], got ",
              attention_weights.sizes());
  const int64_t n = value.size(0), m = value.size(2), levels = spatial_shapes.size(0);
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2, "spatial_shapes must be [L, 2], got ",
              spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == levels,
              "level_start_index must be [L] with L = ", levels, ", got ", level_start_index.sizes());
  TORCH_CHECK(sampling_locations.size(0) == n && sampling_locations.size(2) == m &&
                  sampling_locations.size(3) == levels,
              "sampling_locations ", sampling_locations.sizes(), " does not match value ", value.sizes(),
              " and L = ", levels);
  TORCH_CHECK(attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights ", attention_weights.sizes(), " does not match sampling_locations ",
              sampling_locations.sizes());
  TORCH_CHECK(value.scalar_type() == sampling_locations.scalar_type() &&
                  value.scalar_type() == attention_weights.scalar_type(),
              "value, sampling_locations and attention_weights must share one dtype");
  TORCH_CHECK(sampling_locations.device() == value.device() && attention_weights.device() == value.device(),
              "value, sampling_locations and attention_weights must be on one device");
  TORCH_CHECK(im2col_step > 0, "im2col_step must be positive, got ", im2col_step);
}

// The level tables as int64 on value's device, contiguous.
at::Tensor level_table(const at::Tensor& t, const at::Tensor& value) {
  return t.to(value.device(), at::kLong).contiguous();
}

bool use_cuda(const at::Tensor& value) {
  if (!value.is_cuda()) {
    TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn has no kernel for device ", value.device());
    return false;
  }
#ifdef OBJMTL_WITH_CUDA
  return true;
#else
  TORCH_CHECK(false, "this build of ms_deform_attn has no CUDA kernel (built without nvcc)");
  return false;
#endif
}

}  // namespace

// Returns [N, Lq, M * D].
at::Tensor ms_deform_attn_forward(const at::Tensor& value_in, const at::Tensor& spatial_shapes_in,
                                  const at::Tensor& level_start_index_in,
                                  const at::Tensor& sampling_locations_in,
                                  const at::Tensor& attention_weights_in, int64_t im2col_step) {
  check_inputs(value_in, spatial_shapes_in, level_start_index_in, sampling_locations_in, attention_weights_in,
               im2col_step);
  const bool cuda = use_cuda(value_in);
  const at::Tensor value = value_in.contiguous();
  const at::Tensor spatial_shapes = level_table(spatial_shapes_in, value);
  const at::Tensor level_start_index = level_table(level_start_index_in, value);
  const at::Tensor locations = sampling_locations_in.contiguous();
  const at::Tensor weights = attention_weights_in.contiguous();
  const int64_t n = value.size(0), lq = locations.size(1), m = value.size(2), d = value.size(3);
  at::Tensor output = at::zeros({n, lq, m, d}, value.options());
  if (output.numel() == 0 || value.size(1) == 0) return output.view({n, lq, m * d});
  for (int64_t start = 0; start < n; start += im2col_step) {
    const int64_t len = std::min(im2col_step, n - start);
    at::Tensor out = output.narrow(0, start, len);
    const at::Tensor v = value.narrow(0, start, len), loc = locations.narrow(0, start, len);
    const at::Tensor w = weights.narrow(0, start, len);
#ifdef OBJMTL_WITH_CUDA
    if (cuda) {
      ms_deform_attn_forward_cuda(v, spatial_shapes, level_start_index, loc, w, out);
      continue;
    }
#endif
    ms_deform_attn_forward_cpu(v, spatial_shapes, level_start_index, loc, w, out);
  }
  (void)cuda;
  return output.view({n, lq, m * d});
}

// Returns the gradients of value, sampling_locations and attention_weights, in the inputs' dtype.
std::vector<at::Tensor> ms_deform_attn_backward(const at::Tensor& value_in,
                                                const at::Tensor& spatial_shapes_in,
                                                const at::Tensor& level_start_index_in,
                                                const at::Tensor& sampling_locations_in,
                                                const at::Tensor& attention_weights_in,
                                                const at::Tensor& grad_output_in, int64_t im2col_step) {
  check_inputs(value_in, spatial_shapes_in, level_start_index_in, sampling_locations_in, attention_weights_in,
               im2col_step);
  const bool cuda = use_cuda(value_in);
  const at::Tensor value = value_in.contiguous();
  const at::Tensor spatial_shapes = level_table(spatial_shapes_in, value);
  const at::Tensor level_start_index = level_table(level_start_index_in, value);
  const at::Tensor locations = sampling_locations_in.contiguous();
  const at::Tensor weights = attention_weights_in.contiguous();
  const int64_t n = value.size(0), lq = locations.size(1), m = value.size(2), d = value.size(3);
  TORCH_CHECK(grad_output_in.numel() == n * lq * m * d, "grad_output must have ", n * lq * m * d,
              " elements, got ", grad_output_in.sizes());
  const at::Tensor grad_output = grad_output_in.to(value.scalar_type()).contiguous().view({n, lq, m, d});
  // Half inputs accumulate their gradients in float (atomicAdd on half loses too much).
  const auto acc = value.scalar_type() == at::kHalf ? at::kFloat : value.scalar_type();
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(acc));
  at::Tensor grad_locations = at::zeros(locations.sizes(), locations.options().dtype(acc));
  at::Tensor grad_weights = at::zeros(weights.sizes(), weights.options().dtype(acc));
  if (grad_output.numel() > 0 && value.size(1) > 0) {
    for (int64_t start = 0; start < n; start += im2col_step) {
      const int64_t len = std::min(im2col_step, n - start);
      const at::Tensor v = value.narrow(0, start, len), loc = locations.narrow(0, start, len);
      const at::Tensor w = weights.narrow(0, start, len), g = grad_output.narrow(0, start, len);
      at::Tensor gv = grad_value.narrow(0, start, len), gl = grad_locations.narrow(0, start, len);
      at::Tensor gw = grad_weights.narrow(0, start, len);
#ifdef OBJMTL_WITH_CUDA
      if (cuda) {
        ms_deform_attn_backward_cuda(v, spatial_shapes, level_start_index, loc, w, g, gv, gl, gw);
        continue;
      }
#endif
      ms_deform_attn_backward_cpu(v, spatial_shapes, level_start_index, loc, w, g, gv, gl, gw);
    }
  }
  (void)cuda;
  const auto dtype = value.scalar_type();
  return {grad_value.to(dtype), grad_locations.to(dtype), grad_weights.to(dtype)};
}

}  // namespace objmtl

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "objmtl multi-scale deformable attention kernels (CPU, and CUDA when built with nvcc)";
  m.def("forward", &objmtl::ms_deform_attn_forward,
        "value [N,S,M,D], spatial_shapes [L,2], level_start_index [L], sampling_locations [N,Lq,M,L,P,2], "
        "attention_weights [N,Lq,M,L,P], im2col_step -> [N,Lq,M*D]",
        py::arg("value"), py::arg("spatial_shapes"), py::arg("level_start_index"),
        py::arg("sampling_locations"), py::arg("attention_weights"), py::arg("im2col_step"));
  m.def("backward", &objmtl::ms_deform_attn_backward,
        "-> [grad_value, grad_sampling_locations, grad_attention_weights]", py::arg("value"),
        py::arg("spatial_shapes"), py::arg("level_start_index"), py::arg("sampling_locations"),
        py::arg("attention_weights"), py::arg("grad_output"), py::arg("im2col_step"));
#ifdef OBJMTL_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
