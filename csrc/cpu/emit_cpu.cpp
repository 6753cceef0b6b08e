// CPU implementation of ghn_ext::emit_weights and ghn_ext::_emit_weights_backward, plus the
// argument checks shared with the CUDA kernels (declared in csrc/emit.h).
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
#include <cctype>
#include <climits>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace ghn_ext {

namespace {

// Below this many elements threads cost more than they save; above it each chunk gets about
// kChunkWork elements.
constexpr int64_t kParallelWork = 1 << 15;
constexpr int64_t kChunkWork = 1 << 14;

bool kernel_dtype(c10::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

int64_t grain_for(int64_t items, int64_t work) {
  if (items <= 0) return 1;
  if (work < kParallelWork) return items;  // one chunk: run inline
  return std::max<int64_t>(1, items * kChunkWork / work);
}

}  // namespace

// ------------------------------------------------------------------------------------------
// messages and checks

std::string python_tuple(c10::IntArrayRef values) {
  std::ostringstream ss;
  ss << "(";
  for (size_t k = 0; k < values.size(); ++k) {
    if (k > 0) ss << ", ";
    ss << values[k];
  }
  if (values.size() == 1) ss << ",";
  ss << ")";
  return ss.str();
}

std::string python_list(c10::IntArrayRef values) {
  std::ostringstream ss;
  ss << "[";
  for (size_t k = 0; k < values.size(); ++k) ss << (k > 0 ? ", " : "") << values[k];
  ss << "]";
  return ss.str();
}

std::string python_dtype(c10::ScalarType dtype) {
  const char* name = nullptr;
  switch (dtype) {
    case at::kByte: name = "uint8"; break;
    case at::kChar: name = "int8"; break;
    case at::kShort: name = "int16"; break;
    case at::kInt: name = "int32"; break;
    case at::kLong: name = "int64"; break;
    case at::kHalf: name = "float16"; break;
    case at::kFloat: name = "float32"; break;
    case at::kDouble: name = "float64"; break;
    case at::kComplexHalf: name = "complex32"; break;
    case at::kComplexFloat: name = "complex64"; break;
    case at::kComplexDouble: name = "complex128"; break;
    case at::kBool: name = "bool"; break;
    case at::kBFloat16: name = "bfloat16"; break;
    default: break;
  }
  if (name != nullptr) return std::string("torch.") + name;
  std::string lower = c10::toString(dtype);  // e.g. Float8_e4m3fn -> torch.float8_e4m3fn
  for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return "torch." + lower;
}

void emit_check_blocks(const at::Tensor& blocks) {
  TORCH_CHECK_VALUE(blocks.dim() == 5 && blocks.size(3) == blocks.size(4),
                    "blocks must have shape (N, Co, Ci, K, K), got ", python_tuple(blocks.sizes()));
  TORCH_CHECK_TYPE(c10::isFloatingType(blocks.scalar_type()), "blocks must be floating point, got ",
                   python_dtype(blocks.scalar_type()));
  TORCH_CHECK_TYPE(kernel_dtype(blocks.scalar_type()),
                   "the compiled ghn_ext.emit_weights supports float16, bfloat16, float32 and "
                   "float64 blocks, got ",
                   python_dtype(blocks.scalar_type()));
}

void emit_check_block_shape(c10::IntArrayRef block_shape) {
  bool ok = block_shape.size() == 5 && block_shape[3] == block_shape[4];
  for (const int64_t s : block_shape) ok = ok && s >= 0;
  TORCH_CHECK_VALUE(ok, "block_shape must be (N, Co, Ci, K, K) with non-negative entries, got ",
                    python_tuple(block_shape));
}

void emit_check_grad(const at::Tensor& grad, int64_t total) {
  TORCH_CHECK_TYPE(kernel_dtype(grad.scalar_type()),
                   "grad must be a float16, bfloat16, float32 or float64 tensor, got ",
                   python_dtype(grad.scalar_type()));
  TORCH_CHECK_VALUE(grad.dim() == 1 && grad.size(0) == total, "grad must have shape (", total,
                    ",) (the emitted buffer), got ", python_tuple(grad.sizes()));
}

EmitPlan emit_make_plan(c10::IntArrayRef block_shape, c10::IntArrayRef node_index,
                        c10::IntArrayRef shapes, c10::IntArrayRef anchors,
                        c10::ArrayRef<double> scales) {
  const int64_t n_targets = static_cast<int64_t>(node_index.size());
  TORCH_CHECK_VALUE(static_cast<int64_t>(shapes.size()) == 4 * n_targets &&
                        static_cast<int64_t>(anchors.size()) == 2 * n_targets &&
                        static_cast<int64_t>(scales.size()) == n_targets,
                    n_targets, " targets need ", 4 * n_targets, " shape entries, ", 2 * n_targets,
                    " anchors and ", n_targets, " scales; got ", shapes.size(), ", ",
                    anchors.size(), ", ", scales.size());
  EmitPlan plan;
  plan.N = block_shape[0];
  plan.Co = block_shape[1];
  plan.Ci = block_shape[2];
  plan.K = block_shape[3];
  TORCH_CHECK_VALUE(n_targets == 0 || (plan.Co >= 1 && plan.Ci >= 1), "blocks of shape ",
                    python_tuple(block_shape), " have no channels to emit weights from");
  plan.targets.resize(n_targets);
  int64_t offset = 0;
  for (int64_t t = 0; t < n_targets; ++t) {
    EmitTarget& tg = plan.targets[t];
    tg.node = node_index[t];
    tg.o = shapes[4 * t];
    tg.i = shapes[4 * t + 1];
    tg.kh = shapes[4 * t + 2];
    tg.kw = shapes[4 * t + 3];
    tg.row = anchors[2 * t];
    tg.col = anchors[2 * t + 1];
    tg.scale = scales[t];
    TORCH_CHECK_INDEX(tg.node >= 0 && tg.node < plan.N, "target ", t, ": node index ", tg.node,
                      " out of range [0, ", plan.N, ")");
    TORCH_CHECK_VALUE(tg.o >= 1 && tg.i >= 1 && tg.kh >= 1 && tg.kw >= 1, "target ", t,
                      ": shape ", python_tuple(shapes.slice(4 * t, 4)), " must be positive");
    // r + kh > K written without overflow (r >= 0 is checked first)
    TORCH_CHECK_VALUE(tg.row >= 0 && tg.col >= 0 && tg.kh <= plan.K - tg.row &&
                          tg.kw <= plan.K - tg.col,
                      "target ", t, ": ", tg.kh, "x", tg.kw, " window at (", tg.row, ", ", tg.col,
                      ") leaves the ", plan.K, "x", plan.K, " block");
    int64_t numel = 0;
    const bool overflow = __builtin_mul_overflow(tg.o, tg.i, &numel) ||
                          __builtin_mul_overflow(numel, tg.kh, &numel) ||
                          __builtin_mul_overflow(numel, tg.kw, &numel) ||
                          __builtin_add_overflow(offset, numel, &tg.offset);
    TORCH_CHECK_VALUE(!overflow, "target ", t, ": shape ", python_tuple(shapes.slice(4 * t, 4)),
                      " makes the emitted buffer too large");
    tg.offset = offset;
    tg.row_stride = numel / tg.o;
    offset += numel;
  }
  plan.total = offset;
  return plan;
}

EmitPlan emit_make_edge_plan(c10::IntArrayRef block_shape, c10::IntArrayRef piece_ptr,
                             c10::IntArrayRef piece_block, c10::IntArrayRef piece_channels,
                             c10::IntArrayRef shapes, c10::IntArrayRef anchors,
                             c10::ArrayRef<double> scales) {
  const int64_t n_targets = static_cast<int64_t>(scales.size());
  const int64_t n_pieces = static_cast<int64_t>(piece_block.size());
  TORCH_CHECK_VALUE(static_cast<int64_t>(piece_ptr.size()) == n_targets + 1 && piece_ptr[0] == 0 &&
                        piece_ptr[n_targets] == n_pieces,
                    "piece_ptr must hold ", n_targets + 1, " offsets from 0 to the ", n_pieces,
                    " pieces, got ", python_list(piece_ptr));
  TORCH_CHECK_VALUE(static_cast<int64_t>(piece_channels.size()) == n_pieces, n_pieces,
                    " pieces need as many channel counts, got ", piece_channels.size());
  std::vector<int64_t> first(n_targets);
  for (int64_t t = 0; t < n_targets; ++t) {
    TORCH_CHECK_VALUE(piece_ptr[t + 1] > piece_ptr[t], "target ", t,
                      ": needs at least one piece (offsets ", piece_ptr[t], ", ", piece_ptr[t + 1],
                      ")");
    first[t] = piece_block[piece_ptr[t]];
  }
  // the shared checks and the targets' offsets, each target's first block standing for its node
  const EmitPlan whole = emit_make_plan(block_shape, first, shapes, anchors, scales);
  EmitPlan plan = whole;
  plan.targets.clear();
  plan.targets.reserve(n_pieces);
  for (int64_t t = 0; t < n_targets; ++t) {
    const EmitTarget& tg = whole.targets[t];
    int64_t column = 0;  // input channels covered so far
    for (int64_t p = piece_ptr[t]; p < piece_ptr[t + 1]; ++p) {
      TORCH_CHECK_INDEX(piece_block[p] >= 0 && piece_block[p] < plan.N, "piece ", p, " of target ",
                        t, ": block index ", piece_block[p], " out of range [0, ", plan.N, ")");
      TORCH_CHECK_VALUE(piece_channels[p] >= 1, "piece ", p, " of target ", t, ": ",
                        piece_channels[p], " channels, must be positive");
      EmitTarget piece = tg;
      piece.node = piece_block[p];
      piece.i = piece_channels[p];
      piece.offset = tg.offset + std::min(column, tg.i) * tg.kh * tg.kw;
      plan.targets.push_back(piece);
      if (__builtin_add_overflow(column, piece_channels[p], &column)) column = INT64_MAX;
    }
    TORCH_CHECK_VALUE(column == tg.i, "target ", t, ": its pieces cover ", column,
                      " input channels, its shape has ", tg.i);
  }
  return plan;
}

void EmitPlan::targets_by_node(std::vector<int64_t>& node_ptr,
                               std::vector<int64_t>& node_targets) const {
  const int64_t T = static_cast<int64_t>(targets.size());
  node_ptr.assign(N + 1, 0);
  node_targets.resize(T);
  for (const EmitTarget& tg : targets) ++node_ptr[tg.node + 1];
  for (int64_t n = 0; n < N; ++n) node_ptr[n + 1] += node_ptr[n];
  std::vector<int64_t> cursor(node_ptr.begin(), node_ptr.end() - 1);
  for (int64_t t = 0; t < T; ++t) node_targets[cursor[targets[t].node]++] = t;  // stable
}

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
