// CPU implementation of ghn_ext::dag_schedule.
//
// For a batch of DAGs (graph g owns the contiguous node range [node_ptr[g], node_ptr[g+1])) it
// returns, all int64:
//   level         (N)   longest-path depth from the graph's sources (sources are level 0)
//   order         (N)   per graph segment: the graph's nodes sorted by (level, node id)
//   reverse_order (N)   per graph segment: that segment of `order` reversed
//   in_ptr/in_src (N+1)/(E)  incoming-edge CSR, sources ascending within a destination
//   out_ptr/out_dst (N+1)/(E) outgoing-edge CSR, destinations ascending within a source
// Duplicate edges are kept (they count twice in the in-degree and appear twice in the CSR).
//
// Cost O(N + E + B): two counting-sort passes build the sorted CSRs, Kahn's algorithm per graph
// finds the levels and a counting sort by level gives the order. Graphs are independent, so the
// per-graph passes run under at::parallel_for.
#include "../schedule.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <sstream>
#include <vector>

namespace ghn_ext {

namespace {

constexpr const char* kOp = "ghn_ext.dag_schedule: ";

// Below this much work (nodes + edges) threads cost more than they save.
constexpr int64_t kParallelWork = 1 << 15;

int64_t graph_grain(int64_t num_graphs, int64_t work) {
  return work < kParallelWork ? std::max<int64_t>(num_graphs, 1) : 1;
}

}  // namespace

void dag_schedule_check_meta(const at::Tensor& edge_index, const at::Tensor& node_ptr,
                             int64_t num_nodes) {
  TORCH_CHECK_TYPE(edge_index.scalar_type() == at::kLong, kOp,
                   "edge_index must be an int64 (torch.long) tensor, got ",
                   edge_index.scalar_type());
  TORCH_CHECK_TYPE(node_ptr.scalar_type() == at::kLong, kOp,
                   "node_ptr must be an int64 (torch.long) tensor, got ", node_ptr.scalar_type());
  TORCH_CHECK_VALUE(edge_index.dim() == 2 && edge_index.size(0) == 2, kOp,
                    "edge_index must have shape (2, E), got shape ", edge_index.sizes());
  TORCH_CHECK_VALUE(node_ptr.dim() == 1 && node_ptr.size(0) >= 1, kOp,
                    "node_ptr must be a 1-D tensor of B + 1 >= 1 offsets, got shape ",
                    node_ptr.sizes());
  TORCH_CHECK_VALUE(edge_index.device() == node_ptr.device(), kOp,
                    "edge_index and node_ptr must be on the same device, got ",
                    edge_index.device(), " and ", node_ptr.device());
  TORCH_CHECK_VALUE(num_nodes >= 0, kOp, "num_nodes must be non-negative, got ", num_nodes);
}

void dag_schedule_check_data_cpu(const at::Tensor& edge_index_in, const at::Tensor& node_ptr_in,
                                 int64_t num_nodes) {
  const at::Tensor edge_index = edge_index_in.contiguous();
  const at::Tensor node_ptr = node_ptr_in.contiguous();
  const int64_t N = num_nodes;
  const int64_t B = node_ptr.size(0) - 1;
  const int64_t E = edge_index.size(1);
  const int64_t* ptr = node_ptr.const_data_ptr<int64_t>();
  const int64_t* src = edge_index.const_data_ptr<int64_t>();
  const int64_t* dst = src + E;

  TORCH_CHECK_VALUE(ptr[0] == 0, kOp, "node_ptr[0] must be 0, got ", ptr[0]);
  for (int64_t g = 0; g < B; ++g) {
    TORCH_CHECK_VALUE(ptr[g] <= ptr[g + 1], kOp, "node_ptr must be non-decreasing, but node_ptr[",
                      g, "] = ", ptr[g], " > node_ptr[", g + 1, "] = ", ptr[g + 1]);
  }
  TORCH_CHECK_VALUE(ptr[B] == N, kOp, "node_ptr[", B, "] (last entry) must equal num_nodes = ", N,
                    ", got ", ptr[B]);

  // graph id of a node: binary search in node_ptr (upper_bound - 1; empty graphs own no node).
  auto graph_of = [&](int64_t node) -> int64_t {
    return static_cast<int64_t>(std::upper_bound(ptr, ptr + B + 1, node) - ptr) - 1;
  };
  for (int64_t e = 0; e < E; ++e) {
    const int64_t u = src[e];
    const int64_t v = dst[e];
    TORCH_CHECK_VALUE(u >= 0 && u < N, kOp, "edge ", e, " has source node index ", u,
                      " out of range [0, ", N, ")");
    TORCH_CHECK_VALUE(v >= 0 && v < N, kOp, "edge ", e, " has destination node index ", v,
                      " out of range [0, ", N, ")");
    // Fast path: both ends in the same graph's range.
    const int64_t gu = graph_of(u);
    if (v >= ptr[gu] && v < ptr[gu + 1]) continue;
    const int64_t gv = graph_of(v);
    TORCH_CHECK_VALUE(false, kOp, "edge ", e, " (", u, " -> ", v,
                      ") crosses graphs: source node ", u, " is in graph ", gu,
                      " but destination node ", v, " is in graph ", gv,
                      "; edges must stay inside one graph");
  }
}

std::string dag_schedule_cycle_message(int64_t graph) {
  std::ostringstream ss;
  ss << kOp << "graph " << graph << " contains a cycle (self-loop or cycle among its nodes)";
  return ss.str();
}

ScheduleResult dag_schedule_cpu(const at::Tensor& edge_index_in, const at::Tensor& node_ptr_in,
                                int64_t num_nodes) {
  dag_schedule_check_meta(edge_index_in, node_ptr_in, num_nodes);
  TORCH_CHECK_VALUE(edge_index_in.device().is_cpu(), kOp,
                    "the CPU kernel got tensors on ", edge_index_in.device());
  const at::Tensor edge_index = edge_index_in.contiguous();
  const at::Tensor node_ptr = node_ptr_in.contiguous();
  dag_schedule_check_data_cpu(edge_index, node_ptr, num_nodes);

  const int64_t N = num_nodes;
  const int64_t B = node_ptr.size(0) - 1;
  const int64_t E = edge_index.size(1);
  const int64_t* ptr = node_ptr.const_data_ptr<int64_t>();
  const int64_t* src = edge_index.const_data_ptr<int64_t>();
  const int64_t* dst = src + E;

  const auto opts = edge_index.options();
  at::Tensor order = at::empty({N}, opts);
  at::Tensor level = at::zeros({N}, opts);
  at::Tensor reverse_order = at::empty({N}, opts);
  at::Tensor in_ptr = at::zeros({N + 1}, opts);
  at::Tensor in_src = at::empty({E}, opts);
  at::Tensor out_ptr = at::zeros({N + 1}, opts);
  at::Tensor out_dst = at::empty({E}, opts);

  int64_t* order_p = order.data_ptr<int64_t>();
  int64_t* level_p = level.data_ptr<int64_t>();
  int64_t* rev_p = reverse_order.data_ptr<int64_t>();
  int64_t* in_ptr_p = in_ptr.data_ptr<int64_t>();
  int64_t* in_src_p = in_src.data_ptr<int64_t>();
  int64_t* out_ptr_p = out_ptr.data_ptr<int64_t>();
  int64_t* out_dst_p = out_dst.data_ptr<int64_t>();

  // Degrees, then offsets (inclusive prefix sums shifted by one).
  for (int64_t e = 0; e < E; ++e) {
    ++out_ptr_p[src[e] + 1];
    ++in_ptr_p[dst[e] + 1];
  }
  for (int64_t n = 0; n < N; ++n) {
    out_ptr_p[n + 1] += out_ptr_p[n];
    in_ptr_p[n + 1] += in_ptr_p[n];
  }

  // Unsorted outgoing CSR in input edge order (sequential scatter, O(E)).
  std::vector<int64_t> cursor(out_ptr_p, out_ptr_p + N);
  std::vector<int64_t> unsorted_dst(E);
  for (int64_t e = 0; e < E; ++e) unsorted_dst[cursor[src[e]]++] = dst[e];

  const int64_t grain = graph_grain(B, N + E);

  // Sorted incoming CSR: visit sources in ascending id, append each to its destinations' lists.
  // Every edge stays inside its graph, so graphs write disjoint ranges and run in parallel.
  std::copy(in_ptr_p, in_ptr_p + N, cursor.begin());
  at::parallel_for(0, B, grain, [&](int64_t g_begin, int64_t g_end) {
    for (int64_t g = g_begin; g < g_end; ++g) {
      for (int64_t u = ptr[g]; u < ptr[g + 1]; ++u) {
        for (int64_t k = out_ptr_p[u]; k < out_ptr_p[u + 1]; ++k) {
          in_src_p[cursor[unsorted_dst[k]]++] = u;
        }
      }
    }
  });

  // Sorted outgoing CSR: visit destinations in ascending id (same argument).
  std::copy(out_ptr_p, out_ptr_p + N, cursor.begin());
  at::parallel_for(0, B, grain, [&](int64_t g_begin, int64_t g_end) {
    for (int64_t g = g_begin; g < g_end; ++g) {
      for (int64_t v = ptr[g]; v < ptr[g + 1]; ++v) {
        for (int64_t k = in_ptr_p[v]; k < in_ptr_p[v + 1]; ++k) {
          out_dst_p[cursor[in_src_p[k]]++] = v;
        }
      }
    }
  });

  // Kahn per graph. Scratch arrays are indexed by global node id, so graphs use disjoint slices.
  std::vector<int64_t> indeg(N);
  std::vector<int64_t> queue(N);
  std::vector<uint8_t> has_cycle(B, 0);
  at::parallel_for(0, B, grain, [&](int64_t g_begin, int64_t g_end) {
    for (int64_t g = g_begin; g < g_end; ++g) {
      const int64_t a = ptr[g];
      const int64_t b = ptr[g + 1];
      int64_t head = a;
      int64_t tail = a;
      for (int64_t v = a; v < b; ++v) {
        indeg[v] = in_ptr_p[v + 1] - in_ptr_p[v];
        if (indeg[v] == 0) queue[tail++] = v;  // level[v] is already 0
      }
      while (head < tail) {
        const int64_t u = queue[head++];
        const int64_t next_level = level_p[u] + 1;
        for (int64_t k = out_ptr_p[u]; k < out_ptr_p[u + 1]; ++k) {
          const int64_t w = out_dst_p[k];
          if (level_p[w] < next_level) level_p[w] = next_level;
          if (--indeg[w] == 0) queue[tail++] = w;
        }
      }
      if (tail != b) {  // some node never reached in-degree 0
        has_cycle[g] = 1;
        continue;
      }
      // Counting sort by level (levels < b - a), stable in node id: order by (level, id).
      // queue[a, b) is free again and holds the level bucket offsets.
      int64_t* start = queue.data() + a;
      std::fill(start, start + (b - a), 0);
      for (int64_t v = a; v < b; ++v) ++start[level_p[v]];
      int64_t running = a;
      for (int64_t l = 0; l < b - a; ++l) {
        const int64_t count = start[l];
        start[l] = running;
        running += count;
      }
      for (int64_t v = a; v < b; ++v) order_p[start[level_p[v]]++] = v;
      for (int64_t i = a; i < b; ++i) rev_p[i] = order_p[a + b - 1 - i];
    }
  });
  for (int64_t g = 0; g < B; ++g) {
    TORCH_CHECK_VALUE(!has_cycle[g], dag_schedule_cycle_message(g));
  }

  return {order, level, reverse_order, in_ptr, in_src, out_ptr, out_dst};
}

TORCH_LIBRARY_IMPL(ghn_ext, CPU, m) { m.impl("dag_schedule", &dag_schedule_cpu); }

}  // namespace ghn_ext
