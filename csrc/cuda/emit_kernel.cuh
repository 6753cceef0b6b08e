// Device code of the CUDA emission kernels (csrc/cuda/emit_cuda.cu describes them), and the host
// packing of their plan table. A header of its own so that python_tests/cuda_emulation can compile
// the same code for the CPU and check it against the CPU kernel where no GPU is at hand.
#pragma once

#include "../emit.h"

#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace ghn_ext {
namespace emit_detail {

constexpr int kMeta = 10;  // int64 fields per target in the meta table

// int64 entries of the packed table: offsets [T + 1], meta [kMeta * T], and with_nodes the
// backward's node_ptr [N + 1] and node_targets [T].
inline int64_t table_size(const EmitPlan& plan, bool with_nodes) {
  const int64_t T = static_cast<int64_t>(plan.targets.size());
  return (T + 1) + kMeta * T + (with_nodes ? plan.N + 1 + T : 0);
}

// Writes the packed table (see emit_cuda.cu) into h[0 .. table_size): offsets at 0, meta at
// T + 1, node_ptr at T + 1 + kMeta * T, node_targets after it.
inline void pack_plan(const EmitPlan& plan, bool with_nodes, int64_t* h) {
  const int64_t T = static_cast<int64_t>(plan.targets.size());
  int64_t* offsets = h;
  int64_t* meta = h + T + 1;
  int64_t start = 0;
  for (int64_t t = 0; t < T; ++t) {
    const EmitTarget& tg = plan.targets[t];
    offsets[t] = start;
    start += tg.o * tg.i * tg.kh * tg.kw;
    int64_t* m = meta + kMeta * t;
    m[0] = tg.node;
    m[1] = tg.o;
    m[2] = tg.i;
    m[3] = tg.kh;
    m[4] = tg.kw;
    m[5] = tg.row;
    m[6] = tg.col;
    static_assert(sizeof(double) == sizeof(int64_t), "64-bit doubles expected");
    std::memcpy(&m[7], &tg.scale, sizeof(double));
    m[8] = tg.offset;
    m[9] = tg.row_stride;
  }
  offsets[T] = plan.total;
  if (with_nodes) {
    std::vector<int64_t> node_ptr, node_targets;
    plan.targets_by_node(node_ptr, node_targets);
    int64_t* dst = meta + kMeta * T;
    std::copy(node_ptr.begin(), node_ptr.end(), dst);
    std::copy(node_targets.begin(), node_targets.end(), dst + plan.N + 1);
  }
}

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// Largest t in [0, T) with offsets[t] <= pos, for 0 <= pos < offsets[T] (offsets strictly
// increasing, offsets[0] == 0).
__device__ __forceinline__ int64_t target_of(const int64_t* __restrict__ offsets, int64_t T,
                                             int64_t pos) {
  int64_t lo = 0;
  int64_t hi = T;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= pos) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <typename scalar_t>
__global__ void emit_forward_kernel(const scalar_t* __restrict__ blocks,
                                    scalar_t* __restrict__ out,
                                    const int64_t* __restrict__ offsets,
                                    const int64_t* __restrict__ meta, int64_t T, int64_t total,
                                    int Co, int Ci, int K) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t block_numel = static_cast<int64_t>(Co) * Ci * K * K;
  for (int64_t pos = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; pos < total;
       pos += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = target_of(offsets, T, pos);
    const int64_t* m = meta + t * kMeta;
    const uint32_t i = static_cast<uint32_t>(m[2]);
    const uint32_t kh = static_cast<uint32_t>(m[3]);
    const uint32_t kw = static_cast<uint32_t>(m[4]);
    const uint32_t local = static_cast<uint32_t>(pos - offsets[t]);  // < 2^31 (host check)
    const uint32_t area = kh * kw;
    const uint32_t plane = local / area;
    const uint32_t rem = local - plane * area;
    const uint32_t y = rem / kw;
    const uint32_t x = rem - y * kw;
    const uint32_t a = plane / i;
    const uint32_t b = plane - a * i;
    const int64_t src = m[0] * block_numel +
                        (static_cast<int64_t>(a % Co) * Ci + (b % Ci)) * K * K +
                        static_cast<int64_t>(m[5] + y) * K + m[6] + x;
    const opmath_t s = static_cast<opmath_t>(__longlong_as_double(m[7]));
    const int64_t dst = m[8] + static_cast<int64_t>(a) * m[9] + (static_cast<int64_t>(b) * area + rem);
    out[dst] = static_cast<scalar_t>(static_cast<opmath_t>(blocks[src]) * s);
  }
}

template <typename scalar_t>
__global__ void emit_backward_kernel(const scalar_t* __restrict__ grad,
                                     scalar_t* __restrict__ grad_blocks,
                                     const int64_t* __restrict__ meta,
                                     const int64_t* __restrict__ node_ptr,
                                     const int64_t* __restrict__ node_targets, int64_t entries,
                                     int Co, int Ci, int K) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t block_numel = static_cast<int64_t>(Co) * Ci * K * K;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < entries;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = e / block_numel;
    int rest = static_cast<int>(e - n * block_numel);  // < 2^31 (host check)
    const int xx = rest % K;
    rest /= K;
    const int yy = rest % K;
    rest /= K;
    const int q = rest % Ci;
    const int p = rest / Ci;
    acc_t sum = acc_t(0);
    for (int64_t j = node_ptr[n]; j < node_ptr[n + 1]; ++j) {
      const int64_t t = node_targets[j];
      const int64_t* m = meta + t * kMeta;
      const int o = static_cast<int>(m[1]);
      const int i = static_cast<int>(m[2]);
      const int kh = static_cast<int>(m[3]);
      const int kw = static_cast<int>(m[4]);
      const int y = yy - static_cast<int>(m[5]);
      const int x = xx - static_cast<int>(m[6]);
      if (y < 0 || y >= kh || x < 0 || x >= kw) continue;
      const acc_t s = static_cast<acc_t>(__longlong_as_double(m[7]));
      const int64_t area = static_cast<int64_t>(kh) * kw;
      const scalar_t* g = grad + m[8] + static_cast<int64_t>(y) * kw + x;
      for (int64_t a = p; a < o; a += Co) {  // 64-bit: a + Co may pass 2^31
        for (int64_t b = q; b < i; b += Ci) {
          sum = add_rn(sum, mul_rn(static_cast<acc_t>(g[a * m[9] + b * area]), s));
        }
      }
    }
    grad_blocks[e] = static_cast<scalar_t>(sum);
  }
}

}  // namespace emit_detail
}  // namespace ghn_ext
