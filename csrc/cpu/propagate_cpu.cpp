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
#include <cmath>
#include <cstring>
#include <tuple>
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

template <typename S>
inline S sigmoid(S x) {
  return S(1) / (S(1) + std::exp(-x));
}

// Everything one graph needs: shared read-only data plus per-thread scratch.
template <typename S>
struct Worker {
  const Plan& plan;
  const int64_t* order;
  const int64_t* in_ptr;
  const int64_t* in_src;
  const int64_t* out_ptr;
  const int64_t* out_dst;
  S* const* params;  // 8 base pointers (read only)
  S* const* tparams;  // msg_w1, msg_w2, gru_w_ih, gru_w_hh transposed per set: (D, Hm), (Hm, D), (D, 3D), (D, 3D)
  const Layout& L;
  int64_t T;
  bool fb, pass_embedding;
  int64_t D, Hm;
  S* h;       // working embeddings (N, D)
  S* saved;   // (2TN, D)
  // scratch
  std::vector<S> m, gi, gh, tmp, emb, pre, act, dm, dgi, dgh, da, gout, gemb, gemb_next;

  Worker(const Plan& plan_, const int64_t* order_, const int64_t* ip, const int64_t* is,
         const int64_t* op, const int64_t* od, S* const* params_, S* const* tparams_, const Layout& L_,
         int64_t T_, bool fb_, bool pe, S* h_, S* saved_)
      : plan(plan_), order(order_), in_ptr(ip), in_src(is), out_ptr(op), out_dst(od), params(params_),
        tparams(tparams_), L(L_), T(T_), fb(fb_), pass_embedding(pe), D(plan_.D), Hm(plan_.Hm), h(h_), saved(saved_),
        m(D), gi(3 * D), gh(3 * D), emb(D), act(Hm), dm(D), dgi(3 * D), dgh(3 * D), da(Hm),
        gemb(D), gemb_next(D) {}

  // The transposed weights of set p (same sizes as the originals).
  struct TSet {
    const S *w1t, *w2t, *wiht, *whht;
  };
  TSet tset(int64_t p) const {
    return {tparams[0] + p * L.size[0], tparams[1] + p * L.size[2], tparams[2] + p * L.size[4],
            tparams[3] + p * L.size[5]};
  }
  TSet tp{};  // of the block being processed

  // m = sum over neighbours u of MLP(h_u) (+ extra); the first-layer pre-activations of the
  // neighbours go to pre[k*Hm ...] when keep_pre.
  void message(const Set<S>& p, const int64_t* nb, int64_t deg, const S* extra, bool keep_pre) {
    std::fill(m.begin(), m.end(), S(0));
    if (keep_pre && (int64_t)pre.size() < deg * Hm) pre.resize(deg * Hm);
    S* a = act.data();
    for (int64_t k = 0; k < deg; ++k) {
      const S* hu = h + nb[k] * D;
      S* pk = keep_pre ? pre.data() + k * Hm : a;
      for (int64_t j = 0; j < Hm; ++j) pk[j] = p.b1[j];
      for (int64_t i = 0; i < D; ++i) {
        const S x = hu[i];
        const S* row = tp.w1t + i * Hm;
        for (int64_t j = 0; j < Hm; ++j) pk[j] += row[j] * x;
      }
      for (int64_t j = 0; j < Hm; ++j) a[j] = pk[j] > S(0) ? pk[j] : S(0);
      S* mm = m.data();
      for (int64_t i = 0; i < D; ++i) mm[i] += p.b2[i];
      for (int64_t j = 0; j < Hm; ++j) {
        const S x = a[j];
        if (x == S(0)) continue;
        const S* row = tp.w2t + j * D;
        for (int64_t i = 0; i < D; ++i) mm[i] += row[i] * x;
      }
    }
    if (extra)
      for (int64_t i = 0; i < D; ++i) m[i] += extra[i];
  }

