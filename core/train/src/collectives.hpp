// Tensor collectives of lal::train::World (internal; includes LibTorch). See include/lal/train/world.hpp.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "lal/train/world.hpp"

namespace lal::train::collectives {

/// Sums `tensors` over all ranks in place. Tensors are packed into flat buckets of about `bucket_bytes` per dtype
/// and device (one collective per bucket, all launched before the first wait), then unpacked.
void all_reduce_sum(World& world, const std::vector<torch::Tensor>& tensors, const char* what,
                    std::int64_t bucket_bytes = 32 << 20);

/// Replaces `tensors` on every rank with rank `root`'s values (one packed collective per dtype).
void broadcast(World& world, const std::vector<torch::Tensor>& tensors, int root, const char* what);

/// Every rank receives the tensors that the other ranks own (`owner[i]` is the rank that holds tensor i's current
/// value; all ranks pass the same list, each its own copies): one all-gather per round, in which every rank sends its
/// next piece (at most `piece_bytes`, one tensor at least, zero-padded to the round's largest) at the same time. The
/// parameter update of sharded AdamW, which one broadcast per owner sent one rank after the other.
void share_owned(World& world, const std::vector<torch::Tensor>& tensors, const std::vector<int>& owner,
                 const char* what, std::int64_t piece_bytes = 128 << 20);

/// Sums the gradients of `params` over all ranks while backward runs (data parallel, as torch's DDP reducer does):
/// the parameters are cut into buckets of about `bucket_bytes` in reverse order (backward produces gradients roughly
/// last layer first), and a bucket's all-reduce is launched, asynchronously, as soon as every gradient in it has been
/// accumulated (a post hook on each parameter's gradient accumulator). Buckets launch in the same order on every
/// rank. Usage per optimizer step: arm() before the step's last backward, finish() after it (also on a rank that had
/// no micro-batch): finish() launches what is left (missing gradients count as zero), waits, and writes the sums into
/// each parameter's .grad. The sums equal all_reduce_sum() of the same gradients.
/// THREADING: hooks run on autograd's threads; arm()/finish() on the trainer thread.
class GradientReducer {
 public:
  GradientReducer(World& world, const std::vector<torch::Tensor>& params, std::int64_t bucket_bytes = 25 << 20);
  ~GradientReducer();
  void arm();
  void finish();
  /// Buckets launched during the last armed backward (the rest waited for finish()).
  int launched_during_backward() const;
  int buckets() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace lal::train::collectives
