// Shared declarations for ghn_ext::propagate and ghn_ext::_propagate_backward (CPU and CUDA).
// The specification is propagate_reference in ghn_ext/ops/propagate.py.
//
// The argument checks run on the host: they copy the (small) index tensors to the CPU, validate
// every pointer, node and edge, and return those host copies, which both backends use to plan the
// work. Errors raise Python ValueError/TypeError with the offending name and value.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace ghn_ext {

struct PropagatePlan {
  int64_t N = 0, D = 0, Hm = 0, P = 0, B = 0, G = 0;  // nodes, hidden, message hidden, parameter
                                                      // sets, blocks, graphs
  std::vector<int64_t> block_ptr, gbp;                // host copies of block_ptr, graph_block_ptr
};

// Every check of the forward: dtypes, devices and shapes of h0 and the 8 parameters, the pointers,
// and that every node and edge of a block stays inside it (graphs are then independent and every
// access is in bounds). `params` in schema order: msg_w1, msg_b1, msg_w2, msg_b2, gru_w_ih,
// gru_w_hh, gru_b_ih, gru_b_hh.
PropagatePlan check_propagate_args(const at::Tensor& h0, const at::Tensor& block_ptr,
                                   const at::Tensor& graph_block_ptr, const at::Tensor& order,
                                   const at::Tensor& in_ptr, const at::Tensor& in_src,
                                   const at::Tensor& out_ptr, const at::Tensor& out_dst,
                                   at::TensorList params, int64_t T);

// Rows of the saved buffer, 2*T*N, or a ValueError when its size in bytes, 2*T*N*D*itemsize,
// overflows int64 (T is user input).
int64_t saved_rows(int64_t T, int64_t N, int64_t D, int64_t itemsize);

// The backward's extra checks: grad like h, saved of shape (2*T*N, D) with h's dtype and device.
void check_propagate_backward_args(const PropagatePlan& plan, const at::Tensor& grad,
                                   const at::Tensor& h, const at::Tensor& saved, int64_t T);

}  // namespace ghn_ext
