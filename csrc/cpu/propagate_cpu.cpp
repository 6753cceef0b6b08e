// CPU implementation of ghn_ext::propagate and ghn_ext::_propagate_backward: GRU message passing
// over a batch of stacked-block DAGs. The specification is propagate_reference in
// ghn_ext/ops/propagate.py; see its docstring for the forward-backward ("fb") and synchronous
// schemes, the T passes per block and the mean-embedding hand-over between blocks.
//
// Graphs are independent (edges stay inside a block, blocks of a graph run one after another), so
// the work is split over graphs (at::parallel_for); inside a graph everything is sequential and
// the hidden size D and message size Hm are handled by plain dense loops.
//
// Updates come in groups: one node at a time for fb, a whole block at a time for sync (every
// member reads the state before the group). The forward records the embedding of every updated
// node before its update in `saved` (2*T*N, D): block [s, e) owns rows [2*T*s, 2*T*e) in update
// order (fb uses 2n-1 of every 2n rows per pass and leaves the rest zero). The backward starts
// from the final embeddings, undoes the groups in reverse order by restoring the saved rows (so
// every neighbour read is the value the forward saw), recomputes the group's forward quantities
// and accumulates the gradients. Parameter gradients are accumulated per thread and summed.
#include "../emit.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

namespace ghn_ext {

namespace {

struct Plan {
  int64_t N = 0, D = 0, Hm = 0, P = 0, B = 0, G = 0;
  std::vector<int64_t> block_ptr, gbp;
};

void check_index_tensor(const at::Tensor& t, const char* name, const at::Tensor& h0) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, "propagate: ", name,
                   " must be an int64 (torch.long) tensor, got ", python_dtype(t.scalar_type()));
  TORCH_CHECK_VALUE(t.dim() == 1, "propagate: ", name, " must be 1-D, got shape ",
                    python_tuple(t.sizes()));
  TORCH_CHECK_VALUE(t.device() == h0.device(), "propagate: ", name, " is on ", t.device(),
                    " but h0 is on ", h0.device());
}

