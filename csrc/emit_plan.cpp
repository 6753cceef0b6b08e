// Argument checks and plans of ghn_ext::emit_weights and ghn_ext::emit_edge_weights (and their
// backwards), shared by the CPU and CUDA kernels (declared in csrc/emit.h). Kept apart from the
// kernels so that the CUDA kernels' host-side emulation (python_tests/cuda_emulation) links them
// without registering any op.
#include "emit.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

namespace ghn_ext {

namespace {

bool kernel_dtype(c10::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
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

}  // namespace ghn_ext
