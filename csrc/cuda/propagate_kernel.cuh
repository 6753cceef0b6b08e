// Device side of ghn_ext::propagate / ghn_ext::_propagate_backward on CUDA: the per-graph
// schedule run by one CTA (see csrc/cuda/propagate_cuda.cu for the design and the host side).
//
// Apart from CUDA's built-ins (threadIdx, __syncthreads, __syncwarp, float4, ...) this is plain
// C++, so that python_tests/cuda_emulation/ can also compile it for the CPU, one std::thread per
// CUDA thread, and run the kernels' logic where no GPU is at hand.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ghn_ext {
namespace propagate_detail {

constexpr int kWarp = 32;
constexpr int kWarps = 4;  // warps per CTA (members of a group run on different warps)

// The 8 parameters, in schema order.
enum Param { kW1 = 0, kB1, kW2, kB2, kWih, kWhh, kBih, kBhh };

__host__ __device__ constexpr int64_t round4(int64_t n) { return (n + 3) / 4 * 4; }

// One parameter set as rows x cols per parameter (biases: one row). `uoff`: offsets in the
// unpadded layout (the tensors' own per set, and the gradient slots'); `poff`/`ld`: offsets and
// row strides in the padded copy (odd strides for the 4 matrices).
struct SetLayout {
  int rows[8], cols[8], ld[8];
  int64_t uoff[8], poff[8];
  int64_t usize, psize;
};

inline SetLayout make_layout(int D, int Hm) {
  SetLayout L{};
  const int r[8] = {Hm, 1, D, 1, 3 * D, 3 * D, 1, 1};
  const int c[8] = {D, Hm, Hm, D, D, D, 3 * D, 3 * D};
  const bool matrix[8] = {true, false, true, false, true, true, false, false};
  L.usize = L.psize = 0;
  for (int k = 0; k < 8; ++k) {
    L.rows[k] = r[k];
    L.cols[k] = c[k];
    L.ld[k] = matrix[k] ? (c[k] | 1) : c[k];
    L.uoff[k] = L.usize;
    L.poff[k] = L.psize;
    L.usize += static_cast<int64_t>(r[k]) * c[k];
    L.psize += static_cast<int64_t>(r[k]) * L.ld[k];
  }
  L.psize = round4(L.psize);
  return L;
}

// Where a workspace region lives: at `off` elements into dynamic shared memory, or into the CTA's
// slice of the global workspace.
struct Region {
  int64_t off = 0;
  bool smem = true;
};

template <typename S>
struct Args {
  SetLayout L;
  int64_t N;
  int D, Hm, P, T, warps, n_max;
  bool fb, pe, resident;  // resident: all P weight sets in the weights region
  const int64_t *block_ptr, *gbp, *order, *in_ptr, *in_src, *out_ptr, *out_dst;
  const S* params[8];     // contiguous, (P, ...) each
  const S* h_in;          // h0 (forward) or the forward's h (backward)
  const S* grad_in;       // backward: dL/dh
  S* h;                   // working embeddings (N, D); the forward's output
  S* saved;               // (2TN, D)
  S* grad;                // backward: working gradient, output dL/dh0
  S* slots;               // backward: (graphs, P * usize) parameter gradients per CTA, zeroed
  int32_t* iscratch;      // 7N: pos, dep0, dep1, up0, dn0, up1, dn1
  S* gws;                 // global workspace, gws_per_cta elements per CTA
  int64_t gws_per_cta;
  Region weights, delta, acc;
  int scratch_stride;     // elements of each warp's vectors (shared memory, after emb and gemb)
};

template <typename S>
struct Vec16;
template <>
struct Vec16<float> {
  using type = float4;
  static constexpr int n = 4;
  static __device__ __forceinline__ float at(const float4& v, int k) {
    return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
  }
};
template <>
struct Vec16<double> {
  using type = double2;
  static constexpr int n = 2;
  static __device__ __forceinline__ double at(const double2& v, int k) { return k == 0 ? v.x : v.y; }
};

// sum_{i<n} w[i * stride] * x[i]. With K > 0 (then n == K, a multiple of 4) x is read as 16-byte
// vectors (x must be 16-byte aligned) and the loop is unrolled.
template <int K, typename S>
__device__ __forceinline__ S dot(const S* w, int stride, const S* x, int n) {
  S acc = S(0);
  if constexpr (K > 0) {
    using V = Vec16<S>;
    static_assert(K % 4 == 0, "compile-time sizes must be multiples of 4");
    const typename V::type* xv = reinterpret_cast<const typename V::type*>(x);
#pragma unroll
    for (int i = 0; i < K / V::n; ++i) {
      const typename V::type xi = xv[i];
#pragma unroll
      for (int k = 0; k < V::n; ++k) acc += w[(i * V::n + k) * stride] * V::at(xi, k);
    }
    (void)n;
  } else {
    for (int i = 0; i < n; ++i) acc += w[i * stride] * x[i];
  }
  return acc;
}

__device__ __forceinline__ float gate_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double gate_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float gate_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double gate_tanh(double x) { return tanh(x); }

// One update group: the members are the nodes at block-local positions [lo, hi) of the block's
// order; the member at position px has its pre-update embedding in saved row row0 + rsign * px;
// messages come from predecessors (preds) or successors.
struct Group {
  int lo, hi;
  int64_t row0;
  int rsign;
  bool preds;
  __device__ bool has(int px) const { return lo <= px && px < hi; }
  __device__ int64_t row(int px) const { return row0 + static_cast<int64_t>(rsign) * px; }
};

// Where a member's node-gradient contributions go: rows[x * D ...] for the node s + x of the
// block, emb_row for the embedding; `replace`: the member's own row is overwritten (direct
// writes into grad) rather than accumulated (deltas).
template <typename S>
struct Sink {
  S* rows;
  S* emb_row;
  bool replace;
};

template <typename S>
struct Gates {
  S r, z, n, hn;
};

// Everything one CTA (graph) does. KD, KH: hidden and message sizes at compile time (0: runtime).
template <typename S, int KD, int KH>
struct Prop {
  const Args<S>& a;
  const int lane, warp, tid, nthreads;
  const int64_t g;
  int D_, Hm_, ld1, ld2, ldg;
  S* smem;
  S* W;       // weights region (padded sets)
  S* acc;     // this warp's parameter-gradient copy
  S* acc0;    // warp 0's (the warps' copies follow each other)
  S* dl;      // this warp's delta rows
  S* dl0;     // warp 0's
  int64_t dl_stride;
  S *emb, *gemb;                                   // block vectors (D)
  S *m, *act, *act_sum, *dgi, *dgh, *dm, *da, *dp;  // this warp's vectors
  int32_t *pos, *dep0, *dep1, *up0, *dn0, *up1, *dn1;
  // the block being processed
  int64_t s;
  int n;
  const S* w;  // its weight set
  bool use_emb;
  int loaded;  // the set held by a non-resident weights region, -1 none

