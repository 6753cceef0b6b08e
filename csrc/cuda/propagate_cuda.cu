// CUDA implementation of ghn_ext::propagate and ghn_ext::_propagate_backward (same semantics, same
// `saved` layout and same argument checks as csrc/cpu/propagate_cpu.cpp; the specification is
// propagate_reference in ghn_ext/ops/propagate.py).
//
// One launch per op. One thread block (CTA) per graph runs that graph's whole schedule: every
// stacked block in order, T passes each, forward-backward or synchronous, the mean-embedding
// hand-over. Graphs are independent (every edge stays inside a block), so CTAs never communicate.
// Inside a CTA a warp updates one node at a time, lane j owning hidden unit j (units j, j+32, ...
// when D != 32); the message MLP's hidden units are owned the same way. D = Hm = 32 (the paper) is
// a compile-time specialisation: unrolled dot products reading their input vector as 16-byte loads.
//
// Update groups. The CPU updates one node at a time (fb) or a whole block at once (sync: every
// member reads the state before the group). A run of consecutive fb updates in which no node reads
// (as a predecessor, or a successor in the reverse sweep) a node written earlier in the same run
// gives the same result when done as one group, so each CTA first splits every sweep greedily
// into such runs (for the topological order of dag_schedule: roughly one group per level), and
// the warps of the CTA share a group's members. A member reads the pre-group state of another
// member from `saved` (written before the group starts), so members may write h at once.
//
// `saved` (2*T*N, D): block [s, e) owns rows [2*T*s, 2*T*e), one row per update in update order
// holding the node's embedding before it, pass after pass (fb: 2n-1 rows per pass, the last T rows
// of the block zero; sync: 2n rows per pass), exactly as on the CPU.
//
// Backward: from the final h, the groups are undone in reverse: restore the members' rows from
// `saved`, recompute their messages and gates, and accumulate gradients. Node gradients of a
// multi-member group go to per-warp delta rows (the block's nodes, plus one row for the embedding
// gradient) summed in warp order after the group; a one-member group writes them directly. The
// parameter gradients of each warp accumulate in its own copy of one parameter set; when the set
// changes (P > 1) or the graph ends, the CTA sums the warps' copies in warp order into its slot of
// a (graphs, P * set) buffer, which the host sums with at::sum. No atomics: results are
// deterministic (for a given device).
//
// Memory: per CTA, dynamic shared memory holds the warps' small vectors, then, as far as the
// device's opt-in limit allows, the weights (all P sets, else the current block's set, reloaded
// at block boundaries), the delta rows and the gradient copies; whatever does not fit lives in the
// CTA's slice of a global workspace (same layout, slower). Weight matrices are stored row-major
// with an odd row stride, so that both a row per lane (forward) and a column per lane (backward)
// hit 32 distinct banks. h, saved, grad and the group tables are global (L1-cached; ordering
// between warps by __syncthreads, within a warp by __syncwarp).
//
// Host side (this file): check_propagate_args validates everything, copying the index tensors to
// the host (synchronising copies; acceptable for validation, and the host needs block_ptr for the
// largest block anyway); then one launch on the current stream. Limits: N < 2^31. The device code
// is in propagate_kernel.cuh, written so that python_tests/cuda_emulation/ can also run it on the
// CPU (one std::thread per CUDA thread) in tests without a GPU.
#include "../propagate.h"
#include "propagate_kernel.cuh"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace ghn_ext {

namespace {

using namespace propagate_detail;

template <typename S, int KD, int KH>
__global__ void __launch_bounds__(kWarps * kWarp)
    propagate_forward_kernel(const __grid_constant__ Args<S> args) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Prop<S, KD, KH> prop(args, reinterpret_cast<S*>(smem_raw));
  prop.forward();
}

template <typename S, int KD, int KH>
__global__ void __launch_bounds__(kWarps * kWarp)
    propagate_backward_kernel(const __grid_constant__ Args<S> args) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Prop<S, KD, KH> prop(args, reinterpret_cast<S*>(smem_raw));
  prop.backward();
}

// ------------------------------------------------------------------------------------------------
// host

