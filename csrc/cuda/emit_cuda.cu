// CUDA implementation of ghn_ext::emit_weights and ghn_ext::_emit_weights_backward, and of their
// edge mode ghn_ext::emit_edge_weights / _emit_edge_weights_backward (same semantics as
// csrc/cpu/emit_cpu.cpp; checks shared through csrc/emit.h). In edge mode a plan target is a piece:
// it writes its columns of its weight's rows, row_stride apart; in node mode row_stride = i*kh*kw.
//
// The host validates the int lists (no device data is read, no sync) and uploads one packed int64
// table per call with a single asynchronous copy from pinned memory:
//   offsets      [T + 1]  the targets' numels accumulated, offsets[T] = total (strictly increasing):
//                         where each target's elements start in the order threads enumerate them
//   meta         [T * 10] node, o, i, kh, kw, row, col, bits of the float64 scale, flat offset of
//                         row 0, row_stride
//   node_ptr     [N + 1]  (backward only) targets grouped by node, CSR, target order kept
//   node_targets [T]
// Forward, one launch: one thread per output element (grid-stride), consecutive threads write
// consecutive outputs within a target's row (coalesced); a thread finds its target by binary search
// in `offsets` (a few KB, cached), decomposes its position into (a, b, y, x) with 32-bit arithmetic,
// writes flat offset + a * row_stride + (b, y, x) and reads
// block[node, a % Co, b % Ci, row + y, col + x] (neighbouring x are neighbouring addresses).
// Backward, one launch, deterministic gather (no atomics, no zero fill): one thread per entry of
// the block gradient walks its node's targets and, if the entry lies in the target's window, sums
// grad * scale over the copies a = p, p + Co, ..., b = q, q + Ci, ... in the same order as the CPU
// kernel, with explicitly rounded multiply and add (no FMA contraction): bitwise the CPU's result.
// Reduced precision (half, bfloat16) computes in float32 and rounds once.
// Limits: a single target's weight and a single block have fewer than 2^31 elements.
#include "emit_kernel.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace ghn_ext {

using namespace emit_detail;

namespace {

constexpr int kThreads = 256;
constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

int64_t num_blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{1} << 20));
}

void check_cuda_limits(const EmitPlan& plan) {
  TORCH_CHECK_VALUE(plan.block_numel() <= kInt32Max,
                    "the CUDA kernels of ghn_ext.emit_weights support blocks of fewer than 2^31 "
                    "elements, got Co * Ci * K * K = ",
                    plan.block_numel());
  for (size_t t = 0; t < plan.targets.size(); ++t) {
    const EmitTarget& tg = plan.targets[t];
    const int64_t numel = tg.o * tg.i * tg.kh * tg.kw;  // no overflow: bounded by plan.total
    TORCH_CHECK_VALUE(numel <= kInt32Max, "target ", t,
                      ": the CUDA kernels of ghn_ext.emit_weights support weights of fewer than "
                      "2^31 elements, got ",
                      numel);
  }
}

// The packed table, on `device`.
at::Tensor upload_plan(const EmitPlan& plan, bool with_nodes, const at::Device& device) {
  const int64_t size = table_size(plan, with_nodes);
  at::Tensor host = at::empty({size}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  pack_plan(plan, with_nodes, host.mutable_data_ptr<int64_t>());
  // asynchronous on the current stream; the pinned block is not reused before the copy is done
  return at::empty({size}, at::TensorOptions().dtype(at::kLong).device(device))
      .copy_(host, /*non_blocking=*/true);
}

}  // namespace