  __device__ Prop(const Args<S>& args, S* smem_)
      : a(args),
        lane(threadIdx.x % kWarp),
        warp(threadIdx.x / kWarp),
        tid(threadIdx.x),
        nthreads(blockDim.x),
        g(blockIdx.x),
        D_(args.D),
        Hm_(args.Hm),
        smem(smem_),
        loaded(-1) {
    ld1 = a.L.ld[kW1];
    ld2 = a.L.ld[kW2];
    ldg = a.L.ld[kWih];
    const int64_t Dr = round4(a.D), Hr = round4(a.Hm), D3r = round4(3 * a.D);
    emb = smem;
    gemb = smem + Dr;
    S* sc = smem + 2 * Dr + static_cast<int64_t>(warp) * a.scratch_stride;
    m = sc;
    dm = m + Dr;
    act = dm + Dr;
    act_sum = act + Hr;
    da = act_sum + Hr;
    dp = da + Hr;
    dgi = dp + Hr;
    dgh = dgi + D3r;
    W = region(a.weights);
    acc0 = region(a.acc);
    acc = acc0 + static_cast<int64_t>(warp) * a.L.psize;
    dl_stride = static_cast<int64_t>(a.n_max + 1) * a.D;
    dl0 = region(a.delta);
    dl = dl0 + warp * dl_stride;
    pos = a.iscratch;
    const int64_t N = a.N;
    dep0 = pos + N;
    dep1 = dep0 + N;
    up0 = dep1 + N;
    dn0 = up0 + N;
    up1 = dn0 + N;
    dn1 = up1 + N;
  }