std::vector<at::Tensor> contiguous(at::TensorList ts) {
  std::vector<at::Tensor> out;
  for (const auto& t : ts) out.push_back(t.contiguous());
  return out;
}

int64_t max_block(const PropagatePlan& plan) {
  int64_t n = 0;
  for (int64_t b = 0; b < plan.B; ++b) n = std::max(n, plan.block_ptr[b + 1] - plan.block_ptr[b]);
  return n;
}

// Fills the sizes, the index pointers and the workspace placement of `args`; returns the dynamic
// shared memory bytes.
template <typename S>
size_t plan_args(Args<S>& args, const PropagatePlan& plan, bool backward,
                 const std::vector<at::Tensor>& idx, int64_t T, bool fb, bool pe) {
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  TORCH_CHECK_VALUE(plan.N < kIntMax && plan.G <= kIntMax && plan.D <= (1 << 20) && plan.Hm <= (1 << 20) &&
                        T <= kIntMax,
                    "propagate (CUDA): sizes out of range (N and graphs < 2^31, D and Hm <= 2^20)");
  set_sizes(args, plan.N, static_cast<int>(plan.D), static_cast<int>(plan.Hm), static_cast<int>(plan.P),
            static_cast<int>(T), static_cast<int>(max_block(plan)), fb, pe);
  args.block_ptr = idx[0].const_data_ptr<int64_t>();
  args.gbp = idx[1].const_data_ptr<int64_t>();
  args.order = idx[2].const_data_ptr<int64_t>();
  args.in_ptr = idx[3].const_data_ptr<int64_t>();
  args.in_src = idx[4].const_data_ptr<int64_t>();
  args.out_ptr = idx[5].const_data_ptr<int64_t>();
  args.out_dst = idx[6].const_data_ptr<int64_t>();
  int device = 0, optin = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const size_t smem = place_workspace(args, optin, backward);
  TORCH_CHECK_VALUE(smem > 0, "propagate (CUDA): hidden size D = ", plan.D, " and message size Hm = ",
                    plan.Hm, " need more shared memory than the device has (", optin, " bytes)");
  return smem;
}

