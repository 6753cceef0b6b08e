// The per-graph propagation worker of propagate_cpu.cpp and the float math it uses.
//
// This file is included by propagate_cpu.cpp once per instruction set, inside a different namespace
// each time (plain x86-64 and AVX2+FMA, chosen at run time), so it has no include guard and needs the
// declarations that precede its inclusion there (Layout, Set, set_at, Rows).

// exp for float without a libm call, so the loops over the gates vectorize: Cody-Waite range
// reduction x = k ln2 + r, a degree-6 polynomial for exp(r) (Cephes' expf coefficients, about
// 1 ulp), and 2^k put into the exponent bits. Rounding to nearest uses the 1.5 * 2^23 trick,
// which needs no SSE4.1 round instruction. Inputs are clamped to where exp is a normal float.
__attribute__((always_inline)) inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float magic = 12582912.0f;  // 1.5 * 2^23
  const float k = (x * 1.44269504088896341f + magic) - magic;
  const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

// float: through exp_approx (vectorizable; tanh from the sigmoid, whose absolute error of a few
// 1e-8 is float32 rounding at the scale of the GRU state). double (gradcheck): libm.
__attribute__((always_inline)) inline float gate_sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
inline double gate_sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
__attribute__((always_inline)) inline float gate_tanh(float x) { return 2.0f / (1.0f + exp_approx(-2.0f * x)) - 1.0f; }
inline double gate_tanh(double x) { return std::tanh(x); }

// y[j] += sum_i w[i * nout + j] * x[i] for j < nout: a matrix-vector product with the matrix
// stored input-major, as an accumulation of rows. With the output size known at compile time the
// outputs are taken C at a time into local accumulators the compiler keeps in vector registers.
// A float FMA has a latency of several cycles, so one chain of 32 outputs (4 AVX registers) would
// leave the FMA units mostly idle: 96 outputs (the GRU gates) run as one chunk of 12 independent
// chains, and 32 outputs (hidden and message sizes of the paper) as R = 3 partial sums over
// interleaved inputs, added at the end.
template <int64_t KOUT, typename S>
__attribute__((always_inline)) inline void add_rows(S* __restrict y, const S* __restrict w,
                                                    const S* __restrict x, int64_t nin, int64_t nout) {
  if constexpr (KOUT > 0 && KOUT % 32 == 0) {
    constexpr int64_t C = KOUT % 96 == 0 ? 96 : 32;
    constexpr int64_t R = 96 / C;
    for (int64_t j0 = 0; j0 < KOUT; j0 += C) {
      S acc[R][C] = {};
      int64_t i = 0;
      for (; i + R <= nin; i += R)
        for (int64_t r = 0; r < R; ++r) {
          const S xi = x[i + r];
          const S* row = w + (i + r) * KOUT + j0;
          for (int64_t j = 0; j < C; ++j) acc[r][j] += row[j] * xi;
        }
      for (; i < nin; ++i) {
        const S xi = x[i];
        const S* row = w + i * KOUT + j0;
        for (int64_t j = 0; j < C; ++j) acc[0][j] += row[j] * xi;
      }
      for (int64_t j = 0; j < C; ++j) {
        S sum = y[j0 + j];
        for (int64_t r = 0; r < R; ++r) sum += acc[r][j];
        y[j0 + j] = sum;
      }
    }
  } else {
    for (int64_t i = 0; i < nin; ++i) {
      const S xi = x[i];
      const S* row = w + i * nout;
      for (int64_t j = 0; j < nout; ++j) y[j] += row[j] * xi;
    }
  }
}

