// CUDA implementation of ghn_ext::dag_schedule (same semantics as csrc/cpu/schedule_cpu.cpp).
//
// Pipeline, all on the current stream of the inputs' device:
//   1. validate_kernel: node_ptr monotone / first 0 / last N, every edge in range and inside one
//      graph; counts in/out degrees. One small device->host copy of the error flags follows (sync
//      #1). On an error the inputs are copied to the CPU and checked there, so the message is
//      exactly the CPU's / the Python reference's (first offending entry by index).
//   2. CSRs: in_ptr/out_ptr are prefix sums of the degrees; the neighbour lists come from sorting
//      the composite keys dst*N+src (incoming) and src*N+dst (outgoing) with ATen's device sort,
//      which also sorts neighbours ascending within a node (duplicates kept).
//   3. kahn_levels_kernel: one thread block per graph runs a level-synchronous Kahn: the frontier
//      of level L lives in a queue slice; each thread takes frontier nodes, decrements successor
//      in-degrees with atomics, and a successor whose in-degree hits 0 joins level L+1. A level is
//      finished before the next starts (block barrier), so a node's level is 1 + the largest level
//      of its predecessors: the longest-path depth. A graph whose queue ends short of its node
//      count has a cycle: its index is recorded with atomicMin (lowest cycling graph wins, as on
//      the CPU). The block also writes sort_key[v] = node_ptr[g] + level[v]: levels are < the
//      graph's size, so keys of graph g lie in [node_ptr[g], node_ptr[g+1]) and a stable sort of
//      the keys (ties keep ascending node id) yields the order by (graph, level, id).
//      The cycle flag is copied back right after this kernel (sync #2) and raised as a ValueError.
//   4. A stable device sort of sort_key gives `order`; reverse_kernel mirrors each graph's segment.
// Graphs are small (< a few thousand nodes), so one block per graph is plenty; batches fill the
// GPU with many blocks. Limits: N < 2^31 (int32 in-degree counters; composite keys fit in int64).
#include "../schedule.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace ghn_ext {

namespace {

constexpr const char* kOp = "ghn_ext.dag_schedule: ";
constexpr int kThreads = 256;
constexpr int64_t kNoGraph = std::numeric_limits<int64_t>::max();

// status[] slots written by validate_kernel
constexpr int kBadNodePtr = 0;
constexpr int kBadEdge = 1;

int64_t num_blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return std::max<int64_t>(1, std::min<int64_t>(blocks, int64_t{1} << 16));
}

// Index g with ptr[g] <= node < ptr[g+1] in a non-decreasing ptr[0..B] (empty graphs skipped);
// -1 or B when the node lies outside [ptr[0], ptr[B]).
__device__ __forceinline__ int64_t graph_of(const int64_t* ptr, int64_t B, int64_t node) {
  int64_t lo = 0;
  int64_t hi = B + 1;  // upper_bound over ptr[0..B]
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (ptr[mid] <= node) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo - 1;
}

__global__ void validate_node_ptr_kernel(const int64_t* __restrict__ ptr, int64_t B, int64_t N,
                                         int64_t* __restrict__ status) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i <= B;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const bool bad = (i == 0 && ptr[0] != 0) || (i < B && ptr[i] > ptr[i + 1]) ||
                     (i == B && ptr[B] != N);
    if (bad) status[kBadNodePtr] = 1;
  }
}

// Runs after validate_node_ptr_kernel on the same stream; does nothing if node_ptr is bad (the
// binary search needs a monotone node_ptr to be meaningful).
__global__ void validate_edges_kernel(const int64_t* __restrict__ src,
                                      const int64_t* __restrict__ dst, int64_t E, int64_t N,
                                      const int64_t* __restrict__ ptr, int64_t B,
                                      int64_t* __restrict__ status,
                                      unsigned long long* __restrict__ out_count,
                                      unsigned long long* __restrict__ in_count) {
  if (status[kBadNodePtr] != 0) return;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < E;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t u = src[e];
    const int64_t v = dst[e];
    if (u < 0 || u >= N || v < 0 || v >= N) {
      status[kBadEdge] = 1;
      continue;
    }
    const int64_t g = graph_of(ptr, B, u);
    if (g < 0 || g >= B || v < ptr[g] || v >= ptr[g + 1]) {
      status[kBadEdge] = 1;
      continue;
    }
    // counts are shifted by one so that an inclusive prefix sum gives the CSR offsets
    atomicAdd(out_count + u + 1, 1ULL);
    atomicAdd(in_count + v + 1, 1ULL);
  }
}