namespace {

at::Tensor emit_forward(const at::Tensor& blocks_in, const EmitPlan& plan) {
  check_cuda_limits(plan);
  const c10::cuda::OptionalCUDAGuard device_guard(blocks_in.device());
  at::Tensor out = at::empty({plan.total}, blocks_in.options());
  if (plan.total == 0) return out;

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor blocks = blocks_in.contiguous();
  const int64_t T = static_cast<int64_t>(plan.targets.size());
  const at::Tensor table = upload_plan(plan, /*with_nodes=*/false, blocks.device());
  const int64_t* offsets = table.const_data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, blocks.scalar_type(), "emit_weights_cuda", [&] {
    emit_forward_kernel<scalar_t><<<num_blocks(plan.total), kThreads, 0, stream>>>(
        blocks.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), offsets, offsets + T + 1,
        T, plan.total, static_cast<int>(plan.Co), static_cast<int>(plan.Ci), static_cast<int>(plan.K));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

// block_shape and grad checked by the caller
at::Tensor emit_backward(const at::Tensor& grad_in, const EmitPlan& plan, c10::IntArrayRef block_shape) {
  check_cuda_limits(plan);
  const c10::cuda::OptionalCUDAGuard device_guard(grad_in.device());
  at::Tensor grad_blocks = at::empty(block_shape, grad_in.options());
  const int64_t entries = grad_blocks.numel();
  if (entries == 0) return grad_blocks;
  if (plan.total == 0) return grad_blocks.zero_();

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const at::Tensor grad = grad_in.contiguous();
  const int64_t T = static_cast<int64_t>(plan.targets.size());
  const at::Tensor table = upload_plan(plan, /*with_nodes=*/true, grad.device());
  const int64_t* meta = table.const_data_ptr<int64_t>() + T + 1;  // the offsets are the forward's
  const int64_t* node_ptr = meta + kMeta * T;
  const int64_t* node_targets = node_ptr + plan.N + 1;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "emit_weights_backward_cuda", [&] {
    emit_backward_kernel<scalar_t><<<num_blocks(entries), kThreads, 0, stream>>>(
        grad.const_data_ptr<scalar_t>(), grad_blocks.mutable_data_ptr<scalar_t>(), meta,
        node_ptr, node_targets, entries, static_cast<int>(plan.Co), static_cast<int>(plan.Ci),
        static_cast<int>(plan.K));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_blocks;
}

}  // namespace

at::Tensor emit_weights_cuda(const at::Tensor& blocks, c10::IntArrayRef node_index,
                             c10::IntArrayRef shapes, c10::IntArrayRef anchors,
                             c10::ArrayRef<double> scales) {
  emit_check_blocks(blocks);
  return emit_forward(blocks, emit_make_plan(blocks.sizes(), node_index, shapes, anchors, scales));
}

at::Tensor emit_weights_backward_cuda(const at::Tensor& grad, c10::IntArrayRef node_index,
                                      c10::IntArrayRef shapes, c10::IntArrayRef anchors,
                                      c10::ArrayRef<double> scales, c10::IntArrayRef block_shape) {
  emit_check_block_shape(block_shape);
  const EmitPlan plan = emit_make_plan(block_shape, node_index, shapes, anchors, scales);
  emit_check_grad(grad, plan.total);
  return emit_backward(grad, plan, block_shape);
}

at::Tensor emit_edge_weights_cuda(const at::Tensor& blocks, c10::IntArrayRef piece_ptr,
                                  c10::IntArrayRef piece_block, c10::IntArrayRef piece_channels,
                                  c10::IntArrayRef shapes, c10::IntArrayRef anchors,
                                  c10::ArrayRef<double> scales) {
  emit_check_blocks(blocks);
  return emit_forward(blocks, emit_make_edge_plan(blocks.sizes(), piece_ptr, piece_block,
                                                  piece_channels, shapes, anchors, scales));
}

at::Tensor emit_edge_weights_backward_cuda(const at::Tensor& grad, c10::IntArrayRef piece_ptr,
                                           c10::IntArrayRef piece_block,
                                           c10::IntArrayRef piece_channels, c10::IntArrayRef shapes,
                                           c10::IntArrayRef anchors, c10::ArrayRef<double> scales,
                                           c10::IntArrayRef block_shape) {
  emit_check_block_shape(block_shape);
  const EmitPlan plan = emit_make_edge_plan(block_shape, piece_ptr, piece_block, piece_channels,
                                            shapes, anchors, scales);
  emit_check_grad(grad, plan.total);
  return emit_backward(grad, plan, block_shape);
}

TORCH_LIBRARY_IMPL(ghn_ext, CUDA, m) {
  m.impl("emit_weights", &emit_weights_cuda);
  m.impl("_emit_weights_backward", &emit_weights_backward_cuda);
  m.impl("emit_edge_weights", &emit_edge_weights_cuda);
  m.impl("_emit_edge_weights_backward", &emit_edge_weights_backward_cuda);
}

}  // namespace ghn_ext
