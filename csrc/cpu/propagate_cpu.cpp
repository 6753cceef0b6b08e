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
// order (fb packs its T(2n-1) rows pass after pass and leaves the last T zero). The backward starts
// from the final embeddings, undoes the groups in reverse order by restoring the saved rows (so
// every neighbour read is the value the forward saw), recomputes the group's forward quantities
// and accumulates the gradients. Parameter gradients are accumulated per thread and summed.
#include "../emit.h"
#include "../propagate.h"

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
void with_worker_type(const PropagatePlan& plan, F&& f) {
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
  const PropagatePlan plan = check_propagate_args(h0, block_ptr, graph_block_ptr, order, in_ptr,
                                                  in_src, out_ptr, out_dst, raw, T);
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
  const PropagatePlan plan = check_propagate_args(h, block_ptr, graph_block_ptr, order, in_ptr,
                                                  in_src, out_ptr, out_dst, raw, T);
  check_propagate_backward_args(plan, grad_h, h, saved, T);
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