  void gates(const Set<S>& p, const S* hv) {
    const int64_t D3 = 3 * D;
    S* a = gi.data();
    S* c = gh.data();
    for (int64_t j = 0; j < D3; ++j) {
      a[j] = p.bih[j];
      c[j] = p.bhh[j];
    }
    for (int64_t i = 0; i < D; ++i) {
      const S x = m[i], y = hv[i];
      const S* ri = tp.wiht + i * D3;
      const S* rh = tp.whht + i * D3;
      for (int64_t j = 0; j < D3; ++j) {
        a[j] += ri[j] * x;
        c[j] += rh[j] * y;
      }
    }
  }

  void neighbours(int64_t v, bool from_preds, const int64_t*& nb, int64_t& deg) const {
    if (from_preds) {
      nb = in_src + in_ptr[v];
      deg = in_ptr[v + 1] - in_ptr[v];
    } else {
      nb = out_dst + out_ptr[v];
      deg = out_ptr[v + 1] - out_ptr[v];
    }
  }

  // Forward of one group: nodes[0..n) all read the state before the group.
  void forward_group(const Set<S>& p, const int64_t* nodes, int64_t n, bool from_preds, const S* e,
                     int64_t& cursor) {
    if ((int64_t)tmp.size() < n * D) tmp.resize(n * D);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t v = nodes[k];
      const int64_t* nb;
      int64_t deg;
      neighbours(v, from_preds, nb, deg);
      message(p, nb, deg, (e && from_preds && deg == 0) ? e : nullptr, false);
      const S* hv = h + v * D;
      gates(p, hv);
      S* out = tmp.data() + k * D;
      for (int64_t i = 0; i < D; ++i) {
        const S r = sigmoid(gi[i] + gh[i]);
        const S z = sigmoid(gi[D + i] + gh[D + i]);
        const S nn = std::tanh(gi[2 * D + i] + r * gh[2 * D + i]);
        out[i] = (S(1) - z) * nn + z * hv[i];
      }
    }
    for (int64_t k = 0; k < n; ++k) {
      S* hv = h + nodes[k] * D;
      std::memcpy(saved + (cursor + k) * D, hv, D * sizeof(S));
      std::memcpy(hv, tmp.data() + k * D, D * sizeof(S));
    }
    cursor += n;
  }

  // Backward of one group (undoes it): grad is dL/d(state), gp the parameter-gradient set, gemb
  // collects the gradient of the embedding e.
  void backward_group(const Set<S>& p, const Set<S>& gp, const int64_t* nodes, int64_t n,
                      bool from_preds, const S* e, int64_t& cursor, S* grad) {
    cursor -= n;
    if ((int64_t)gout.size() < n * D) gout.resize(n * D);
    for (int64_t k = 0; k < n; ++k) {
      S* gv = grad + nodes[k] * D;
      std::memcpy(gout.data() + k * D, gv, D * sizeof(S));
      std::fill(gv, gv + D, S(0));
      std::memcpy(h + nodes[k] * D, saved + (cursor + k) * D, D * sizeof(S));
    }
    for (int64_t k = 0; k < n; ++k) {
      const int64_t v = nodes[k];
      const int64_t* nb;
      int64_t deg;
      neighbours(v, from_preds, nb, deg);
      const bool use_e = e && from_preds && deg == 0;
      message(p, nb, deg, use_e ? e : nullptr, true);
      const S* hv = h + v * D;
      gates(p, hv);
      const S* g = gout.data() + k * D;
      S* gv = grad + v * D;
      for (int64_t i = 0; i < D; ++i) {
        const S r = sigmoid(gi[i] + gh[i]);
        const S z = sigmoid(gi[D + i] + gh[D + i]);
        const S hn = gh[2 * D + i];
        const S nn = std::tanh(gi[2 * D + i] + r * hn);
        const S dn = g[i] * (S(1) - z);
        const S dz = g[i] * (hv[i] - nn);
        gv[i] += g[i] * z;
        const S dpn = dn * (S(1) - nn * nn);
        const S dr = dpn * hn;
        const S dpr = dr * r * (S(1) - r);
        const S dpz = dz * z * (S(1) - z);
        dgi[i] = dpr;
        dgi[D + i] = dpz;
        dgi[2 * D + i] = dpn;
        dgh[i] = dpr;
        dgh[D + i] = dpz;
        dgh[2 * D + i] = dpn * r;
      }
      std::fill(dm.begin(), dm.end(), S(0));
      for (int64_t j = 0; j < 3 * D; ++j) {
        gp.bih[j] += dgi[j];
        gp.bhh[j] += dgh[j];
        S* gwi = gp.wih + j * D;
        S* gwh = gp.whh + j * D;
        const S* wi = p.wih + j * D;
        const S* wh = p.whh + j * D;
        const S a = dgi[j], c = dgh[j];
        for (int64_t i = 0; i < D; ++i) {
          gwi[i] += a * m[i];
          gwh[i] += c * hv[i];
          dm[i] += wi[i] * a;
          gv[i] += wh[i] * c;
        }
      }
      if (use_e)
        for (int64_t i = 0; i < D; ++i) gemb[i] += dm[i];
      if (deg == 0) continue;
      // message MLP: da = W2^T dm is the same for every neighbour
      std::fill(da.begin(), da.end(), S(0));
      for (int64_t i = 0; i < D; ++i) {
        const S* w = p.w2 + i * Hm;
        const S d = dm[i];
        gp.b2[i] += S(deg) * d;
        for (int64_t j = 0; j < Hm; ++j) da[j] += w[j] * d;
      }
      // dm is the same for every neighbour: the W2 gradient is dm x (sum of the activations)
      std::fill(act.begin(), act.end(), S(0));
      for (int64_t q = 0; q < deg; ++q) {
        const S* pq = pre.data() + q * Hm;
        for (int64_t j = 0; j < Hm; ++j) act[j] += pq[j] > S(0) ? pq[j] : S(0);
      }
      for (int64_t i = 0; i < D; ++i) {
        S* gw = gp.w2 + i * Hm;
        const S d = dm[i];
        for (int64_t j = 0; j < Hm; ++j) gw[j] += d * act[j];
      }
      for (int64_t q = 0; q < deg; ++q) {
        const int64_t u = nb[q];
        const S* hu = h + u * D;
        S* gu = grad + u * D;
        const S* pq = pre.data() + q * Hm;
        for (int64_t j = 0; j < Hm; ++j) {
          if (!(pq[j] > S(0))) continue;
          const S dp = da[j];
          gp.b1[j] += dp;
          S* gw = gp.w1 + j * D;
          const S* w = p.w1 + j * D;
          for (int64_t i = 0; i < D; ++i) {
            gw[i] += dp * hu[i];
            gu[i] += w[i] * dp;
          }
        }
      }
    }
  }

  void block_mean(int64_t s, int64_t e, S* out) const {
    std::fill(out, out + D, S(0));
    for (int64_t v = s; v < e; ++v)
      for (int64_t i = 0; i < D; ++i) out[i] += h[v * D + i];
    const S inv = S(e - s);
    for (int64_t i = 0; i < D; ++i) out[i] /= inv;
  }

  int64_t param_index(int64_t b) const { return std::min<int64_t>(b, plan.P - 1); }

  void forward_graph(int64_t g) {
    const int64_t b0 = plan.gbp[g], nb = plan.gbp[g + 1] - b0;
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t s = plan.block_ptr[b0 + b], e = plan.block_ptr[b0 + b + 1], n = e - s;
      const Set<S> p = set_at<S>(params, L, param_index(b));
      tp = tset(param_index(b));
      const S* ep = nullptr;
      if (pass_embedding && b > 0) {
        block_mean(plan.block_ptr[b0 + b - 1], s, emb.data());
        ep = emb.data();
      }
      const int64_t* seq = order + s;
      int64_t cursor = 2 * T * s;
      for (int64_t t = 0; t < T; ++t) {
        if (fb) {
          for (int64_t k = 0; k < n; ++k) forward_group(p, seq + k, 1, true, ep, cursor);
          for (int64_t k = n - 2; k >= 0; --k) forward_group(p, seq + k, 1, false, nullptr, cursor);
        } else {
          forward_group(p, seq, n, true, ep, cursor);
          forward_group(p, seq, n, false, nullptr, cursor);
        }
      }
    }
  }

  void backward_graph(int64_t g, S* grad, S* const gbase[8]) {
    const int64_t b0 = plan.gbp[g], nb = plan.gbp[g + 1] - b0;
    std::fill(gemb_next.begin(), gemb_next.end(), S(0));  // gradient of the mean of block b
    for (int64_t b = nb - 1; b >= 0; --b) {
      const int64_t s = plan.block_ptr[b0 + b], e = plan.block_ptr[b0 + b + 1], n = e - s;
      if (b + 1 < nb)  // block b's mean fed block b + 1
        for (int64_t v = s; v < e; ++v)
          for (int64_t i = 0; i < D; ++i) grad[v * D + i] += gemb_next[i] / S(n);
      const Set<S> p = set_at<S>(params, L, param_index(b));
      const Set<S> gp = set_at<S>(gbase, L, param_index(b));
      tp = tset(param_index(b));
      const S* ep = nullptr;
      std::fill(gemb.begin(), gemb.end(), S(0));
      if (pass_embedding && b > 0) {
        block_mean(plan.block_ptr[b0 + b - 1], s, emb.data());
        ep = emb.data();
      }
      const int64_t* seq = order + s;
      int64_t cursor = 2 * T * s + T * (fb ? 2 * n - 1 : 2 * n);
      for (int64_t t = 0; t < T; ++t) {
        if (fb) {
          for (int64_t k = 0; k <= n - 2; ++k) backward_group(p, gp, seq + k, 1, false, nullptr, cursor, grad);
          for (int64_t k = n - 1; k >= 0; --k) backward_group(p, gp, seq + k, 1, true, ep, cursor, grad);
        } else {
          backward_group(p, gp, seq, n, false, nullptr, cursor, grad);
          backward_group(p, gp, seq, n, true, ep, cursor, grad);
        }
      }
      gemb_next = gemb;
    }
  }
};

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
    at::parallel_for(0, plan.G, 1, [&](int64_t begin, int64_t end) {
      Worker<S> w(plan, ord.data_ptr<int64_t>(), ip.data_ptr<int64_t>(), is.data_ptr<int64_t>(),
                  op.data_ptr<int64_t>(), od.data_ptr<int64_t>(), pb, tb, L, T, forward_backward,
                  pass_embedding, h.data_ptr<S>(), saved.data_ptr<S>());
      for (int64_t g = begin; g < end; ++g) w.forward_graph(g);
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
    at::parallel_for(0, slots, 1, [&](int64_t sbegin, int64_t send) {
      for (int64_t slot = sbegin; slot < send; ++slot) {
        S* base = acc.data_ptr<S>() + slot * L.total;
        S* gb[8];
        for (int k = 0; k < 8; ++k) gb[k] = base + L.off[k];
        Worker<S> w(plan, ord.data_ptr<int64_t>(), ip.data_ptr<int64_t>(), is.data_ptr<int64_t>(),
                    op.data_ptr<int64_t>(), od.data_ptr<int64_t>(), pb, tb, L, T, forward_backward,
                    pass_embedding, hw.data_ptr<S>(), const_cast<S*>(sv.data_ptr<S>()));
        const int64_t g0 = slot * plan.G / slots, g1 = (slot + 1) * plan.G / slots;
        for (int64_t g = g0; g < g1; ++g) w.backward_graph(g, grad.data_ptr<S>(), gb);
      }
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
