// lal::lm::training — fused CUDA kernels for training the decoder (the backward passes the inference kernels lack,
// and the output layer's softmax gradient), for the trainable decoder's blocks (grad mode) and core/train's chunked
// loss. They run only on CUDA tensors of a build with the kernels (nvcc found; see core/lm/engine/CMakeLists.txt);
// everywhere else, and with LAL_TRAIN_KERNELS=off, the LibTorch ops run: they are the reference the kernels are
// tested against (tests/train, on a GPU).
//
// THIS HEADER INCLUDES LIBTORCH. THREADING: reentrant; launches go to LibTorch's current stream.
#pragma once

#include <torch/torch.h>

namespace lal::lm::training {

/// Whether this build has the fused CUDA kernels.
bool kernels_built();

/// Whether the training kernels take `t`: built, `t` on CUDA in float32/bfloat16/float16, and the environment
/// variable LAL_TRAIN_KERNELS unset or "on" ("off": the LibTorch ops; another value throws std::invalid_argument).
bool kernels_apply(const torch::Tensor& t);

/// Per row of logits [rows, V] (contiguous): max, log sum exp(x - max), log sum exp((x - max) / temperature), float32.
struct LogitRowStats {
  torch::Tensor max, log_sum, log_sum_t;
};
LogitRowStats logit_row_stats(const torch::Tensor& logits, double temperature);

/// In place, logits[r, v] <- ce_coef * softmax(x)[v] + kd_coef[r] * softmax(x / temperature)[v] (kd_coef float32
/// [rows], or undefined for 0), computed in float32 from `stats` and rounded once to the logits' dtype.
void logit_softmax_gradient_(const torch::Tensor& logits, const LogitRowStats& stats, double temperature,
                             double ce_coef, const torch::Tensor& kd_coef);

}  // namespace lal::lm::training
