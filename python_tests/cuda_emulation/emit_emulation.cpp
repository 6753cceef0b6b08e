// Runs the CUDA emission kernels (csrc/cuda/emit_kernel.cuh) on the CPU through shim.h, with the
// plan packed by the same pack_plan and built by the same checks (csrc/emit_plan.cpp) as on a GPU.
// The kernels have no barriers, so the threads of the grid run one after another; the grid is an
// argument, so that tests also make each thread loop over several elements (grid-stride). Outputs
// start as NaN, so an element no thread writes shows. Test-only:
// python_tests/test_emit_cuda_emulated.py.
#include "shim.h"

#include "../../csrc/cuda/emit_kernel.cuh"

#include <torch/extension.h>

#include <limits>

using namespace ghn_ext;
using namespace ghn_ext::emit_detail;

namespace {

template <typename Body>
void run_grid(int64_t grid, int64_t threads, Body body) {
  TORCH_CHECK(grid >= 1 && threads >= 1, "grid and threads must be positive");
  gridDim.x = static_cast<unsigned>(grid);
  blockDim.x = static_cast<unsigned>(threads);
  for (int64_t b = 0; b < grid; ++b) {
    blockIdx.x = static_cast<unsigned>(b);
    for (int64_t t = 0; t < threads; ++t) {
      threadIdx.x = static_cast<unsigned>(t);
      body();
    }
  }
}

at::Tensor packed(const EmitPlan& plan, bool with_nodes) {
  at::Tensor table = at::empty({table_size(plan, with_nodes)}, at::kLong);
  pack_plan(plan, with_nodes, table.data_ptr<int64_t>());
  return table;
}

at::Tensor forward(const at::Tensor& blocks_in, const EmitPlan& plan, int64_t grid, int64_t threads) {
  const at::Tensor blocks = blocks_in.contiguous();
  at::Tensor out = at::full({plan.total}, std::numeric_limits<double>::quiet_NaN(), blocks.options());
  const at::Tensor table = packed(plan, false);
  const int64_t T = static_cast<int64_t>(plan.targets.size());
  const int64_t* offsets = table.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, blocks.scalar_type(), "emulate_emit", [&] {
    run_grid(grid, threads, [&] {
      emit_forward_kernel<scalar_t>(blocks.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), offsets,
                                    offsets + T + 1, T, plan.total, static_cast<int>(plan.Co),
                                    static_cast<int>(plan.Ci), static_cast<int>(plan.K));
    });
  });
  return out;
}

at::Tensor backward(const at::Tensor& grad_in, const EmitPlan& plan, c10::IntArrayRef block_shape,
                    int64_t grid, int64_t threads) {
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor grad_blocks = at::full(block_shape, std::numeric_limits<double>::quiet_NaN(), grad.options());
  if (plan.total == 0) return grad_blocks.zero_();  // as the host code: no launch
  const at::Tensor table = packed(plan, true);
  const int64_t T = static_cast<int64_t>(plan.targets.size());
  const int64_t* meta = table.data_ptr<int64_t>() + T + 1;
  const int64_t* node_ptr = meta + kMeta * T;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "emulate_emit_backward", [&] {
    run_grid(grid, threads, [&] {
      emit_backward_kernel<scalar_t>(grad.data_ptr<scalar_t>(), grad_blocks.data_ptr<scalar_t>(), meta,
                                     node_ptr, node_ptr + plan.N + 1, grad_blocks.numel(),
                                     static_cast<int>(plan.Co), static_cast<int>(plan.Ci),
                                     static_cast<int>(plan.K));
    });
  });
  return grad_blocks;
}

at::Tensor emit_nodes(const at::Tensor& blocks, std::vector<int64_t> node_index, std::vector<int64_t> shapes,
                      std::vector<int64_t> anchors, std::vector<double> scales, int64_t grid, int64_t threads) {
  emit_check_blocks(blocks);
  return forward(blocks, emit_make_plan(blocks.sizes(), node_index, shapes, anchors, scales), grid, threads);
}

at::Tensor emit_nodes_backward(const at::Tensor& grad, std::vector<int64_t> node_index,
                               std::vector<int64_t> shapes, std::vector<int64_t> anchors,
                               std::vector<double> scales, std::vector<int64_t> block_shape, int64_t grid,
                               int64_t threads) {
  const EmitPlan plan = emit_make_plan(block_shape, node_index, shapes, anchors, scales);
  emit_check_grad(grad, plan.total);
  return backward(grad, plan, block_shape, grid, threads);
}

at::Tensor emit_edges(const at::Tensor& blocks, std::vector<int64_t> piece_ptr, std::vector<int64_t> piece_block,
                      std::vector<int64_t> piece_channels, std::vector<int64_t> shapes,
                      std::vector<int64_t> anchors, std::vector<double> scales, int64_t grid, int64_t threads) {
  emit_check_blocks(blocks);
  return forward(blocks, emit_make_edge_plan(blocks.sizes(), piece_ptr, piece_block, piece_channels, shapes,
                                             anchors, scales), grid, threads);
}

at::Tensor emit_edges_backward(const at::Tensor& grad, std::vector<int64_t> piece_ptr,
                               std::vector<int64_t> piece_block, std::vector<int64_t> piece_channels,
                               std::vector<int64_t> shapes, std::vector<int64_t> anchors,
                               std::vector<double> scales, std::vector<int64_t> block_shape, int64_t grid,
                               int64_t threads) {
  const EmitPlan plan = emit_make_edge_plan(block_shape, piece_ptr, piece_block, piece_channels, shapes,
                                            anchors, scales);
  emit_check_grad(grad, plan.total);
  return backward(grad, plan, block_shape, grid, threads);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("emit_nodes", &emit_nodes);
  m.def("emit_nodes_backward", &emit_nodes_backward);
  m.def("emit_edges", &emit_edges);
  m.def("emit_edges_backward", &emit_edges_backward);
}