template <typename S, int KD, int KH>
void launch(bool backward, const Args<S>& args, int64_t graphs, size_t smem, cudaStream_t stream) {
  auto kernel = backward ? propagate_backward_kernel<S, KD, KH> : propagate_forward_kernel<S, KD, KH>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(graphs), kWarps * kWarp, smem, stream>>>(args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Allocates the workspaces and runs one op. `backward`: h_in is the forward's h, grad_in its
// gradient, outputs grad and slots; otherwise h_in is h0, outputs h and saved.
template <typename S>
void run(bool backward, const PropagatePlan& plan, const std::vector<at::Tensor>& idx,
         const std::vector<at::Tensor>& params, const at::Tensor& h_in, const at::Tensor* grad_in,
         at::Tensor& h, at::Tensor& saved, at::Tensor* grad, at::Tensor* slots, int64_t T, bool fb,
         bool pe) {
  Args<S> args{};
  const size_t smem = plan_args<S>(args, plan, backward, idx, T, fb, pe);
  for (int k = 0; k < 8; ++k) args.params[k] = params[k].const_data_ptr<S>();
  args.h_in = h_in.const_data_ptr<S>();
  args.grad_in = grad_in ? grad_in->const_data_ptr<S>() : nullptr;
  args.h = h.mutable_data_ptr<S>();
  args.saved = saved.data_ptr<S>();
  args.grad = grad ? grad->mutable_data_ptr<S>() : nullptr;
  args.slots = slots ? slots->mutable_data_ptr<S>() : nullptr;
  const auto opts = h_in.options();
  at::Tensor iscratch = at::empty({7 * std::max<int64_t>(plan.N, 1)}, opts.dtype(at::kInt));
  at::Tensor gws = at::empty({std::max<int64_t>(1, plan.G * args.gws_per_cta)}, opts);
  args.iscratch = iscratch.mutable_data_ptr<int32_t>();
  args.gws = gws.mutable_data_ptr<S>();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (plan.D == 32 && plan.Hm == 32)
    launch<S, 32, 32>(backward, args, plan.G, smem, stream);
  else
    launch<S, 0, 0>(backward, args, plan.G, smem, stream);
}

std::vector<at::Tensor> index_tensors(const at::Tensor& block_ptr, const at::Tensor& graph_block_ptr,
                                      const at::Tensor& order, const at::Tensor& in_ptr,
                                      const at::Tensor& in_src, const at::Tensor& out_ptr,
                                      const at::Tensor& out_dst) {
  return contiguous({block_ptr, graph_block_ptr, order, in_ptr, in_src, out_ptr, out_dst});
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> propagate_cuda(
    const at::Tensor& h0, const at::Tensor& block_ptr, const at::Tensor& graph_block_ptr,
    const at::Tensor& order, const at::Tensor& in_ptr, const at::Tensor& in_src,
    const at::Tensor& out_ptr, const at::Tensor& out_dst, const at::Tensor& msg_w1,
    const at::Tensor& msg_b1, const at::Tensor& msg_w2, const at::Tensor& msg_b2,
    const at::Tensor& gru_w_ih, const at::Tensor& gru_w_hh, const at::Tensor& gru_b_ih,
    const at::Tensor& gru_b_hh, int64_t T, bool forward_backward, bool pass_embedding) {
  const std::vector<at::Tensor> raw = {msg_w1, msg_b1, msg_w2, msg_b2, gru_w_ih, gru_w_hh, gru_b_ih, gru_b_hh};
  const PropagatePlan plan = check_propagate_args(h0, block_ptr, graph_block_ptr, order, in_ptr,
                                                  in_src, out_ptr, out_dst, raw, T);
  const c10::cuda::CUDAGuard device_guard(h0.device());
  const at::Tensor h_in = h0.contiguous();
  at::Tensor h = at::empty_like(h_in);
  at::Tensor saved = at::empty({2 * T * plan.N, plan.D}, h_in.options());
  if (plan.N == 0 || plan.D == 0) {  // nothing to propagate
    h.copy_(h_in);
    saved.zero_();
    return {h, saved};
  }
  const auto idx = index_tensors(block_ptr, graph_block_ptr, order, in_ptr, in_src, out_ptr, out_dst);
  const auto params = contiguous(raw);
  AT_DISPATCH_FLOATING_TYPES(h_in.scalar_type(), "propagate_cuda", [&] {
    run<scalar_t>(false, plan, idx, params, h_in, nullptr, h, saved, nullptr, nullptr, T,
                  forward_backward, pass_embedding);
  });
  return {h, saved};
}

std::vector<at::Tensor> propagate_backward_cuda(
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
  const c10::cuda::CUDAGuard device_guard(h.device());
  const at::Tensor h_in = h.contiguous(), grad_in = grad_h.contiguous();
  at::Tensor grad = at::empty_like(h_in);
  const SetLayout L = make_layout(static_cast<int>(plan.D), static_cast<int>(plan.Hm));
  at::Tensor slots = at::zeros({std::max<int64_t>(plan.G, 1), plan.P * L.usize}, h_in.options());
  if (plan.N > 0 && plan.D > 0) {
    const auto idx = index_tensors(block_ptr, graph_block_ptr, order, in_ptr, in_src, out_ptr, out_dst);
    const auto params = contiguous(raw);
    at::Tensor hw = at::empty_like(h_in);
    at::Tensor sv = saved.contiguous();
    AT_DISPATCH_FLOATING_TYPES(h_in.scalar_type(), "propagate_backward_cuda", [&] {
      run<scalar_t>(true, plan, idx, params, h_in, &grad_in, hw, sv, &grad, &slots, T,
                    forward_backward, pass_embedding);
    });
  } else {
    grad.copy_(grad_in);  // no update: the gradient passes through
  }
  const at::Tensor total = slots.sum(0).view({plan.P, L.usize});
  std::vector<at::Tensor> out = {grad};
  for (int k = 0; k < 8; ++k)
    out.push_back(total.narrow(1, L.uoff[k], L.rows[k] * L.cols[k]).reshape(raw[k].sizes()).contiguous());
  return out;
}

TORCH_LIBRARY_IMPL(ghn_ext, CUDA, m) {
  m.impl("propagate", &propagate_cuda);
  m.impl("_propagate_backward", &propagate_backward_cuda);
}

}  // namespace ghn_ext
