// CPU implementation of ghn_ext::emit_weights and ghn_ext::_emit_weights_backward, and of their
// edge mode (argument checks and plans in csrc/emit_plan.cpp, shared with the CUDA kernels).
//
// Forward: one pass over the output. The flat buffer is a sequence of rows: for target t and output
// channel a, the windows of block[node, a % Co, b % Ci] (kh x kw, anchored at (row, col), scaled)
// for b = 0 .. i-1. Rows are split into equal chunks across threads (at::parallel_for over the row
// index; a chunk finds its first target by binary search), so one large weight does not serialise
// the work. A window is copied row by row (contiguous reads of kw block entries, contiguous
// writes); the copies that tiling makes (rows a >= Co, input channels b >= Ci) are memcpy'd from
// the first, so most of a tiled weight costs a memcpy.
//
// Backward: the gradient of the blocks, zero outside every window. Race-free without atomics: the
// threads own disjoint (node, a % Co) slabs of the block gradient, zero them and gather into them
// the copies of the node's targets (targets in order, then a, then b ascending), so every entry
// receives its contributions in one fixed order: the result is deterministic and independent of
// the thread count. The CUDA kernel sums in the same order with explicitly rounded operations, so
// both give the same bits where the host compiler does not fuse a * b + c into an FMA (x86-64
// builds without -mfma). Each contribution is grad * scale rounded once, as in the reference's
// autograd; reduced-precision inputs accumulate in float32 and are rounded at the end.
#include "../emit.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace ghn_ext {

namespace {

// Below this many elements threads cost more than they save; above it each chunk gets about
// kChunkWork elements.
constexpr int64_t kParallelWork = 1 << 15;
constexpr int64_t kChunkWork = 1 << 14;

int64_t grain_for(int64_t items, int64_t work) {
  if (items <= 0) return 1;
  if (work < kParallelWork) return items;  // one chunk: run inline
  return std::max<int64_t>(1, items * kChunkWork / work);
}

}  // namespace

// ------------------------------------------------------------------------------------------
// kernels

namespace {

// Rows [a0, a1) of one target: row a is weight[a] (i * kh * kw elements). Row a repeats row
// a - Co, and within a row the Ci windows of block[node, a % Co] repeat with period Ci * kh * kw;
// repeats are copied (bitwise the same values) instead of recomputed. Only rows of this chunk are
// read back, so threads never read what another thread writes.
template <typename scalar_t>
void emit_rows(const EmitTarget& tg, int64_t a0, int64_t a1, const EmitPlan& plan,
               const scalar_t* __restrict__ blocks, scalar_t* __restrict__ out) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t K = plan.K, KK = K * K, Ci = plan.Ci, Co = plan.Co;
  const int64_t kh = tg.kh, kw = tg.kw, area = kh * kw;
  const int64_t row_len = tg.i * area, stride = tg.row_stride;
  const int64_t period = std::min(tg.i, Ci) * area;  // the computed part of a row
  const opmath_t s = static_cast<opmath_t>(tg.scale);
  const scalar_t* node_block = blocks + tg.node * plan.block_numel() + tg.row * K + tg.col;
  for (int64_t a = a0; a < a1; ++a) {
    scalar_t* __restrict__ dst = out + tg.offset + a * stride;
    if (a - Co >= a0) {  // same as row a - Co, written by this thread
      std::memcpy(dst, dst - Co * stride, row_len * sizeof(scalar_t));
      continue;
    }
    const scalar_t* src = node_block + (a % Co) * Ci * KK;  // block[node, a % Co, 0, row, col]
    if (area == 1) {
      for (int64_t b = 0; b < period; ++b) {
        dst[b] = static_cast<scalar_t>(static_cast<opmath_t>(src[b * KK]) * s);
      }
    } else {
      for (int64_t b = 0; b * area < period; ++b) {
        for (int64_t y = 0; y < kh; ++y) {
          const scalar_t* __restrict__ srow = src + b * KK + y * K;
          scalar_t* __restrict__ drow = dst + b * area + y * kw;
          for (int64_t x = 0; x < kw; ++x) {
            drow[x] = static_cast<scalar_t>(static_cast<opmath_t>(srow[x]) * s);
          }
        }
      }
    }
    for (int64_t pos = period; pos < row_len; pos += period) {  // tiling along input channels
      std::memcpy(dst + pos, dst, std::min(period, row_len - pos) * sizeof(scalar_t));
    }
  }
}

template <typename scalar_t>
void emit_forward_kernel(const EmitPlan& plan, const scalar_t* blocks, scalar_t* out) {
  const int64_t T = static_cast<int64_t>(plan.targets.size());
  std::vector<int64_t> row_ptr(T + 1, 0);  // strictly increasing: every target has >= 1 row
  for (int64_t t = 0; t < T; ++t) row_ptr[t + 1] = row_ptr[t] + plan.targets[t].o;
  const int64_t R = row_ptr[T];
  at::parallel_for(0, R, grain_for(R, plan.total), [&](int64_t r0, int64_t r1) {
    int64_t t = std::upper_bound(row_ptr.begin(), row_ptr.end(), r0) - row_ptr.begin() - 1;
    for (int64_t r = r0; r < r1; ++t) {
      const int64_t a0 = r - row_ptr[t];
      const int64_t a1 = std::min(r1, row_ptr[t + 1]) - row_ptr[t];
      emit_rows<scalar_t>(plan.targets[t], a0, a1, plan, blocks, out);
      r = row_ptr[t] + a1;
    }
  });
}

