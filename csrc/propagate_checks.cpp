// Argument checks of the propagation ops, shared by the CPU and CUDA kernels (see propagate.h).
#include "propagate.h"

#include "emit.h"  // python_tuple, python_dtype

#include <ATen/ATen.h>
#include <c10/util/safe_numerics.h>

#include <algorithm>
#include <limits>

namespace ghn_ext {

namespace {

void check_index_tensor(const at::Tensor& t, const char* name, const at::Tensor& h0) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, "propagate: ", name,
                   " must be an int64 (torch.long) tensor, got ", python_dtype(t.scalar_type()));
  TORCH_CHECK_VALUE(t.dim() == 1, "propagate: ", name, " must be 1-D, got shape ",
                    python_tuple(t.sizes()));
  TORCH_CHECK_VALUE(t.device() == h0.device(), "propagate: ", name, " is on ", t.device(),
                    " but h0 is on ", h0.device());
}

// A host copy (the tensors may live on the GPU).
std::vector<int64_t> to_vec(const at::Tensor& t) {
  auto c = t.to(at::kCPU).contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + c.numel());
}

void check_ptr(const std::vector<int64_t>& ptr, const char* name, int64_t last, const char* last_name) {
  TORCH_CHECK_VALUE(!ptr.empty() && ptr.front() == 0, "propagate: ", name, " must start at 0");
  TORCH_CHECK_VALUE(ptr.back() == last, "propagate: ", name, " must end at ", last_name, " = ", last,
                    ", got ", ptr.back());
  for (size_t k = 0; k + 1 < ptr.size(); ++k)
    TORCH_CHECK_VALUE(ptr[k] <= ptr[k + 1], "propagate: ", name, " must be non-decreasing, got ",
                      ptr[k], " > ", ptr[k + 1], " at ", k);
}

}  // namespace

int64_t saved_rows(int64_t T, int64_t N, int64_t D, int64_t itemsize) {
  // 2*T*N rows of D values: T comes from users and checkpoints, so the product is checked, not assumed,
  // up to the bytes torch must be able to count for the buffer
  uint64_t rows = 0, elements = 0, bytes = 0;
  const bool overflows = c10::mul_overflows(uint64_t(2) * uint64_t(T), uint64_t(N), &rows) ||
                         c10::mul_overflows(rows, uint64_t(std::max<int64_t>(D, 1)), &elements) ||
                         c10::mul_overflows(elements, uint64_t(itemsize), &bytes) ||
                         bytes > uint64_t(std::numeric_limits<int64_t>::max());
  TORCH_CHECK_VALUE(!overflows, "propagate: T = ", T, " passes over ", N, " nodes of size ", D,
                    " would need a buffer of 2*T*N*D values, more bytes than an int64 can count");
  return int64_t(rows);
}