  __device__ int dim() const { return KD > 0 ? KD : D_; }
  __device__ int mdim() const { return KH > 0 ? KH : Hm_; }
  __device__ S* region(const Region& r) const {
    return r.smem ? smem + r.off : a.gws + g * a.gws_per_cta + r.off;
  }

  __device__ void neighbours(int64_t v, bool preds, const int64_t*& nb, int& deg) const {
    if (preds) {
      nb = a.in_src + a.in_ptr[v];
      deg = static_cast<int>(a.in_ptr[v + 1] - a.in_ptr[v]);
    } else {
      nb = a.out_dst + a.out_ptr[v];
      deg = static_cast<int>(a.out_ptr[v + 1] - a.out_ptr[v]);
    }
  }

  // Block-local position of node x of the current block.
  __device__ int local_pos(int64_t x) const { return static_cast<int>(pos[x] - s); }

  // ---------------------------------------------------------------- setup (whole CTA)

  // Copies of the graph's rows, the node positions and the fb update groups (see the file
  // comment). For each sweep, a group is the ascending position range [lo, hi) with
  // up[s + lo] = hi and dn[s + hi - 1] = lo. Ends with a barrier.
  __device__ void setup(int64_t b0, int nb) {
    const int64_t lo_g = a.block_ptr[b0], hi_g = a.block_ptr[b0 + nb];
    const int64_t D = dim();
    for (int64_t i = tid; i < (hi_g - lo_g) * D; i += nthreads) {
      a.h[lo_g * D + i] = a.h_in[lo_g * D + i];
      if (a.grad_in) a.grad[lo_g * D + i] = a.grad_in[lo_g * D + i];
    }
    for (int64_t q = lo_g + tid; q < hi_g; q += nthreads) pos[a.order[q]] = static_cast<int32_t>(q);
    __syncthreads();
    if (!a.fb) return;
    // dep0[q]: the latest earlier position (block-local) among the predecessors of order[q], -1
    // if none; dep1[q]: the earliest later position <= n - 2 among its successors, n if none.
    for (int64_t q = lo_g + tid; q < hi_g; q += nthreads) {
      int64_t lo = b0, hi = b0 + nb;  // the block of q: block_ptr[bq] <= q < block_ptr[bq + 1]
      while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (a.block_ptr[mid] <= q) lo = mid; else hi = mid;
      }
      const int64_t bs = a.block_ptr[lo];
      const int bn = static_cast<int>(a.block_ptr[lo + 1] - bs), k = static_cast<int>(q - bs);
      const int64_t v = a.order[q];
      int d0 = -1, d1 = bn;
      for (int64_t j = a.in_ptr[v]; j < a.in_ptr[v + 1]; ++j) {
        const int pu = static_cast<int>(pos[a.in_src[j]] - bs);
        if (pu < k) d0 = max(d0, pu);
      }
      for (int64_t j = a.out_ptr[v]; j < a.out_ptr[v + 1]; ++j) {
        const int pu = static_cast<int>(pos[a.out_dst[j]] - bs);
        if (pu > k && pu <= bn - 2) d1 = min(d1, pu);
      }
      dep0[q] = d0;
      dep1[q] = d1;
    }
    __syncthreads();
    // Greedy groups, one thread per block.
    for (int64_t bq = b0 + tid; bq < b0 + nb; bq += nthreads) {
      const int64_t bs = a.block_ptr[bq];
      const int bn = static_cast<int>(a.block_ptr[bq + 1] - bs);
      // forward sweep, ascending: position k joins [lo, k) unless it reads a node written there
      int lo = 0;
      for (int k = 1; k < bn; ++k) {
        if (dep0[bs + k] >= lo) {
          up0[bs + lo] = k;
          dn0[bs + k - 1] = lo;
          lo = k;
        }
      }
      up0[bs + lo] = bn;
      dn0[bs + bn - 1] = lo;
      // reverse sweep over positions n-2 .. 0, descending: k joins [k + 1, hi) unless it reads
      // a node written there
      if (bn >= 2) {
        int hi = bn - 1;
        for (int k = bn - 3; k >= 0; --k) {
          if (dep1[bs + k] < hi) {
            up1[bs + k + 1] = hi;
            dn1[bs + hi - 1] = k + 1;
            hi = k + 1;
          }
        }
        up1[bs] = hi;
        dn1[bs + hi - 1] = 0;
      }
    }
    __syncthreads();
  }