std::vector<int64_t> to_vec(const at::Tensor& t) {
  auto c = t.contiguous();
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

// All checks; returns the plan (host copies of the pointers).
Plan check_args(const at::Tensor& h0, const at::Tensor& block_ptr, const at::Tensor& graph_block_ptr,
                const at::Tensor& order, const at::Tensor& in_ptr, const at::Tensor& in_src,
                const at::Tensor& out_ptr, const at::Tensor& out_dst, at::TensorList params, int64_t T) {
  static const char* names[8] = {"msg_w1", "msg_b1", "msg_w2", "msg_b2",
                                 "gru_w_ih", "gru_w_hh", "gru_b_ih", "gru_b_hh"};
  TORCH_CHECK_TYPE(h0.scalar_type() == at::kFloat || h0.scalar_type() == at::kDouble,
                   "propagate: h0 must be float32 or float64, got ", python_dtype(h0.scalar_type()));
  TORCH_CHECK_VALUE(h0.dim() == 2, "propagate: h0 must have shape (N, D), got ", python_tuple(h0.sizes()));
  TORCH_CHECK_VALUE(T >= 1, "propagate: T must be at least 1, got ", T);
  Plan plan;
  plan.N = h0.size(0);
  plan.D = h0.size(1);
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
  for (int64_t b = 0; b < plan.B; ++b) {
    const int64_t s = plan.block_ptr[b], e = plan.block_ptr[b + 1];
    for (int64_t k = s; k < e; ++k) {
      TORCH_CHECK_VALUE(ord[k] >= s && ord[k] < e, "propagate: order[", k, "] = ", ord[k],
                        " is not a node of block ", b, " [", s, ", ", e, ")");
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

// Offsets of the 8 parameters inside one flat buffer of all P sets (parameter-major, as the
// tensors are laid out).
struct Layout {
  int64_t size[8];
  int64_t off[8];
  int64_t total;
  Layout(int64_t P, int64_t D, int64_t Hm) {
    const int64_t per[8] = {Hm * D, Hm, D * Hm, D, 3 * D * D, 3 * D * D, 3 * D, 3 * D};
    total = 0;
    for (int k = 0; k < 8; ++k) {
      size[k] = per[k];
      off[k] = total;
      total += P * per[k];
    }
  }
};

template <typename S>
struct Set {  // one parameter set (or its gradient)
  S *w1, *b1, *w2, *b2, *wih, *whh, *bih, *bhh;
};

template <typename S>
Set<S> set_at(S* const base[8], const Layout& L, int64_t p) {
  return {base[0] + p * L.size[0], base[1] + p * L.size[1], base[2] + p * L.size[2],
          base[3] + p * L.size[3], base[4] + p * L.size[4], base[5] + p * L.size[5],
          base[6] + p * L.size[6], base[7] + p * L.size[7]};
}

// A growing buffer of rows, reused across graphs without freeing.
template <typename S>
struct Rows {
  std::vector<S> data;
  int64_t size = 0;
  S* push(int64_t n) {
    if ((int64_t)data.size() < size + n) data.resize(std::max<int64_t>(2 * data.size(), size + n));
    S* out = data.data() + size;
    size += n;
    return out;
  }
};

// The worker, compiled twice: for any x86-64 (SSE2) and for AVX2+FMA (wider vectors and fused
// multiply-adds for the hidden-32 loops), picked at run time by what the CPU supports.
#include "propagate_worker.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define GHN_EXT_AVX2_WORKER 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#include "propagate_worker.h"
}  // namespace avx2
#pragma GCC pop_options
#endif

std::vector<at::Tensor> contiguous_params(at::TensorList params) {
  std::vector<at::Tensor> out;
  for (const auto& t : params) out.push_back(t.contiguous());
  return out;
}

// msg_w1, msg_w2, gru_w_ih, gru_w_hh with their last two dims swapped, contiguous.
std::vector<at::Tensor> transposed_params(at::TensorList params) {
  std::vector<at::Tensor> out;
  for (int k : {0, 2, 4, 5}) out.push_back(params[k].transpose(1, 2).contiguous());
  return out;
}

// The AVX2+FMA worker runs when the CPU has both, unless GHN_EXT_CPU_GENERIC=1 asks for the
// portable one (tests compare the two).
bool use_avx2_worker() {
#ifdef GHN_EXT_AVX2_WORKER
  const char* generic = std::getenv("GHN_EXT_CPU_GENERIC");
  if (generic && std::strcmp(generic, "1") == 0) return false;
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
#else
  return false;
#endif
}

// Calls f with a null pointer to the Worker type for this plan: compile-time sizes for the paper's
// configuration (hidden 32, message 32) when they match, runtime sizes otherwise; each for the
// instruction set of use_avx2_worker().
template <typename S, typename F>
void with_worker_type(const Plan& plan, F&& f) {
  const bool paper_sizes = plan.D == 32 && plan.Hm == 32;
#ifdef GHN_EXT_AVX2_WORKER
  if (use_avx2_worker()) {
    if (paper_sizes)
      f(static_cast<avx2::Worker<S, 32, 32>*>(nullptr));
    else
      f(static_cast<avx2::Worker<S>*>(nullptr));
    return;
  }
#endif
  if (paper_sizes)
    f(static_cast<Worker<S, 32, 32>*>(nullptr));
  else
    f(static_cast<Worker<S>*>(nullptr));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> propagate_cpu(
    const at::Tensor& h0, const at::Tensor& block_ptr, const at::Tensor& graph_block_ptr,
    const at::Tensor& order, const at::Tensor& in_ptr, const at::Tensor& in_src,
    const at::Tensor& out_ptr, const at::Tensor& out_dst, const at::Tensor& msg_w1,
    const at::Tensor& msg_b1, const at::Tensor& msg_w2, const at::Tensor& msg_b2,
    const at::Tensor& gru_w_ih, const at::Tensor& gru_w_hh, const at::Tensor& gru_b_ih,
    const at::Tensor& gru_b_hh, int64_t T, bool forward_backward, bool pass_embedding) {
  const std::vector<at::Tensor> raw = {msg_w1, msg_b1, msg_w2, msg_b2, gru_w_ih, gru_w_hh, gru_b_ih, gru_b_hh};
  const Plan plan = check_args(h0, block_ptr, graph_block_ptr, order, in_ptr, in_src, out_ptr, out_dst,
                               raw, T);
  auto params = contiguous_params(raw);
  auto tparams = transposed_params(raw);
  auto h = h0.contiguous().clone();
  auto saved = at::zeros({2 * T * plan.N, plan.D}, h0.options());
  auto ord = order.contiguous(), ip = in_ptr.contiguous(), is = in_src.contiguous(),
       op = out_ptr.contiguous(), od = out_dst.contiguous();
  const Layout L(plan.P, plan.D, plan.Hm);
  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "propagate_cpu", [&] {
    using S = scalar_t;
    S* pb[8];
    for (int k = 0; k < 8; ++k) pb[k] = params[k].data_ptr<S>();
    S* tb[4];
    for (int k = 0; k < 4; ++k) tb[k] = tparams[k].data_ptr<S>();
    with_worker_type<S>(plan, [&](auto* type) {
      using W = std::remove_pointer_t<decltype(type)>;
      at::parallel_for(0, plan.G, 1, [&](int64_t begin, int64_t end) {
      W w(plan, ord.data_ptr<int64_t>(), ip.data_ptr<int64_t>(), is.data_ptr<int64_t>(),
                  op.data_ptr<int64_t>(), od.data_ptr<int64_t>(), pb, tb, L, T, forward_backward,
                  pass_embedding, h.data_ptr<S>(), saved.data_ptr<S>());
      for (int64_t g = begin; g < end; ++g) w.forward_graph(g);
      });
    });
  });
  return {h, saved};
}

std::vector<at::Tensor> propagate_backward_cpu(
    const at::Tensor& grad_h, const at::Tensor& h, const at::Tensor& saved,
    const at::Tensor& block_ptr, const at::Tensor& graph_block_ptr, const at::Tensor& order,
    const at::Tensor& in_ptr, const at::Tensor& in_src, const at::Tensor& out_ptr,
    const at::Tensor& out_dst, const at::Tensor& msg_w1, const at::Tensor& msg_b1,
    const at::Tensor& msg_w2, const at::Tensor& msg_b2, const at::Tensor& gru_w_ih,
    const at::Tensor& gru_w_hh, const at::Tensor& gru_b_ih, const at::Tensor& gru_b_hh, int64_t T,
    bool forward_backward, bool pass_embedding) {
  const std::vector<at::Tensor> raw = {msg_w1, msg_b1, msg_w2, msg_b2, gru_w_ih, gru_w_hh, gru_b_ih, gru_b_hh};
  const Plan plan = check_args(h, block_ptr, graph_block_ptr, order, in_ptr, in_src, out_ptr, out_dst,
                               raw, T);
  TORCH_CHECK_VALUE(grad_h.sizes() == h.sizes() && grad_h.scalar_type() == h.scalar_type() &&
                        grad_h.device() == h.device(),
                    "propagate backward: grad must match h (", python_tuple(h.sizes()), ", ",
                    python_dtype(h.scalar_type()), "), got ", python_tuple(grad_h.sizes()), ", ",
                    python_dtype(grad_h.scalar_type()));
  TORCH_CHECK_VALUE(saved.dim() == 2 && saved.size(0) == 2 * T * plan.N && saved.size(1) == plan.D &&
                        saved.scalar_type() == h.scalar_type() && saved.device() == h.device(),
                    "propagate backward: saved must have shape (2*T*N, D) = (", 2 * T * plan.N, ", ",
                    plan.D, ") and h's dtype, got ", python_tuple(saved.sizes()));
  auto params = contiguous_params(raw);
  auto tparams = transposed_params(raw);
  auto hw = h.contiguous().clone();
  auto grad = grad_h.contiguous().clone();
  auto sv = saved.contiguous();
  auto ord = order.contiguous(), ip = in_ptr.contiguous(), is = in_src.contiguous(),
       op = out_ptr.contiguous(), od = out_dst.contiguous();
  const Layout L(plan.P, plan.D, plan.Hm);
  const int64_t slots = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), plan.G));
  auto acc = at::zeros({slots, L.total}, h.options());
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "propagate_backward_cpu", [&] {
    using S = scalar_t;
    S* pb[8];
    for (int k = 0; k < 8; ++k) pb[k] = params[k].data_ptr<S>();
    S* tb[4];
    for (int k = 0; k < 4; ++k) tb[k] = tparams[k].data_ptr<S>();
    // One accumulator per slot; slot k owns the graphs [k*G/slots, (k+1)*G/slots).
    with_worker_type<S>(plan, [&](auto* type) {
      using W = std::remove_pointer_t<decltype(type)>;
      at::parallel_for(0, slots, 1, [&](int64_t sbegin, int64_t send) {
      for (int64_t slot = sbegin; slot < send; ++slot) {
        S* base = acc.data_ptr<S>() + slot * L.total;
        S* gb[8];
        for (int k = 0; k < 8; ++k) gb[k] = base + L.off[k];
        W w(plan, ord.data_ptr<int64_t>(), ip.data_ptr<int64_t>(), is.data_ptr<int64_t>(),
                    op.data_ptr<int64_t>(), od.data_ptr<int64_t>(), pb, tb, L, T, forward_backward,
                    pass_embedding, hw.data_ptr<S>(), const_cast<S*>(sv.data_ptr<S>()));
        const int64_t g0 = slot * plan.G / slots, g1 = (slot + 1) * plan.G / slots;
        for (int64_t g = g0; g < g1; ++g) w.backward_graph(g, grad.data_ptr<S>(), gb);
      }
      });
    });
  });
  auto total = acc.sum(0);
  std::vector<at::Tensor> out = {grad};
  for (int k = 0; k < 8; ++k)
    out.push_back(total.narrow(0, L.off[k], plan.P * L.size[k]).view(raw[k].sizes()).clone());
  return out;
}

TORCH_LIBRARY_IMPL(ghn_ext, CPU, m) {
  m.impl("propagate", &propagate_cpu);
  m.impl("_propagate_backward", &propagate_backward_cpu);
}

}  // namespace ghn_ext