template <typename scalar_t, typename acc_t>
void emit_backward_kernel(const EmitPlan& plan, const scalar_t* grad, acc_t* grad_blocks) {
  std::vector<int64_t> node_ptr, node_targets;
  plan.targets_by_node(node_ptr, node_targets);
  const int64_t K = plan.K, KK = K * K, Co = plan.Co, Ci = plan.Ci;
  const int64_t slabs = plan.N * Co;  // slab (n, p): entries [n, p, :, :, :] of the gradient
  const int64_t work = plan.total + plan.N * plan.block_numel();
  at::parallel_for(0, slabs, grain_for(slabs, work), [&](int64_t s0, int64_t s1) {
    for (int64_t slab = s0; slab < s1; ++slab) {
      const int64_t n = slab / Co;
      const int64_t p = slab % Co;
      acc_t* slab_ptr = grad_blocks + slab * Ci * KK;
      std::fill(slab_ptr, slab_ptr + Ci * KK, acc_t(0));  // zeroed by its owner (first touch)
      for (int64_t j = node_ptr[n]; j < node_ptr[n + 1]; ++j) {
        const EmitTarget& tg = plan.targets[node_targets[j]];
        const acc_t s = static_cast<acc_t>(tg.scale);
        const int64_t kh = tg.kh, kw = tg.kw, area = kh * kw;
        acc_t* window = slab_ptr + tg.row * K + tg.col;
        for (int64_t a = p; a < tg.o; a += Co) {
          const scalar_t* row = grad + tg.offset + a * tg.row_stride;  // grad[a]
          for (int64_t b0 = 0; b0 < tg.i; b0 += Ci) {  // b = b0 + bm, bm = b % Ci
            const int64_t nb = std::min(Ci, tg.i - b0);
            const scalar_t* __restrict__ src = row + b0 * area;
            if (area == 1) {
              for (int64_t bm = 0; bm < nb; ++bm) window[bm * KK] += static_cast<acc_t>(src[bm]) * s;
              continue;
            }
            for (int64_t bm = 0; bm < nb; ++bm) {
              for (int64_t y = 0; y < kh; ++y) {
                const scalar_t* __restrict__ srow = src + bm * area + y * kw;
                acc_t* __restrict__ drow = window + bm * KK + y * K;
                for (int64_t x = 0; x < kw; ++x) drow[x] += static_cast<acc_t>(srow[x]) * s;
              }
            }
          }
        }
      }
    }
  });
}

}  // namespace

namespace {

at::Tensor emit_forward(const at::Tensor& blocks_in, const EmitPlan& plan) {
  at::Tensor out = at::empty({plan.total}, blocks_in.options());
  if (plan.total == 0) return out;
  const at::Tensor blocks = blocks_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, blocks.scalar_type(), "emit_weights_cpu",
                                  [&] {
                                    emit_forward_kernel<scalar_t>(
                                        plan, blocks.const_data_ptr<scalar_t>(),
                                        out.mutable_data_ptr<scalar_t>());
                                  });
  return out;
}

// block_shape and grad checked by the caller
at::Tensor emit_backward(const at::Tensor& grad_in, const EmitPlan& plan,
                         c10::IntArrayRef block_shape) {
  const c10::ScalarType dtype = grad_in.scalar_type();
  const c10::ScalarType acc_dtype = at::toOpMathType(dtype);
  at::Tensor grad_blocks;
  if (plan.total == 0) {
    grad_blocks = at::zeros(block_shape, grad_in.options().dtype(acc_dtype));
  } else {
    grad_blocks = at::empty(block_shape, grad_in.options().dtype(acc_dtype));  // every slab zeroed
    const at::Tensor grad = grad_in.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "emit_weights_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      emit_backward_kernel<scalar_t, acc_t>(plan, grad.const_data_ptr<scalar_t>(),
                                            grad_blocks.mutable_data_ptr<acc_t>());
    });
  }
  return acc_dtype == dtype ? grad_blocks : grad_blocks.to(dtype);
}

}  // namespace

at::Tensor emit_weights_cpu(const at::Tensor& blocks, c10::IntArrayRef node_index,
                            c10::IntArrayRef shapes, c10::IntArrayRef anchors,
                            c10::ArrayRef<double> scales) {
  emit_check_blocks(blocks);
  return emit_forward(blocks, emit_make_plan(blocks.sizes(), node_index, shapes, anchors, scales));
}

at::Tensor emit_weights_backward_cpu(const at::Tensor& grad, c10::IntArrayRef node_index,
                                     c10::IntArrayRef shapes, c10::IntArrayRef anchors,
                                     c10::ArrayRef<double> scales, c10::IntArrayRef block_shape) {
  emit_check_block_shape(block_shape);
  const EmitPlan plan = emit_make_plan(block_shape, node_index, shapes, anchors, scales);
  emit_check_grad(grad, plan.total);
  return emit_backward(grad, plan, block_shape);
}

at::Tensor emit_edge_weights_cpu(const at::Tensor& blocks, c10::IntArrayRef piece_ptr,
                                 c10::IntArrayRef piece_block, c10::IntArrayRef piece_channels,
                                 c10::IntArrayRef shapes, c10::IntArrayRef anchors,
                                 c10::ArrayRef<double> scales) {
  emit_check_blocks(blocks);
  return emit_forward(blocks, emit_make_edge_plan(blocks.sizes(), piece_ptr, piece_block,
                                                  piece_channels, shapes, anchors, scales));
}

at::Tensor emit_edge_weights_backward_cpu(const at::Tensor& grad, c10::IntArrayRef piece_ptr,
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

TORCH_LIBRARY_IMPL(ghn_ext, CPU, m) {
  m.impl("emit_weights", &emit_weights_cpu);
  m.impl("_emit_weights_backward", &emit_weights_backward_cpu);
  m.impl("emit_edge_weights", &emit_edge_weights_cpu);
  m.impl("_emit_edge_weights_backward", &emit_edge_weights_backward_cpu);
}

}  // namespace ghn_ext