  // Padded copy of parameter set p at dst (whole CTA; no barrier).
  __device__ void load_set(S* dst, int p) {
    for (int k = 0; k < 8; ++k) {
      const int rows = a.L.rows[k], cols = a.L.cols[k], ld = a.L.ld[k];
      const int64_t size = static_cast<int64_t>(rows) * cols;
      const S* src = a.params[k] + p * size;
      S* out = dst + a.L.poff[k];
      for (int64_t i = tid; i < size; i += nthreads) {
        const int64_t r = i / cols, c = i - r * cols;
        out[r * ld + c] = src[i];
      }
    }
  }

  // Block b of the graph (first block b0): its range, weights and embedding. Ends with a barrier.
  __device__ void begin_block(int64_t b0, int b) {
    s = a.block_ptr[b0 + b];
    n = static_cast<int>(a.block_ptr[b0 + b + 1] - s);
    const int p = min(b, a.P - 1);
    if (!a.resident && p != loaded) {
      __syncthreads();  // nobody reads the previous set any more
      load_set(W, p);
      loaded = p;
    }
    w = W + (a.resident ? p * a.L.psize : 0);
    use_emb = a.pe && b > 0;
    if (use_emb) {  // mean of the previous block (its final embeddings)
      const int64_t ps = a.block_ptr[b0 + b - 1];
      const int64_t D = dim();
      for (int j = tid; j < D; j += nthreads) {
        S sum = S(0);
        for (int64_t v = ps; v < s; ++v) sum += a.h[v * D + j];
        emb[j] = sum / S(s - ps);
      }
    }
    __syncthreads();
  }

  // ---------------------------------------------------------------- one member (one warp)

  // act[c] = relu(b1 + W1 x)[c] for the lane's units c (act_sum += act when sum).
  __device__ void hidden(const S* x, bool sum) {
    const S* w1 = w + a.L.poff[kW1];
    const S* b1 = w + a.L.poff[kB1];
    for (int c = lane; c < mdim(); c += kWarp) {
      const S pre = b1[c] + dot<KD>(w1 + c * ld1, 1, x, dim());
      const S y = pre > S(0) ? pre : S(0);
      act[c] = y;
      if (sum) act_sum[c] += y;
    }
  }

  // m = sum over the neighbours of MLP(state) (+ emb); state(u) gives a neighbour's embedding.
  template <typename State>
  __device__ void message(const int64_t* nb, int deg, bool with_emb, bool keep_sum, State state) {
    const int D = dim();
    const S* w2 = w + a.L.poff[kW2];
    const S* b2 = w + a.L.poff[kB2];
    for (int i = lane; i < D; i += kWarp) m[i] = S(0);
    if (keep_sum)
      for (int c = lane; c < mdim(); c += kWarp) act_sum[c] = S(0);
    for (int q = 0; q < deg; ++q) {
      hidden(state(nb[q]), keep_sum);
      __syncwarp();
      for (int i = lane; i < D; i += kWarp) m[i] += b2[i] + dot<KH>(w2 + i * ld2, 1, act, mdim());
      __syncwarp();  // act is rewritten by the next neighbour
    }
    if (with_emb)
      for (int i = lane; i < D; i += kWarp) m[i] += emb[i];
    __syncwarp();
  }

