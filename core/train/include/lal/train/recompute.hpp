// lal::train — activation checkpointing: run a function of one tensor without keeping its intermediate
// activations, and run it again in backward to get its gradients.
//
// THIS HEADER INCLUDES LIBTORCH. Include it from core/train sources and tests only.
//
// recompute_in_backward(fn, x) returns fn(x). Autograd keeps only x; in backward, fn runs again with autograd on
// and its gradients flow into x and into every tensor fn reads that requires grad (the layer's parameters), exactly
// as without recomputation. `fn` is copied and must own (capture by value) every tensor it reads, and must compute
// the same thing when run twice (no random draws: the student has no dropout).
//
// THREADING: the autograd engine may run backward on its own thread; fn must not touch thread-local state.
#pragma once

#include <torch/torch.h>

#include <functional>

namespace lal::train {

torch::Tensor recompute_in_backward(std::function<torch::Tensor(const torch::Tensor&)> fn, const torch::Tensor& x);

}  // namespace lal::train
