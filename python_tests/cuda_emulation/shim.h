// Just enough of CUDA's device built-ins to compile csrc/cuda/propagate_kernel.cuh and
// csrc/cuda/emit_kernel.cuh for the CPU: each CUDA thread of a CTA becomes a std::thread,
// __syncthreads a barrier of the CTA's threads and __syncwarp a barrier of the warp's 32 (every
// call site of the kernel is warp-uniform, as CUDA requires). Test-only: python_tests/test_*_cuda_emulated.py.
#pragma once

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline

struct EmuDim3 {
  unsigned x = 0, y = 1, z = 1;
};
inline thread_local EmuDim3 threadIdx, blockIdx, blockDim, gridDim;

struct EmuCta {
  std::barrier<>* cta = nullptr;
  std::vector<std::unique_ptr<std::barrier<>>>* warps = nullptr;
};
inline thread_local EmuCta emu_cta;

inline void __syncthreads() { emu_cta.cta->arrive_and_wait(); }
inline void __syncwarp() { (*emu_cta.warps)[threadIdx.x / 32]->arrive_and_wait(); }

struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) double2 {
  double x, y;
};

// The explicitly rounded arithmetic of the emission kernels: plain IEEE operations on the host,
// where x86-64 builds without -mfma do not contract a * b + c.
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __longlong_as_double(long long bits) {
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

using std::max;
using std::min;