  // The GRU gates of unit j from the message m and the state xv.
  __device__ Gates<S> gates(int j, const S* xv) const {
    const int D = dim();
    const S* wi = w + a.L.poff[kWih];
    const S* wh = w + a.L.poff[kWhh];
    const S* bi = w + a.L.poff[kBih];
    const S* bh = w + a.L.poff[kBhh];
    const S ir = bi[j] + dot<KD>(wi + j * ldg, 1, m, D);
    const S iz = bi[D + j] + dot<KD>(wi + (D + j) * ldg, 1, m, D);
    const S in = bi[2 * D + j] + dot<KD>(wi + (2 * D + j) * ldg, 1, m, D);
    const S hr = bh[j] + dot<KD>(wh + j * ldg, 1, xv, D);
    const S hz = bh[D + j] + dot<KD>(wh + (D + j) * ldg, 1, xv, D);
    const S hn = bh[2 * D + j] + dot<KD>(wh + (2 * D + j) * ldg, 1, xv, D);
    Gates<S> gt;
    gt.r = gate_sigmoid(ir + hr);
    gt.z = gate_sigmoid(iz + hz);
    gt.hn = hn;
    gt.n = gate_tanh(in + gt.r * hn);
    return gt;
  }

  // The embedding of node x before group G: members' from saved, the others' from h.
  __device__ const S* pre_state(int64_t x, const Group& G) const {
    const int px = local_pos(x);
    return G.has(px) ? a.saved + G.row(px) * dim() : a.h + x * dim();
  }

  // Forward update of the member at position px: writes its new embedding into h.
  __device__ void forward_member(const Group& G, int px) {
    const int D = dim();
    const int64_t v = a.order[s + px];
    const int64_t* nb;
    int deg;
    neighbours(v, G.preds, nb, deg);
    message(nb, deg, use_emb && G.preds && deg == 0, false,
            [&](int64_t u) { return pre_state(u, G); });
    const S* xv = pre_state(v, G);  // its saved row: writing h[v] below does not disturb it
    S* out = a.h + v * D;
    for (int j = lane; j < D; j += kWarp) {
      const Gates<S> gt = gates(j, xv);
      out[j] = (S(1) - gt.z) * gt.n + gt.z * xv[j];
    }
    __syncwarp();  // the warp's vectors are reused by its next member
  }