PropagatePlan check_propagate_args(const at::Tensor& h0, const at::Tensor& block_ptr, const at::Tensor& graph_block_ptr,
                const at::Tensor& order, const at::Tensor& in_ptr, const at::Tensor& in_src,
                const at::Tensor& out_ptr, const at::Tensor& out_dst, at::TensorList params, int64_t T) {
  static const char* names[8] = {"msg_w1", "msg_b1", "msg_w2", "msg_b2",
                                 "gru_w_ih", "gru_w_hh", "gru_b_ih", "gru_b_hh"};
  TORCH_CHECK_TYPE(h0.scalar_type() == at::kFloat || h0.scalar_type() == at::kDouble,
                   "propagate: h0 must be float32 or float64, got ", python_dtype(h0.scalar_type()));
  TORCH_CHECK_VALUE(h0.dim() == 2, "propagate: h0 must have shape (N, D), got ", python_tuple(h0.sizes()));
  TORCH_CHECK_VALUE(T >= 1, "propagate: T must be at least 1, got ", T);
  TORCH_CHECK_VALUE(h0.is_cpu() || h0.is_cuda(), "propagate: h0 is on ", h0.device(),
                    "; the op runs on CPU or CUDA tensors");
  PropagatePlan plan;
  plan.N = h0.size(0);
  plan.D = h0.size(1);
  saved_rows(T, plan.N, plan.D, h0.element_size());
  for (int k = 0; k < 8; ++k) {
    TORCH_CHECK_TYPE(params[k].scalar_type() == h0.scalar_type(), "propagate: ", names[k], " has dtype ",
                     python_dtype(params[k].scalar_type()), " but h0 has ", python_dtype(h0.scalar_type()));
    TORCH_CHECK_VALUE(params[k].device() == h0.device(), "propagate: ", names[k], " is on ",
                      params[k].device(), " but h0 is on ", h0.device());
  }
  TORCH_CHECK_VALUE(params[0].dim() == 3, "propagate: msg_w1 must have shape (P, Hm, D), got ",
                    python_tuple(params[0].sizes()));
  const int64_t P = params[0].size(0), Hm = params[0].size(1), D = plan.D;
  TORCH_CHECK_VALUE(P >= 1, "propagate: need at least one parameter set (P >= 1), got P = ", P);
  const std::vector<std::vector<int64_t>> expected = {
      {P, Hm, D}, {P, Hm}, {P, D, Hm}, {P, D}, {P, 3 * D, D}, {P, 3 * D, D}, {P, 3 * D}, {P, 3 * D}};
  for (int k = 0; k < 8; ++k)
    TORCH_CHECK_VALUE(params[k].sizes() == c10::IntArrayRef(expected[k]), "propagate: GNN parameter ",
                      names[k], " has shape ", python_tuple(params[k].sizes()), ", expected ",
                      python_tuple(expected[k]), " (D = ", D, " from h0)");
  plan.P = P;
  plan.Hm = Hm;

  check_index_tensor(block_ptr, "block_ptr", h0);
  check_index_tensor(graph_block_ptr, "graph_block_ptr", h0);
  check_index_tensor(order, "order", h0);
  check_index_tensor(in_ptr, "in_ptr", h0);
  check_index_tensor(in_src, "in_src", h0);
  check_index_tensor(out_ptr, "out_ptr", h0);
  check_index_tensor(out_dst, "out_dst", h0);
  plan.block_ptr = to_vec(block_ptr);
  plan.gbp = to_vec(graph_block_ptr);
  plan.B = (int64_t)plan.block_ptr.size() - 1;
  plan.G = (int64_t)plan.gbp.size() - 1;
  check_ptr(plan.block_ptr, "block_ptr", plan.N, "N");
  check_ptr(plan.gbp, "graph_block_ptr", plan.B, "the number of blocks");
  TORCH_CHECK_VALUE(plan.G >= 1, "propagate: empty batch (graph_block_ptr describes no graph)");
  for (int64_t b = 0; b < plan.B; ++b)
    TORCH_CHECK_VALUE(plan.block_ptr[b] < plan.block_ptr[b + 1], "propagate: block ", b, " is empty");
  int64_t max_blocks = 0;
  for (int64_t g = 0; g < plan.G; ++g) max_blocks = std::max(max_blocks, plan.gbp[g + 1] - plan.gbp[g]);
  TORCH_CHECK_VALUE(P == 1 || P >= max_blocks, "propagate: ", P, " parameter sets for graphs of ",
                    max_blocks, " blocks");

  TORCH_CHECK_VALUE(order.numel() == plan.N, "propagate: order must have N = ", plan.N,
                    " entries, got ", order.numel());
  TORCH_CHECK_VALUE(in_ptr.numel() == plan.N + 1 && out_ptr.numel() == plan.N + 1,
                    "propagate: in_ptr and out_ptr must have N + 1 = ", plan.N + 1, " entries, got ",
                    in_ptr.numel(), " and ", out_ptr.numel());
  auto ord = to_vec(order), ip = to_vec(in_ptr), is = to_vec(in_src), op = to_vec(out_ptr),
       od = to_vec(out_dst);
  check_ptr(ip, "in_ptr", (int64_t)is.size(), "in_src.numel()");
  check_ptr(op, "out_ptr", (int64_t)od.size(), "out_dst.numel()");
  // Every node of a block, and every neighbour of such a node, must lie inside the block: that is
  // what makes graphs (and threads) independent and every access in bounds.
  // `order` must also list every node of its block exactly once: an update group is then a set of
  // distinct nodes (the CUDA kernel relies on it, and the reference's index_copy is undefined with
  // repeated indices).
  std::vector<char> seen(plan.N, 0);
  for (int64_t b = 0; b < plan.B; ++b) {
    const int64_t s = plan.block_ptr[b], e = plan.block_ptr[b + 1];
    for (int64_t k = s; k < e; ++k) {
      TORCH_CHECK_VALUE(ord[k] >= s && ord[k] < e, "propagate: order[", k, "] = ", ord[k],
                        " is not a node of block ", b, " [", s, ", ", e, ")");
      TORCH_CHECK_VALUE(!seen[ord[k]], "propagate: order[", k, "] = ", ord[k],
                        " repeats a node of block ", b, " (order must list each node once)");
      seen[ord[k]] = 1;
      for (int64_t j = ip[k]; j < ip[k + 1]; ++j)
        TORCH_CHECK_VALUE(is[j] >= s && is[j] < e, "propagate: edge ", is[j], " -> ", k,
                          " leaves block ", b, " [", s, ", ", e, ")");
      for (int64_t j = op[k]; j < op[k + 1]; ++j)
        TORCH_CHECK_VALUE(od[j] >= s && od[j] < e, "propagate: edge ", k, " -> ", od[j],
                          " leaves block ", b, " [", s, ", ", e, ")");
    }
  }
  return plan;
}

void check_propagate_backward_args(const PropagatePlan& plan, const at::Tensor& grad_h,
                                   const at::Tensor& h, const at::Tensor& saved, int64_t T) {
  TORCH_CHECK_VALUE(grad_h.sizes() == h.sizes() && grad_h.scalar_type() == h.scalar_type() &&
                        grad_h.device() == h.device(),
                    "propagate backward: grad must match h (", python_tuple(h.sizes()), ", ",
                    python_dtype(h.scalar_type()), "), got ", python_tuple(grad_h.sizes()), ", ",
                    python_dtype(grad_h.scalar_type()));
  const int64_t rows = saved_rows(T, plan.N, plan.D, h.element_size());
  TORCH_CHECK_VALUE(saved.dim() == 2 && saved.size(0) == rows && saved.size(1) == plan.D &&
                        saved.scalar_type() == h.scalar_type() && saved.device() == h.device(),
                    "propagate backward: saved must have shape (2*T*N, D) = (", rows, ", ",
                    plan.D, "), h's dtype and h's device (", h.device(), "), got ",
                    python_tuple(saved.sizes()), ", ", python_dtype(saved.scalar_type()), " on ",
                    saved.device());
}

}  // namespace ghn_ext
