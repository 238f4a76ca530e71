// lal::train — AdamW for the trainer (per-tensor, multi-tensor and fused kernels) and gradient clipping.
//
// THIS HEADER INCLUDES LIBTORCH. Include it from core/train sources and tests only.
//
// AdamW is torch.optim.AdamW's update (decoupled weight decay, bias-corrected moments, no amsgrad), with decay on
// matrices only (norm weights and biases are not decayed). Three kernels compute the same update:
//   Loop        one small kernel per tensor and operation (the reference);
//   MultiTensor torch::_foreach_* ops: one launch per operation over all tensors (every LibTorch; bit-equal to Loop);
//   Fused       torch::_fused_adamw_: one kernel for the whole update (LibTorch >= 2.0 on CUDA, >= 2.4 on CPU;
//               detected at compile time, see fused_adamw_available()). Equal to Loop up to float rounding.
// The moments and the step count checkpoint plainly (state()/load()), the same for every kernel, so a run may resume
// with another kernel or world size.
//
// Sharded (ZeRO-1) in a distributed run: `owner[i]` is the rank that keeps parameter i's moments and updates it;
// broadcast_updates() sends the updated values to the other ranks (one all-gather per piece, all ranks at once). An
// empty `owner` means this rank owns all: alone, or replicated (every rank keeps the whole state and, from the same
// summed gradients, makes the same update; broadcast_updates() and state() then send nothing).
//
// THREADING: one trainer thread. ERRORS: std::runtime_error (a missing optimizer tensor names the file and tensor;
// asking for the fused kernel where this LibTorch has none says so).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace lal::train {

class World;

enum class AdamWKernel { Loop, MultiTensor, Fused };

/// Whether torch::_fused_adamw_ exists in this LibTorch for tensors on `device`.
bool fused_adamw_available(const torch::Device& device);
/// "auto" (fused where available, else multi-tensor) | "fused" | "foreach" | "loop" -> the kernel for `device`.
/// Throws std::runtime_error for "fused" where it is not available, naming the LibTorch version.
AdamWKernel adamw_kernel(const std::string& name, const torch::Device& device);
const char* adamw_kernel_name(AdamWKernel k);

class AdamW {
 public:
  AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& params, double weight_decay,
        AdamWKernel kernel = AdamWKernel::Loop, std::vector<int> owner = {}, int rank = 0);
  /// One update with learning rate `lr` of the parameters this rank owns that have a gradient.
  void step(double lr);
  void zero_grad();
  /// Every rank's updated parameters, sent from their owners (share_owned: all ranks send at once); nothing when
  /// replicated.
  void broadcast_updates(World& world) const;
  /// The whole optimizer state, gathered from the owners one parameter at a time: complete on rank 0 (in CPU memory
  /// when distributed); the other ranks get the step count alone (a collective: all ranks call it).
  std::vector<std::pair<std::string, torch::Tensor>> state(World& world) const;
  void load(const std::map<std::string, torch::Tensor>& state, const std::string& source);
  AdamWKernel kernel() const { return kernel_; }
  std::int64_t steps() const { return t_; }

 private:
  void step_loop(double lr, double c1, double c2);
  void step_multi_tensor(double lr, double c1, double c2);
  void step_fused(double lr);

  std::vector<std::pair<std::string, torch::Tensor>> params_;
  std::vector<torch::Tensor> m_, v_;
  std::vector<torch::Tensor> fused_steps_;  // per parameter, float32 on its device (the fused kernel's step input)
  double weight_decay_;
  AdamWKernel kernel_;
  std::vector<int> owner_;
  int rank_;
  bool sharded_;  ///< owners were given (ZeRO-1 over the ranks)
  std::int64_t t_ = 0;
};

/// Scale gradients so that their global L2 norm is at most `max_norm` (<= 0: no clipping); returns the norm before
/// clipping, a float64 scalar tensor on the gradients' device. Multi-tensor norm and scale (two launches whatever the
/// parameter count). On CUDA (LibTorch >= 2.1) the scale min(1, max_norm / (norm + 1e-6)) stays on the device, so
/// nothing waits for it: the optimizer step queues behind it; elsewhere the norm is read first and gradients are
/// scaled only when it exceeds max_norm. Both give the same gradients (a factor of 1 changes no value).
torch::Tensor clip_gradients(const std::vector<std::pair<std::string, torch::Tensor>>& params, double max_norm);

}  // namespace lal::train