  // Backward of the member at position px (h holds the pre-group state of every node, grad the
  // gradient after the group): node gradients into `out`, parameter gradients into acc.
  __device__ void backward_member(const Group& G, int px, const Sink<S>& out) {
    const int D = dim(), H = mdim(), D3 = 3 * D;
    const int64_t v = a.order[s + px];
    const int64_t* nb;
    int deg;
    neighbours(v, G.preds, nb, deg);
    const bool with_emb = use_emb && G.preds && deg == 0;
    message(nb, deg, with_emb, true, [&](int64_t u) { return a.h + u * D; });
    const S* hv = a.h + v * D;
    const S* gv = a.grad + v * D;
    S* own = out.rows + (v - s) * D;
    for (int j = lane; j < D; j += kWarp) {
      const Gates<S> gt = gates(j, hv);
      const S gj = gv[j];  // read before `own` (possibly the same row) is written
      const S dn = gj * (S(1) - gt.z);
      const S dz = gj * (hv[j] - gt.n);
      own[j] = (out.replace ? S(0) : own[j]) + gj * gt.z;
      const S dpn = dn * (S(1) - gt.n * gt.n);
      const S dr = dpn * gt.hn;
      const S dpr = dr * gt.r * (S(1) - gt.r);
      const S dpz = dz * gt.z * (S(1) - gt.z);
      dgi[j] = dpr;
      dgi[D + j] = dpz;
      dgi[2 * D + j] = dpn;
      dgh[j] = dpr;
      dgh[D + j] = dpz;
      dgh[2 * D + j] = dpn * gt.r;
    }
    __syncwarp();
    const S* wi = w + a.L.poff[kWih];
    const S* wh = w + a.L.poff[kWhh];
    S* a_wih = acc + a.L.poff[kWih];
    S* a_whh = acc + a.L.poff[kWhh];
    // lane i owns column i of every matrix gradient it touches: no two lanes write one entry
    for (int i = lane; i < D; i += kWarp) {
      own[i] += dot<3 * KD>(wh + i, ldg, dgh, D3);  // W_hh^T dgh
      dm[i] = dot<3 * KD>(wi + i, ldg, dgi, D3);    // W_ih^T dgi
      const S mi = m[i], hi = hv[i];
#pragma unroll 4
      for (int q = 0; q < D3; ++q) {
        a_wih[q * ldg + i] += dgi[q] * mi;
        a_whh[q * ldg + i] += dgh[q] * hi;
      }
    }
    for (int q = lane; q < D3; q += kWarp) {
      acc[a.L.poff[kBih] + q] += dgi[q];
      acc[a.L.poff[kBhh] + q] += dgh[q];
    }
    __syncwarp();  // dm complete
    if (with_emb)
      for (int i = lane; i < D; i += kWarp) out.emb_row[i] += dm[i];
    if (deg > 0) {
      const S* w1 = w + a.L.poff[kW1];
      const S* w2 = w + a.L.poff[kW2];
      S* a_w1 = acc + a.L.poff[kW1];
      S* a_w2 = acc + a.L.poff[kW2];
      // dm is the same for every neighbour: da = W2^T dm, and the W2 gradient is dm x act_sum
      for (int c = lane; c < H; c += kWarp) {
        da[c] = dot<KD>(w2 + c, ld2, dm, D);
        const S as = act_sum[c];
#pragma unroll 4
        for (int i = 0; i < D; ++i) a_w2[i * ld2 + c] += dm[i] * as;
      }
      for (int i = lane; i < D; i += kWarp) acc[a.L.poff[kB2] + i] += S(deg) * dm[i];
      __syncwarp();  // da complete
      const S* b1 = w + a.L.poff[kB1];
      for (int q = 0; q < deg; ++q) {
        const int64_t u = nb[q];
        const S* x = a.h + u * D;
        for (int c = lane; c < H; c += kWarp) {
          const S pre = b1[c] + dot<KD>(w1 + c * ld1, 1, x, D);
          const S d = pre > S(0) ? da[c] : S(0);
          dp[c] = d;
          acc[a.L.poff[kB1] + c] += d;
        }
        __syncwarp();
        S* gu = out.rows + (u - s) * D;
        for (int i = lane; i < D; i += kWarp) {
          gu[i] += dot<KH>(w1 + i, ld1, dp, H);  // W1^T dp
          const S xi = x[i];
#pragma unroll 4
          for (int c = 0; c < H; ++c) a_w1[c * ld1 + i] += dp[c] * xi;
        }
        __syncwarp();  // dp is rewritten by the next neighbour
      }
    }
    __syncwarp();
  }

  // ---------------------------------------------------------------- groups (whole CTA)

  __device__ void forward_group(const Group& G) {
    const int D = dim(), size = G.hi - G.lo;
    if (size == 1) {  // one warp, no barrier between the copy and the update
      if (warp == 0) {
        const int64_t v = a.order[s + G.lo];
        S* row = a.saved + G.row(G.lo) * D;
        for (int j = lane; j < D; j += kWarp) row[j] = a.h[v * D + j];
        __syncwarp();
        forward_member(G, G.lo);
      }
    } else {
      for (int64_t i = tid; i < static_cast<int64_t>(size) * D; i += nthreads) {
        const int px = G.lo + static_cast<int>(i / D), j = static_cast<int>(i % D);
        a.saved[G.row(px) * D + j] = a.h[a.order[s + px] * D + j];
      }
      __syncthreads();
      for (int k = warp; k < size; k += a.warps) forward_member(G, G.lo + k);
    }
    __syncthreads();
  }

