// Runs the CUDA propagation kernels (csrc/cuda/propagate_kernel.cuh) on the CPU through shim.h: the
// host side of csrc/cuda/propagate_cuda.cu without its checks, and with the shared-memory budget
// as an argument (so that tests also reach the placements in global memory). Workspaces and
// outputs start filled with NaN (-1 for integers), so that a read of anything the kernel did not
// write shows in the results. Test-only: python_tests/test_propagate_cuda_emulated.py.
#include "shim.h"

#include "../../csrc/cuda/propagate_kernel.cuh"

#include <torch/extension.h>

#include <cstdlib>
#include <limits>
#include <thread>

using namespace ghn_ext::propagate_detail;

namespace {

template <typename S, int KD, int KH>
void run_ctas(const Args<S>& args, int64_t graphs, size_t smem, bool backward) {
  const int nt = args.warps * 32;
  const size_t bytes = (smem + 63) / 64 * 64 + 64;
  for (int64_t g = 0; g < graphs; ++g) {
    S* buf = static_cast<S*>(std::aligned_alloc(64, bytes));
    std::fill(buf, buf + bytes / sizeof(S), std::numeric_limits<S>::quiet_NaN());
    std::barrier<> cta(nt);
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    for (int w = 0; w < args.warps; ++w) warps.push_back(std::make_unique<std::barrier<>>(32));
    std::vector<std::thread> threads;
    for (int t = 0; t < nt; ++t) {
      threads.emplace_back([&, t] {
        threadIdx.x = t;
        blockIdx.x = static_cast<unsigned>(g);
        blockDim.x = nt;
        gridDim.x = static_cast<unsigned>(graphs);
        emu_cta = EmuCta{&cta, &warps};
        Prop<S, KD, KH> prop(args, buf);
        if (backward)
          prop.backward();
        else
          prop.forward();
      });
    }
    for (auto& th : threads) th.join();
    std::free(buf);
  }
}

at::Tensor nan_like(const at::Tensor& t) { return at::full_like(t, std::numeric_limits<double>::quiet_NaN()); }

// backward: h_in = the forward's h, grad_in = dL/dh, saved given; returns [grad, 8 parameter grads].
// forward: h_in = h0; returns [h, saved].
std::vector<at::Tensor> emulate(bool backward, at::Tensor h_in, c10::optional<at::Tensor> grad_in,
                                c10::optional<at::Tensor> saved_in, std::vector<at::Tensor> idx,
                                std::vector<at::Tensor> params, int64_t T, bool fb, bool pe,
                                int64_t smem_budget, bool generic) {
  h_in = h_in.contiguous();
  for (auto& t : idx) t = t.contiguous();
  for (auto& t : params) t = t.contiguous();
  const int64_t N = h_in.size(0), D = h_in.size(1), P = params[0].size(0), Hm = params[0].size(1);
  const auto bp = idx[0], gbp = idx[1];
  const int64_t G = gbp.numel() - 1;
  int64_t n_max = 0;
  for (int64_t b = 0; b + 1 < bp.numel(); ++b)
    n_max = std::max(n_max, bp[b + 1].item<int64_t>() - bp[b].item<int64_t>());
  std::vector<at::Tensor> out;
  AT_DISPATCH_FLOATING_TYPES(h_in.scalar_type(), "emulate", [&] {
    using S = scalar_t;
    Args<S> args{};
    set_sizes(args, N, static_cast<int>(D), static_cast<int>(Hm), static_cast<int>(P), static_cast<int>(T),
              static_cast<int>(n_max), fb, pe);
    const size_t smem = place_workspace(args, smem_budget, backward);
    TORCH_CHECK(smem > 0, "budget too small");
    args.block_ptr = idx[0].data_ptr<int64_t>();
    args.gbp = idx[1].data_ptr<int64_t>();
    args.order = idx[2].data_ptr<int64_t>();
    args.in_ptr = idx[3].data_ptr<int64_t>();
    args.in_src = idx[4].data_ptr<int64_t>();
    args.out_ptr = idx[5].data_ptr<int64_t>();
    args.out_dst = idx[6].data_ptr<int64_t>();
    for (int k = 0; k < 8; ++k) args.params[k] = params[k].data_ptr<S>();
    at::Tensor h = nan_like(h_in);
    at::Tensor saved = backward ? saved_in->contiguous() : at::full({2 * T * N, D}, NAN, h_in.options());
    at::Tensor grad, slots, gin;
    args.h_in = h_in.data_ptr<S>();
    args.h = h.data_ptr<S>();
    args.saved = saved.data_ptr<S>();
    if (backward) {
      gin = grad_in->contiguous();
      grad = nan_like(h_in);
      slots = at::zeros({std::max<int64_t>(G, 1), P * args.L.usize}, h_in.options());
      args.grad_in = gin.data_ptr<S>();
      args.grad = grad.data_ptr<S>();
      args.slots = slots.data_ptr<S>();
    }
    at::Tensor iscratch = at::full({7 * std::max<int64_t>(N, 1)}, -1, h_in.options().dtype(at::kInt));
    at::Tensor gws = at::full({std::max<int64_t>(1, G * args.gws_per_cta)}, NAN, h_in.options());
    args.iscratch = iscratch.data_ptr<int32_t>();
    args.gws = gws.data_ptr<S>();
    if (D == 32 && Hm == 32 && !generic)
      run_ctas<S, 32, 32>(args, G, smem, backward);
    else
      run_ctas<S, 0, 0>(args, G, smem, backward);
    if (!backward) {
      out = {h, saved};
    } else {
      const at::Tensor total = slots.sum(0).view({P, args.L.usize});
      out = {grad};
      for (int k = 0; k < 8; ++k)
        out.push_back(total.narrow(1, args.L.uoff[k], static_cast<int64_t>(args.L.rows[k]) * args.L.cols[k])
                          .reshape(params[k].sizes())
                          .contiguous());
    }
  });
  return out;
}

// Where the regions were placed for a configuration: (smem bytes, resident, weights, delta, acc in
// smem, global elements per CTA).
std::vector<int64_t> placement(int64_t D, int64_t Hm, int64_t P, int64_t n_max, int64_t budget, bool backward,
                               bool dbl) {
  auto f = [&](auto* type) {
    using S = std::remove_pointer_t<decltype(type)>;
    Args<S> args{};
    set_sizes(args, 1, static_cast<int>(D), static_cast<int>(Hm), static_cast<int>(P), 1, static_cast<int>(n_max),
              true, true);
    const size_t smem = place_workspace(args, budget, backward);
    return std::vector<int64_t>{static_cast<int64_t>(smem), args.resident, args.weights.smem, args.delta.smem,
                                args.acc.smem, args.gws_per_cta};
  };
  return dbl ? f(static_cast<double*>(nullptr)) : f(static_cast<float*>(nullptr));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("emulate", &emulate);
  m.def("placement", &placement);
}