// Everything one graph needs: shared read-only data plus per-thread scratch. KD and KH fix the
// hidden and message sizes at compile time (0: read from the plan) so the compiler can unroll and
// keep the length-32 accumulators of the paper's configuration in vector registers.
template <typename S, int64_t KD = 0, int64_t KH = 0>
struct Worker {
  const PropagatePlan& plan;
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
  int64_t D_, Hm_;
  int64_t dim() const { return KD ? KD : D_; }
  int64_t msg_dim() const { return KH ? KH : Hm_; }
  S* h;       // working embeddings (N, D)
  S* saved;   // (2TN, D)
  // scratch
  std::vector<S> m, gi, gh, tmp, emb, pre, act, dm, dgi, dgh, da, gout, gemb, gemb_next;
  // backward: rows whose outer products make the weight gradients (gate gradients with the GRU
  // inputs and states, message gradients with the summed activations, first-layer gradients with
  // the neighbour states)
  Rows<S> rec_dgi, rec_m, rec_dgh, rec_h, rec_dm, rec_act, rec_dp, rec_hu;

  Worker(const PropagatePlan& plan_, const int64_t* order_, const int64_t* ip, const int64_t* is,
         const int64_t* op, const int64_t* od, S* const* params_, S* const* tparams_, const Layout& L_,
         int64_t T_, bool fb_, bool pe, S* h_, S* saved_)
      : plan(plan_), order(order_), in_ptr(ip), in_src(is), out_ptr(op), out_dst(od), params(params_),
        tparams(tparams_), L(L_), T(T_), fb(fb_), pass_embedding(pe), D_(plan_.D), Hm_(plan_.Hm), h(h_), saved(saved_),
        m(D_), gi(3 * D_), gh(3 * D_), emb(D_), act(Hm_), dm(D_), dgi(3 * D_), dgh(3 * D_), da(Hm_),
        gemb(D_), gemb_next(D_) {}

  // The transposed weights of set p (same sizes as the originals).
  struct TSet {
    const S *w1t, *w2t, *wiht, *whht;
  };
  TSet tset(int64_t p) const {
    return {tparams[0] + p * L.size[0], tparams[1] + p * L.size[2], tparams[2] + p * L.size[4],
            tparams[3] + p * L.size[5]};
  }
  TSet tp{};  // of the block being processed

  // m = sum over neighbours u of MLP(h_u) (+ extra). The second layer is linear, so it runs once
  // on the summed activations: m = W2 (sum_u relu(W1 h_u + b1)) + deg * b2; the sum stays in
  // act. The first-layer pre-activations of the neighbours go to pre[k*Hm ...] when keep_pre.
  void message(const Set<S>& p, const int64_t* nb, int64_t deg, const S* extra, bool keep_pre) {
    const int64_t D = dim(), Hm = msg_dim();
    if (keep_pre && (int64_t)pre.size() < deg * Hm) pre.resize(deg * Hm);
    std::fill(act.begin(), act.end(), S(0));
    for (int64_t k = 0; k < deg; ++k) {
      S* pk = keep_pre ? pre.data() + k * Hm : da.data();
      std::copy(p.b1, p.b1 + Hm, pk);
      add_rows<KH>(pk, tp.w1t, h + nb[k] * D, D, Hm);
      for (int64_t j = 0; j < Hm; ++j) act[j] += pk[j] > S(0) ? pk[j] : S(0);
    }
    for (int64_t i = 0; i < D; ++i) m[i] = S(deg) * p.b2[i] + (extra ? extra[i] : S(0));
    if (deg > 0) add_rows<KD>(m.data(), tp.w2t, act.data(), Hm, D);
  }

