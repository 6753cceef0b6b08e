// Shared declarations for ghn_ext::dag_schedule (CPU and CUDA implementations).
//
// The CPU file defines everything declared here; the CUDA file reuses the metadata checks, the
// CPU data validation (to format the exact error message on the rare error path) and the cycle
// message, so every backend and the Python reference (ghn_ext/ops/schedule.py) raise the same text.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <tuple>

namespace ghn_ext {

using ScheduleResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                  at::Tensor, at::Tensor>;

// Checks that read no tensor data: dtypes (TypeError), dims/shapes, same device, num_nodes >= 0
// (ValueError).
void dag_schedule_check_meta(const at::Tensor& edge_index, const at::Tensor& node_ptr,
                             int64_t num_nodes);

// Data checks on CPU tensors (contiguous int64): node_ptr[0] == 0, non-decreasing,
// node_ptr[B] == num_nodes, every edge end in [0, N), no edge crossing graphs. The first offending
// entry (lowest index) is reported. Throws ValueError.
void dag_schedule_check_data_cpu(const at::Tensor& edge_index, const at::Tensor& node_ptr,
                                 int64_t num_nodes);

// "ghn_ext.dag_schedule: graph <g> contains a cycle (self-loop or cycle among its nodes)"
std::string dag_schedule_cycle_message(int64_t graph);

// The CPU kernel (also used by the CUDA kernel's error path).
ScheduleResult dag_schedule_cpu(const at::Tensor& edge_index, const at::Tensor& node_ptr,
                                int64_t num_nodes);

}  // namespace ghn_ext
