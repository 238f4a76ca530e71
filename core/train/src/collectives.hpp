// Tensor collectives of lal::train::World (internal; includes LibTorch). See include/lal/train/world.hpp.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "lal/train/world.hpp"

namespace lal::train::collectives {

/// Sums `tensors` over all ranks in place. Tensors are packed into flat buckets of about `bucket_bytes` per dtype
/// and device (one collective per bucket, all launched before the first wait), then unpacked.
void all_reduce_sum(World& world, const std::vector<torch::Tensor>& tensors, const char* what,
                    std::int64_t bucket_bytes = 32 << 20);

/// Replaces `tensors` on every rank with rank `root`'s values (one packed collective per dtype).
void broadcast(World& world, const std::vector<torch::Tensor>& tensors, int root, const char* what);

}  // namespace lal::train::collectives
