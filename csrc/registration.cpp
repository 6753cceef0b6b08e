// All ghn_ext operator schemas, in one place. Implementations are registered per backend in
// csrc/cpu/<op>_cpu.cpp (TORCH_LIBRARY_IMPL(ghn_ext, CPU, m)) and csrc/cuda/<op>_cuda.cu
// (TORCH_LIBRARY_IMPL(ghn_ext, CUDA, m)); the dispatcher picks the backend. Fake (meta) kernels,
// autograd formulas and the pure-PyTorch references live in ghn_ext/ops/.
//
// The Python module stub (PyInit__C) that makes this library importable as `ghn_ext._C` lives in
// csrc/python_module.cpp, which only setup.py compiles; the CMake build produces a plain shared
// library for torch.ops.load_library and needs no Python headers.
#include <torch/library.h>

TORCH_LIBRARY(ghn_ext, m) {
  // Deterministic topological schedule of a batch of DAGs (see ghn_ext/ops/schedule.py).
  //   edge_index (2, E) int64: global node ids, row 0 sources, row 1 destinations.
  //   node_ptr   (B+1,) int64: graph g owns nodes [node_ptr[g], node_ptr[g+1]).
  //   num_nodes  N == node_ptr[B] (a SymInt so fake kernels know the output sizes).
  // Returns int64 tensors: order (N), level (N), reverse_order (N), in_ptr (N+1), in_src (E),
  // out_ptr (N+1), out_dst (E).
  m.def(
      "dag_schedule(Tensor edge_index, Tensor node_ptr, SymInt num_nodes) -> "
      "(Tensor order, Tensor level, Tensor reverse_order, Tensor in_ptr, Tensor in_src, "
      "Tensor out_ptr, Tensor out_dst)");

  // Sliced/tiled weight emission (see ghn_ext/ops/emit.py and csrc/emit.h).
  //   blocks (N, Co, Ci, K, K) floating point; for target t: node_index[t], the weight shape
  //   (o, i, kh, kw) = shapes[4t:4t+4], the window anchor (row, col) = anchors[2t:2t+2], scales[t].
  //   weight_t[a, b, y, x] = blocks[node_index[t], a % Co, b % Ci, row + y, col + x] * scales[t].
  // Returns the flat buffer of all weights in target order: sum_t o*i*kh*kw elements (known from
  // the int lists alone, so the fake kernel computes it), blocks' dtype and device.
  m.def(
      "emit_weights(Tensor blocks, int[] node_index, int[] shapes, int[] anchors, float[] scales) "
      "-> Tensor");
  // Its backward (linear in grad): every copy's grad * scale summed into a zero tensor of
  // block_shape (grad's dtype and device). The gradient of this op is emit_weights again.
  m.def(
      "_emit_weights_backward(Tensor grad, int[] node_index, int[] shapes, int[] anchors, "
      "float[] scales, SymInt[] block_shape) -> Tensor");
  // Edge mode (anytime bottlenecks): target t is assembled from pieces piece_ptr[t]..piece_ptr[t+1]
  // side by side along its input channels; piece p covers piece_channels[p] of them, cut from block
  // piece_block[p] like a whole weight (window, tiling, scale of its target). With one piece per
  // target it is emit_weights. The backward as above.
  m.def(
      "emit_edge_weights(Tensor blocks, int[] piece_ptr, int[] piece_block, int[] piece_channels, "
      "int[] shapes, int[] anchors, float[] scales) -> Tensor");
  m.def(
      "_emit_edge_weights_backward(Tensor grad, int[] piece_ptr, int[] piece_block, "
      "int[] piece_channels, int[] shapes, int[] anchors, float[] scales, SymInt[] block_shape) "
      "-> Tensor");
  // GRU message passing over a batch of stacked-block DAGs (see ghn_ext/ops/propagate.py).
  //   h0 (N, D) float32/float64; block_ptr (nblocks+1,), graph_block_ptr (B+1,) int64; order,
  //   in_ptr/in_src, out_ptr/out_dst: the dag_schedule of the intra-block edges with block_ptr as
  //   the node pointer; 8 GNN parameters with a leading dim P (1 shared, or >= blocks per graph).
  // Returns h (N, D), the final embeddings, and saved (2*T*N, D), the embedding of every updated
  // node before each update (what the backward needs to undo the updates).
  m.def(
      "propagate(Tensor h0, Tensor block_ptr, Tensor graph_block_ptr, Tensor order, Tensor in_ptr, "
      "Tensor in_src, Tensor out_ptr, Tensor out_dst, Tensor msg_w1, Tensor msg_b1, Tensor msg_w2, "
      "Tensor msg_b2, Tensor gru_w_ih, Tensor gru_w_hh, Tensor gru_b_ih, Tensor gru_b_hh, int T, "
      "bool forward_backward, bool pass_embedding) -> (Tensor h, Tensor saved)");
  // Its backward: gradients of h0 and of the 8 parameters, from grad (N, D), the forward's h and
  // saved. Not differentiable itself.
  m.def(
      "_propagate_backward(Tensor grad, Tensor h, Tensor saved, Tensor block_ptr, "
      "Tensor graph_block_ptr, Tensor order, Tensor in_ptr, Tensor in_src, Tensor out_ptr, "
      "Tensor out_dst, Tensor msg_w1, Tensor msg_b1, Tensor msg_w2, Tensor msg_b2, Tensor gru_w_ih, "
      "Tensor gru_w_hh, Tensor gru_b_ih, Tensor gru_b_hh, int T, bool forward_backward, "
      "bool pass_embedding) -> Tensor[]");
}
