// Shared declarations for ghn_ext::emit_weights and ghn_ext::_emit_weights_backward (CPU and CUDA).
//
// Semantics (the specification is emit_reference in ghn_ext/ops/emit.py): blocks is
// (N, Co, Ci, K, K); target t takes the block node_index[t], has the weight shape
// (o, i, kh, kw) = shapes[4t:4t+4] and the window anchor (row, col) = anchors[2t:2t+2], and
//     weight_t[a, b, y, x] = blocks[node_index[t], a % Co, b % Ci, row + y, col + x] * scales[t].
// All weights are written one after another (row-major, in target order) into one flat buffer.
// The backward sums every copy's gradient (times the scale) into a zero tensor of the blocks'
// shape.
//
// Edge mode (ghn_ext::emit_edge_weights, reference emit_edges_reference): target t is assembled
// from pieces piece_ptr[t] .. piece_ptr[t+1], side by side along its input channels; piece p covers
// piece_channels[p] of them and is cut from block piece_block[p] like a whole weight. A plan then
// holds one EmitTarget per piece, each writing its columns of the target's rows (row_stride).
//
// The checks below read only the int/float lists and the tensors' metadata; they raise the same
// exception types with the same text as check_emit_args / check_emit_edges_args in
// ghn_ext/ops/emit.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ghn_ext {

// One validated target. Every field fits the checks: node in [0, N), o/i/kh/kw >= 1, the kh x kw
// window at (row, col) inside the K x K kernel, numel = o * i * kh * kw without overflow.
struct EmitTarget {
  int64_t node;
  int64_t o, i, kh, kw;
  int64_t row, col;
  double scale;
  int64_t offset;      // start of this target's weight (or piece's first row) in the flat buffer
  int64_t row_stride;  // elements from row a to row a + 1: i * kh * kw, or the whole weight's row
};

struct EmitPlan {
  int64_t N = 0, Co = 0, Ci = 0, K = 0;  // block shape (N, Co, Ci, K, K)
  std::vector<EmitTarget> targets;
  int64_t total = 0;  // flat buffer size: the sum of the targets' numels

  int64_t block_numel() const { return Co * Ci * K * K; }
  // Targets grouped by node, target order kept within a node (CSR: the targets of node n are
  // node_targets[node_ptr[n] .. node_ptr[n+1])).
  void targets_by_node(std::vector<int64_t>& node_ptr, std::vector<int64_t>& node_targets) const;
};

// blocks: 5-D with equal last two sizes (ValueError "blocks must have shape (N, Co, Ci, K, K),
// got (...)"), floating point (TypeError "blocks must be floating point, got torch.<dtype>"),
// and a dtype the kernels support (float16, bfloat16, float32, float64; TypeError otherwise).
void emit_check_blocks(const at::Tensor& blocks);

// The list checks of check_emit_args against a block shape (N, Co, Ci, K, K): list lengths,
// channels, then per target (in order) the node index (IndexError), positive shape and the
// window (ValueError). Returns the plan with the flat offsets.
EmitPlan emit_make_plan(c10::IntArrayRef block_shape, c10::IntArrayRef node_index,
                        c10::IntArrayRef shapes, c10::IntArrayRef anchors,
                        c10::ArrayRef<double> scales);

// The checks of check_emit_edges_args, in the same order; the plan has one target per piece.
EmitPlan emit_make_edge_plan(c10::IntArrayRef block_shape, c10::IntArrayRef piece_ptr,
                             c10::IntArrayRef piece_block, c10::IntArrayRef piece_channels,
                             c10::IntArrayRef shapes, c10::IntArrayRef anchors,
                             c10::ArrayRef<double> scales);

// For the backward: block_shape as above (ValueError otherwise), grad a 1-D floating tensor of
// `total` elements of a supported dtype.
void emit_check_block_shape(c10::IntArrayRef block_shape);
void emit_check_grad(const at::Tensor& grad, int64_t total);

// Python spellings, so that messages match the reference's: "(3, 4, 5)", "[0, 2]", "torch.int64".
std::string python_tuple(c10::IntArrayRef values);
std::string python_list(c10::IntArrayRef values);
std::string python_dtype(c10::ScalarType dtype);

}  // namespace ghn_ext