// keys[e] = major[e] * N + minor[e]
__global__ void composite_key_kernel(const int64_t* __restrict__ major,
                                     const int64_t* __restrict__ minor, int64_t E, int64_t N,
                                     int64_t* __restrict__ keys) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < E;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    keys[e] = major[e] * N + minor[e];
  }
}

// out[e] = keys[e] % N (the minor part of a sorted composite key)
__global__ void key_minor_kernel(const int64_t* __restrict__ keys, int64_t E, int64_t N,
                                 int64_t* __restrict__ out) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < E;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[e] = keys[e] % N;
  }
}

// One block per graph; see the file comment (step 3).
__global__ void kahn_levels_kernel(const int64_t* __restrict__ ptr,
                                   const int64_t* __restrict__ in_ptr,
                                   const int64_t* __restrict__ out_ptr,
                                   const int64_t* __restrict__ out_dst,
                                   int* __restrict__ indeg,       // N scratch
                                   int64_t* __restrict__ queue,   // N scratch
                                   int64_t* __restrict__ level,   // N output
                                   int64_t* __restrict__ sort_key,  // N scratch
                                   int64_t* __restrict__ cycle_graph) {
  const int64_t g = blockIdx.x;
  const int64_t a = ptr[g];
  const int64_t b = ptr[g + 1];
  __shared__ int tail;  // queue length, relative to a
  if (threadIdx.x == 0) tail = 0;
  __syncthreads();

  for (int64_t v = a + threadIdx.x; v < b; v += blockDim.x) {
    const int d = static_cast<int>(in_ptr[v + 1] - in_ptr[v]);
    indeg[v] = d;
    level[v] = 0;
    if (d == 0) queue[a + atomicAdd(&tail, 1)] = v;
  }
  __syncthreads();

  int head = 0;
  int end = tail;  // identical in every thread: the loop below is block-uniform
  __syncthreads();
  int64_t next_level = 1;
  while (head < end) {
    for (int i = head + threadIdx.x; i < end; i += blockDim.x) {
      const int64_t u = queue[a + i];
      for (int64_t k = out_ptr[u]; k < out_ptr[u + 1]; ++k) {
        const int64_t w = out_dst[k];
        if (atomicSub(indeg + w, 1) == 1) {  // last predecessor of w done: w is on next level
          level[w] = next_level;
          queue[a + atomicAdd(&tail, 1)] = w;
        }
      }
    }
    __syncthreads();  // level finished, tail final for it
    head = end;
    end = tail;
    ++next_level;
    __syncthreads();  // everyone read tail before the next level appends to it
  }

  if (end != b - a) {
    if (threadIdx.x == 0) {
      atomicMin(reinterpret_cast<long long*>(cycle_graph), static_cast<long long>(g));
    }
    return;
  }
  for (int64_t v = a + threadIdx.x; v < b; v += blockDim.x) sort_key[v] = a + level[v];
}

// reverse_order[i] = order[a + b - 1 - i] for i in graph g's segment [a, b)
__global__ void reverse_kernel(const int64_t* __restrict__ ptr, int64_t B, int64_t N,
                               const int64_t* __restrict__ order,
                               int64_t* __restrict__ reverse_order) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < N;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t g = graph_of(ptr, B, i);
    reverse_order[i] = order[ptr[g] + ptr[g + 1] - 1 - i];
  }
}