  __device__ void backward_group(const Group& G) {
    const int D = dim(), size = G.hi - G.lo;
    if (size == 1) {  // one warp, gradients straight into grad
      if (warp == 0) {
        const int64_t v = a.order[s + G.lo];
        const S* row = a.saved + G.row(G.lo) * D;
        for (int j = lane; j < D; j += kWarp) a.h[v * D + j] = row[j];
        __syncwarp();
        backward_member(G, G.lo, Sink<S>{a.grad + s * D, gemb, true});
      }
    } else {
      for (int64_t i = tid; i < static_cast<int64_t>(size) * D; i += nthreads) {
        const int px = G.lo + static_cast<int>(i / D), j = static_cast<int>(i % D);
        a.h[a.order[s + px] * D + j] = a.saved[G.row(px) * D + j];
      }
      __syncthreads();
      for (int k = warp; k < size; k += a.warps)
        backward_member(G, G.lo + k, Sink<S>{dl, dl + static_cast<int64_t>(a.n_max) * D, false});
      __syncthreads();
      // sum the warps' deltas in warp order: members' rows replace their gradient, the others'
      // add to it, the last row is the embedding's
      for (int64_t i = tid; i < static_cast<int64_t>(n + 1) * D; i += nthreads) {
        const int x = static_cast<int>(i / D), j = static_cast<int>(i % D);
        const int64_t r = (x < n ? x : a.n_max) * static_cast<int64_t>(D) + j;
        S sum = S(0);
        for (int k = 0; k < a.warps; ++k) {
          sum += dl0[k * dl_stride + r];
          dl0[k * dl_stride + r] = S(0);
        }
        if (x < n) {
          S* gr = a.grad + (s + x) * D + j;
          *gr = (G.has(local_pos(s + x)) ? S(0) : *gr) + sum;
        } else {
          gemb[j] += sum;
        }
      }
    }
    __syncthreads();
  }

  // Sums the warps' gradient copies of set p into the CTA's slot and zeroes them.
  __device__ void flush(int p) {
    __syncthreads();
    S* slot = a.slots + (g * a.P + p) * a.L.usize;
    for (int k = 0; k < 8; ++k) {
      const int cols = a.L.cols[k], ld = a.L.ld[k];
      const int64_t size = static_cast<int64_t>(a.L.rows[k]) * cols;
      for (int64_t i = tid; i < size; i += nthreads) {
        const int64_t r = i / cols, c = i - r * cols;
        const int64_t e = a.L.poff[k] + r * ld + c;
        S sum = S(0);
        for (int q = 0; q < a.warps; ++q) {
          sum += acc0[q * a.L.psize + e];
          acc0[q * a.L.psize + e] = S(0);
        }
        slot[a.L.uoff[k] + i] += sum;
      }
    }
    __syncthreads();
  }

  // ---------------------------------------------------------------- the schedule

  __device__ int64_t pass_rows() const { return a.fb ? 2 * n - 1 : 2 * n; }

  __device__ void forward() {
    const int64_t b0 = a.gbp[g];
    const int nb = static_cast<int>(a.gbp[g + 1] - b0);
    if (nb == 0) return;
    setup(b0, nb);
    if (a.resident) {
      for (int p = 0; p < a.P; ++p) load_set(W + p * a.L.psize, p);
    }
    const int64_t D = dim();
    for (int b = 0; b < nb; ++b) {
      begin_block(b0, b);  // (its barrier also publishes the resident sets)
      if (a.fb)  // the last T rows of the block's saved rows are unused
        for (int64_t i = tid; i < a.T * D; i += nthreads)
          a.saved[(2 * a.T * s + a.T * (2 * n - 1)) * D + i] = S(0);
      for (int t = 0; t < a.T; ++t) {
        const int64_t base = 2 * a.T * s + t * pass_rows();
        if (a.fb) {
          for (int lo = 0, hi; lo < n; lo = hi) {
            hi = up0[s + lo];
            forward_group(Group{lo, hi, base, 1, true});
          }
          for (int hi = n - 1, lo; hi > 0; hi = lo) {
            lo = dn1[s + hi - 1];
            forward_group(Group{lo, hi, base + 2 * n - 2, -1, false});
          }
        } else {
          forward_group(Group{0, n, base, 1, true});
          forward_group(Group{0, n, base + n, 1, false});
        }
      }
    }
  }

