// lal::train — the student's output layer (lm_head) and the distillation loss, computed over chunks of tokens.
//
// THIS HEADER INCLUDES LIBTORCH. Include it from core/train sources and tests only.
//
// With a 152 k vocabulary, the [tokens x vocab] float32 logits of one micro-batch (8 x 512 tokens: 2.5 GB) and
// their log-softmaxes, the teacher's probabilities and the gradient would each be materialised whole by the plain
// path (forward() then distillation_loss()). chunked_distillation_loss() instead walks `chunk_tokens` rows at a time:
// logits of the chunk (GEMM in the hidden states' dtype, as forward() does), CE and KD of the chunk, and — when a
// gradient is wanted — the analytic gradient of the loss with respect to the chunk's logits, turned at once into
// the chunk's share of d loss / d hidden and d loss / d lm_head. Only one chunk's logits exist at a time and no
// second pass over them happens in backward. The result equals distillation_loss()/distillation_loss_topk() on
// the full logits (loss and gradients; tests/train checks <= 1e-5 in float32).
//
// On CUDA with the training kernels (lal/lm/training_kernels.hpp; not for a full teacher's logits) a chunk's logits
// stay in the compute dtype and are read twice: once for each row's max and log-sum-exp, once to be turned into the
// gradient in place; the loss terms come from those statistics and the gathered target / top-k logits (tests/train
// "training kernels", on a GPU, against LAL_TRAIN_KERNELS=off).
//
// THREADING: the trainer thread. ERRORS: std::invalid_argument on mismatched shapes.
#pragma once

#include <cstdint>
#include <functional>

#include "lal/train/model.hpp"

namespace lal::train {

/// The teacher's logits for rows [begin, begin + count) of the N predicted positions, in the student's vocabulary
/// (-inf where the teacher has no logit), any float dtype, [count, V].
using TeacherRows = std::function<torch::Tensor(std::int64_t begin, std::int64_t count)>;

struct ChunkedLossInput {
  torch::Tensor hidden;   ///< [N, E] final-normed hidden states at the predicted positions (compute dtype)
  torch::Tensor lm_head;  ///< [V, E] the output weight as stored (float32 master); multiplied in hidden's dtype
  torch::Tensor targets;  ///< [N] int64
  TeacherRows teacher;    ///< full teacher logits, or empty
  torch::Tensor topk_ids, topk_logprobs;  ///< [N, K] stored top-k (student ids, -1 unused), or undefined
  double temperature = 1.0;
  double alpha = 0.0;
  std::int64_t chunk_tokens = 1024;  ///< rows per chunk (>= 1)
};

/// total / kd / ce as distillation_loss (full teacher), distillation_loss_topk (top-k) or plain CE (neither).
/// `total` carries the gradient to `hidden` and `lm_head` when grad mode is on and either requires grad; kd and ce
/// are detached. `kl_metric`, when given, receives the held-out metric: mean_kl (full teacher, T = 1) or the top-k
/// KD at T = 1; undefined without teacher information.
LossParts chunked_distillation_loss(const ChunkedLossInput& in, torch::Tensor* kl_metric = nullptr);

}  // namespace lal::train