// Sorted minor parts of the composite keys major*N+minor, e.g. in_src for (dst, src).
at::Tensor sorted_neighbours(const at::Tensor& major, const at::Tensor& minor, int64_t N,
                             cudaStream_t stream) {
  const int64_t E = major.numel();
  at::Tensor keys = at::empty({E}, major.options());
  composite_key_kernel<<<num_blocks(E), kThreads, 0, stream>>>(
      major.const_data_ptr<int64_t>(), minor.const_data_ptr<int64_t>(), E, N,
      keys.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const at::Tensor sorted = std::get<0>(at::sort(keys, /*dim=*/0, /*descending=*/false));
  at::Tensor out = at::empty({E}, major.options());
  key_minor_kernel<<<num_blocks(E), kThreads, 0, stream>>>(sorted.const_data_ptr<int64_t>(), E,
                                                           N, out.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

ScheduleResult dag_schedule_cuda(const at::Tensor& edge_index_in, const at::Tensor& node_ptr_in,
                                 int64_t num_nodes) {
  dag_schedule_check_meta(edge_index_in, node_ptr_in, num_nodes);
  TORCH_CHECK_VALUE(edge_index_in.is_cuda(), kOp, "the CUDA kernel got tensors on ",
                    edge_index_in.device());
  TORCH_CHECK_VALUE(num_nodes < std::numeric_limits<int>::max(), kOp,
                    "the CUDA kernel supports fewer than 2^31 nodes, got num_nodes = ", num_nodes);

  const c10::cuda::OptionalCUDAGuard device_guard(edge_index_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const at::Tensor edge_index = edge_index_in.contiguous();
  const at::Tensor node_ptr = node_ptr_in.contiguous();
  const int64_t N = num_nodes;
  const int64_t B = node_ptr.size(0) - 1;
  const int64_t E = edge_index.size(1);
  const auto opts = edge_index.options();
  const at::Tensor src = edge_index.select(0, 0);  // contiguous rows of a contiguous (2, E)
  const at::Tensor dst = edge_index.select(0, 1);
  const int64_t* ptr = node_ptr.const_data_ptr<int64_t>();

  // 1. validation + degree counts
  at::Tensor status = at::zeros({2}, opts);
  at::Tensor out_ptr = at::zeros({N + 1}, opts);
  at::Tensor in_ptr = at::zeros({N + 1}, opts);
  validate_node_ptr_kernel<<<num_blocks(B + 1), kThreads, 0, stream>>>(ptr, B, N,
                                                                       status.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (E > 0) {
    static_assert(sizeof(unsigned long long) == sizeof(int64_t), "64-bit counters expected");
    validate_edges_kernel<<<num_blocks(E), kThreads, 0, stream>>>(
        src.const_data_ptr<int64_t>(), dst.const_data_ptr<int64_t>(), E, N, ptr, B,
        status.data_ptr<int64_t>(), reinterpret_cast<unsigned long long*>(out_ptr.data_ptr<int64_t>()),
        reinterpret_cast<unsigned long long*>(in_ptr.data_ptr<int64_t>()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  {
    const at::Tensor status_host = status.cpu();  // sync #1
    const int64_t* s = status_host.const_data_ptr<int64_t>();
    if (s[kBadNodePtr] != 0 || s[kBadEdge] != 0) {
      // Re-check on the host for the exact, deterministic message (first offending entry).
      dag_schedule_check_data_cpu(edge_index.cpu(), node_ptr.cpu(), N);
      TORCH_CHECK(false, kOp, "internal error: the device found invalid inputs that the host "
                  "check accepted; please report this");
    }
  }

  // 2. CSR offsets and sorted neighbour lists
  out_ptr = out_ptr.cumsum(0);
  in_ptr = in_ptr.cumsum(0);
  at::Tensor in_src = E > 0 ? sorted_neighbours(dst, src, N, stream) : at::empty({0}, opts);
  at::Tensor out_dst = E > 0 ? sorted_neighbours(src, dst, N, stream) : at::empty({0}, opts);

  // 3. levels (one block per graph) and the order
  at::Tensor level = at::empty({N}, opts);
  at::Tensor order = at::empty({N}, opts);
  at::Tensor reverse_order = at::empty({N}, opts);
  at::Tensor cycle_graph = at::full({1}, kNoGraph, opts);
  if (B > 0 && N > 0) {
    at::Tensor indeg = at::empty({N}, opts.dtype(at::kInt));
    at::Tensor queue = at::empty({N}, opts);
    at::Tensor sort_key = at::empty({N}, opts);
    kahn_levels_kernel<<<static_cast<unsigned int>(B), kThreads, 0, stream>>>(
        ptr, in_ptr.const_data_ptr<int64_t>(), out_ptr.const_data_ptr<int64_t>(),
        out_dst.const_data_ptr<int64_t>(), indeg.data_ptr<int>(), queue.data_ptr<int64_t>(),
        level.data_ptr<int64_t>(), sort_key.data_ptr<int64_t>(), cycle_graph.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();

    const int64_t bad_graph = cycle_graph.item<int64_t>();  // sync #2
    TORCH_CHECK_VALUE(bad_graph == kNoGraph, dag_schedule_cycle_message(bad_graph));

    // stable: equal keys (same graph and level) keep ascending node id
    order = std::get<1>(at::sort(sort_key, /*stable=*/true, /*dim=*/0, /*descending=*/false));
    reverse_kernel<<<num_blocks(N), kThreads, 0, stream>>>(ptr, B, N,
                                                           order.const_data_ptr<int64_t>(),
                                                           reverse_order.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  return {order, level, reverse_order, in_ptr, in_src, out_ptr, out_dst};
}

TORCH_LIBRARY_IMPL(ghn_ext, CUDA, m) { m.impl("dag_schedule", &dag_schedule_cuda); }

}  // namespace ghn_ext