  __device__ void backward() {
    const int64_t b0 = a.gbp[g];
    const int nb = static_cast<int>(a.gbp[g + 1] - b0);
    if (nb == 0) return;
    for (int64_t i = tid; i < static_cast<int64_t>(a.warps) * a.L.psize; i += nthreads) acc0[i] = S(0);
    for (int64_t i = tid; i < static_cast<int64_t>(a.warps) * dl_stride; i += nthreads) dl0[i] = S(0);
    for (int j = tid; j < dim(); j += nthreads) gemb[j] = S(0);
    setup(b0, nb);  // (its barriers publish the zeroing too)
    if (a.resident) {
      for (int p = 0; p < a.P; ++p) load_set(W + p * a.L.psize, p);
    }
    const int64_t D = dim();
    for (int b = nb - 1; b >= 0; --b) {
      const int64_t s_b = a.block_ptr[b0 + b];
      const int n_b = static_cast<int>(a.block_ptr[b0 + b + 1] - s_b);
      // gemb holds the gradient of block b + 1's embedding, the mean of this block
      if (a.pe && b + 1 < nb)
        for (int64_t i = tid; i < n_b * D; i += nthreads)
          a.grad[s_b * D + i] += gemb[i % D] / S(n_b);
      __syncthreads();
      for (int j = tid; j < D; j += nthreads) gemb[j] = S(0);
      begin_block(b0, b);
      const int p = min(b, a.P - 1);
      for (int t = a.T - 1; t >= 0; --t) {
        const int64_t base = 2 * a.T * s + t * pass_rows();
        if (a.fb) {  // undo the reverse sweep (ascending), then the forward sweep (descending)
          for (int lo = 0, hi; lo < n - 1; lo = hi) {
            hi = up1[s + lo];
            backward_group(Group{lo, hi, base + 2 * n - 2, -1, false});
          }
          for (int hi = n, lo; hi > 0; hi = lo) {
            lo = dn0[s + hi - 1];
            backward_group(Group{lo, hi, base, 1, true});
          }
        } else {
          backward_group(Group{0, n, base + n, 1, false});
          backward_group(Group{0, n, base, 1, true});
        }
      }
      if (b == 0 || min(b - 1, a.P - 1) != p) flush(p);
    }
  }
};

// Sizes and flags of `args` (everything but the pointers and the workspace placement).
template <typename S>
void set_sizes(Args<S>& args, int64_t N, int D, int Hm, int P, int T, int n_max, bool fb, bool pe) {
  args.L = make_layout(D, Hm);
  args.N = N;
  args.D = D;
  args.Hm = Hm;
  args.P = P;
  args.T = T;
  args.warps = kWarps;
  args.n_max = n_max;
  args.fb = fb;
  args.pe = pe;
}

// Places the workspace regions of `args` (sizes, P and n_max already set) in at most
// `budget_bytes` of shared memory, in order of benefit: the weights (all P sets if they fit, else
// one), then (backward) the delta rows and the gradient copies; the rest goes to the global
// workspace (args.gws_per_cta elements per CTA). Returns the shared memory bytes, or 0 if even
// the warps' vectors do not fit.
template <typename S>
size_t place_workspace(Args<S>& args, int64_t budget_bytes, bool backward) {
  const int64_t D = args.D, Hm = args.Hm;
  args.scratch_stride = static_cast<int>(2 * round4(D) + 4 * round4(Hm) + 2 * round4(3 * D));
  const int64_t budget = budget_bytes / static_cast<int64_t>(sizeof(S));
  int64_t smem = 2 * round4(D) + static_cast<int64_t>(args.warps) * args.scratch_stride;
  if (smem > budget) return 0;
  int64_t gws = 0;
  auto place = [&](int64_t size, Region& r) {
    size = round4(size);
    if (smem + size <= budget) {
      r = Region{smem, true};
      smem += size;
    } else {
      r = Region{gws, false};
      gws += size;
    }
  };
  const int64_t set = args.L.psize;
  args.resident = smem + args.P * set <= budget;
  place(args.resident ? args.P * set : set, args.weights);
  if (backward) {
    place(static_cast<int64_t>(args.warps) * (args.n_max + 1) * D, args.delta);
    place(static_cast<int64_t>(args.warps) * set, args.acc);
  }
  args.gws_per_cta = gws;
  return static_cast<size_t>(smem) * sizeof(S);
}

}  // namespace propagate_detail
}  // namespace ghn_ext