  void gates(const Set<S>& p, const S* hv) {
    const int64_t D = dim();
    const int64_t D3 = 3 * D;
    std::copy(p.bih, p.bih + D3, gi.data());
    std::copy(p.bhh, p.bhh + D3, gh.data());
    add_rows<3 * KD>(gi.data(), tp.wiht, m.data(), D, D3);
    add_rows<3 * KD>(gh.data(), tp.whht, hv, D, D3);
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
    const int64_t D = dim();
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
        const S r = gate_sigmoid(gi[i] + gh[i]);
        const S z = gate_sigmoid(gi[D + i] + gh[D + i]);
        const S nn = gate_tanh(gi[2 * D + i] + r * gh[2 * D + i]);
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
    const int64_t D = dim(), Hm = msg_dim();
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
        const S r = gate_sigmoid(gi[i] + gh[i]);
        const S z = gate_sigmoid(gi[D + i] + gh[D + i]);
        const S hn = gh[2 * D + i];
        const S nn = gate_tanh(gi[2 * D + i] + r * hn);
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
      // input gradients now; the weight gradients are outer products, recorded as rows and
      // summed by flush_weight_grads in a few matrix products
      std::fill(dm.begin(), dm.end(), S(0));
      for (int64_t j = 0; j < 3 * D; ++j) {
        gp.bih[j] += dgi[j];
        gp.bhh[j] += dgh[j];
      }
      add_rows<KD>(dm.data(), p.wih, dgi.data(), 3 * D, D);
      add_rows<KD>(gv, p.whh, dgh.data(), 3 * D, D);
      std::memcpy(rec_dgi.push(3 * D), dgi.data(), 3 * D * sizeof(S));
      std::memcpy(rec_m.push(D), m.data(), D * sizeof(S));
      std::memcpy(rec_dgh.push(3 * D), dgh.data(), 3 * D * sizeof(S));
      std::memcpy(rec_h.push(D), hv, D * sizeof(S));
      if (use_e)
        for (int64_t i = 0; i < D; ++i) gemb[i] += dm[i];
      if (deg == 0) continue;
      // message MLP: da = W2^T dm is the same for every neighbour
      std::fill(da.begin(), da.end(), S(0));
      add_rows<KH>(da.data(), p.w2, dm.data(), D, Hm);
      for (int64_t i = 0; i < D; ++i) gp.b2[i] += S(deg) * dm[i];
      // dm is the same for every neighbour: the W2 gradient is dm x (sum of the activations)
      std::memcpy(rec_act.push(Hm), act.data(), Hm * sizeof(S));
      std::memcpy(rec_dm.push(D), dm.data(), D * sizeof(S));
      for (int64_t q = 0; q < deg; ++q) {
        const int64_t u = nb[q];
        S* gu = grad + u * D;
        const S* pq = pre.data() + q * Hm;
        S* dp = rec_dp.push(Hm);
        for (int64_t j = 0; j < Hm; ++j) {
          dp[j] = pq[j] > S(0) ? da[j] : S(0);
          gp.b1[j] += dp[j];
        }
        add_rows<KD>(gu, p.w1, dp, Hm, D);
        std::memcpy(rec_hu.push(D), h + u * D, D * sizeof(S));
      }
    }
  }

  // gp's weight gradients += the outer products recorded since the last flush (A^T X for each
  // pair of row records), as matrix products; then the records are cleared.
  void flush_weight_grads(const Set<S>& gp) {
    const int64_t D = dim(), Hm = msg_dim();
    add_outer_products(gp.wih, rec_dgi, rec_m, 3 * D, D);
    add_outer_products(gp.whh, rec_dgh, rec_h, 3 * D, D);
    add_outer_products(gp.w2, rec_dm, rec_act, D, Hm);
    add_outer_products(gp.w1, rec_dp, rec_hu, Hm, D);
  }

  static void add_outer_products(S* g, Rows<S>& a, Rows<S>& x, int64_t na, int64_t nx) {
    const int64_t k = a.size / na;
    if (k > 0) {
      const auto opt = at::TensorOptions().dtype(c10::CppTypeToScalarType<S>::value);
      at::from_blob(g, {na, nx}, opt).addmm_(at::from_blob(a.data.data(), {k, na}, opt).t(),
                                             at::from_blob(x.data.data(), {k, nx}, opt));
    }
    a.size = x.size = 0;
  }

  void block_mean(int64_t s, int64_t e, S* out) const {
    const int64_t D = dim();
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
    const int64_t D = dim();
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
      flush_weight_grads(gp);  // per block: keeps the records small enough to stay in cache
      gemb_next = gemb;
    }
  }
};
