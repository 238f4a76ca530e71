// The fused lm_head + KD/CE loss over token chunks. See include/lal/train/chunked_loss.hpp.
#include "lal/train/chunked_loss.hpp"

#include <spdlog/spdlog.h>
#include <torch/version.h>

#include <atomic>
#include <limits>
#include <stdexcept>

#include "lal/lm/training_kernels.hpp"

namespace lal::train {

namespace {

/// acc (float32) += a @ b, a and b in the compute dtype. On CUDA with a bfloat16/float16 product and LibTorch >= 2.8,
/// cuBLAS adds the product to acc as it writes it (addmm's out_dtype): the [V, E] product is never stored in the
/// compute dtype and read back, and it is not rounded to that dtype first. Elsewhere (and if that LibTorch refuses it,
/// once, with a warning) the product in the compute dtype is added.
void add_product_(torch::Tensor& acc, const torch::Tensor& a, const torch::Tensor& b) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
  static std::atomic<bool> usable{true};
  if (usable && acc.is_cuda() && acc.scalar_type() == torch::kFloat32 &&
      (a.scalar_type() == torch::kBFloat16 || a.scalar_type() == torch::kHalf)) {
    try {
      at::addmm_out(acc, acc, a, b, torch::kFloat32);
      return;
    } catch (const c10::Error& e) {
      usable = false;
      spdlog::warn(
          "chunked loss: addmm with a float32 output is refused by this LibTorch ({}); adding the product "
          "in the compute dtype instead",
          e.what_without_backtrace());
    }
  }
#endif
  acc.add_(torch::matmul(a, b));
}

/// Hands the precomputed gradients to autograd: forward returns the loss value, backward scales the gradients.
struct PrecomputedGradient : torch::autograd::Function<PrecomputedGradient> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& lm_head, const torch::Tensor& value,
                               const torch::Tensor& grad_hidden, const torch::Tensor& grad_lm_head) {
    (void)hidden, (void)lm_head;
    ctx->saved_data["grad_hidden"] = grad_hidden;
    ctx->saved_data["grad_lm_head"] = grad_lm_head;
    return value.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto scale = grad_out[0];
    auto gh = ctx->saved_data["grad_hidden"].toTensor(), gw = ctx->saved_data["grad_lm_head"].toTensor();
    return {gh.defined() ? gh * scale.to(gh.scalar_type()) : gh, gw.defined() ? gw * scale.to(gw.scalar_type()) : gw,
            torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

/// Row-wise sum_v p (log p - log q) with 0 log 0 = 0 (p given as probabilities, zero where absent).
torch::Tensor kl_sum(const torch::Tensor& p, const torch::Tensor& log_p, const torch::Tensor& log_q) {
  return (p * (torch::where(p > 0, log_p, torch::zeros_like(log_p)) - log_q)).sum(-1);
}

/// The stored top-k teacher distribution at temperature `temp`: probabilities (0 in unused slots) and
/// log-probabilities.
std::pair<torch::Tensor, torch::Tensor> topk_distribution(const torch::Tensor& logprobs, const torch::Tensor& valid,
                                                          double temp) {
  auto lpt = torch::log_softmax(
      (logprobs / temp).masked_fill(valid.logical_not(), -std::numeric_limits<float>::infinity()), -1);
  auto pt = torch::where(valid & torch::isfinite(lpt), lpt.exp(), torch::zeros_like(lpt));
  return {pt, lpt};
}

}  // namespace

LossParts chunked_distillation_loss(const ChunkedLossInput& in, torch::Tensor* kl_metric) {
  const auto N = in.hidden.size(0), V = in.lm_head.size(0);
  if (in.hidden.dim() != 2 || in.lm_head.dim() != 2 || in.hidden.size(1) != in.lm_head.size(1) ||
      in.targets.numel() != N)
    throw std::invalid_argument("chunked_distillation_loss: hidden [N, E], lm_head [V, E] and targets [N] disagree");
  if (in.chunk_tokens < 1) throw std::invalid_argument("chunked_distillation_loss: chunk_tokens must be >= 1");
  const bool topk = in.topk_ids.defined(), full = static_cast<bool>(in.teacher) && !topk;
  const bool teacher_info = topk || full;
  const double T = in.temperature, alpha = teacher_info ? in.alpha : 0.0;
  const double ce_weight = teacher_info ? 1.0 - in.alpha : 1.0;
  const bool want_grad = torch::GradMode::is_enabled() && (in.hidden.requires_grad() || in.lm_head.requires_grad());
  const auto compute = in.hidden.scalar_type();
  // The fused CUDA kernels (lal/lm/training_kernels.hpp) for CE and stored top-k KD; the LibTorch ops below are the
  // reference (CPU, a full teacher, LAL_TRAIN_KERNELS=off).
  const bool fused = !full && lm::training::kernels_apply(in.hidden);

  torch::NoGradGuard no_grad;
  const auto W = in.lm_head.detach().to(compute);
  const auto h_all = in.hidden.detach();
  const auto f32 = in.hidden.options().dtype(torch::kFloat32);
  auto ce_sum = torch::zeros({}, f32), kd_sum = torch::zeros({}, f32), kl_sum_t1 = torch::zeros({}, f32);
  torch::Tensor grad_hidden, grad_w;
  if (want_grad) {
    grad_hidden = torch::empty_like(h_all);
    grad_w = torch::zeros({V, in.hidden.size(1)}, in.lm_head.options().dtype(torch::kFloat32));
  }
  const double inv_n = 1.0 / static_cast<double>(std::max<std::int64_t>(N, 1));
  for (std::int64_t begin = 0; begin < N; begin += in.chunk_tokens) {
    const auto c = std::min(in.chunk_tokens, N - begin);
    const auto h = h_all.narrow(0, begin, c);
    if (fused) {
      // One read of the chunk's logits (in the compute dtype) for the row statistics, the loss terms from them and
      // a few gathered logits, and one in-place pass that turns the logits into the gradient's dense part; the
      // target and top-k entries are then written exactly.
      auto logits = torch::matmul(h, W.t());  // [c, V]
      const auto stats = lm::training::logit_row_stats(logits, topk ? T : 1.0);
      const auto m = stats.max.unsqueeze(1), ls = stats.log_sum.unsqueeze(1), lst = stats.log_sum_t.unsqueeze(1);
      const auto tgt = in.targets.narrow(0, begin, c).view({c, 1});
      const auto x_t = logits.gather(1, tgt).to(torch::kFloat32);
      ce_sum += (m + ls - x_t).sum();
      torch::Tensor safe_ids, x_k, p, kd_coef;
      if (topk) {
        const auto ids = in.topk_ids.narrow(0, begin, c);
        safe_ids = ids.clamp_min(0);
        const auto valid = ids.ge(0);
        const auto lp = in.topk_logprobs.narrow(0, begin, c).to(torch::kFloat32);
        torch::Tensor log_p;
        std::tie(p, log_p) = topk_distribution(lp, valid, T);
        x_k = logits.gather(1, safe_ids).to(torch::kFloat32);
        kd_sum += kl_sum(p, log_p, (x_k - m) * (1.0 / T) - lst).sum();
        if (kl_metric) {
          auto [p1, log_p1] = topk_distribution(lp, valid, 1.0);
          kl_sum_t1 += kl_sum(p1, log_p1, x_k - m - ls).sum();
        }
        if (want_grad) kd_coef = p.sum(-1) * (alpha * T * inv_n);
      }
      if (want_grad) {
        // The exact gradient at the target and top-k slots (a slot's value includes every term at its id, so slots
        // that share an id write the same value), from the logits gathered before they are overwritten.
        const double a = ce_weight * inv_n;
        const auto slot_ids = topk ? torch::cat({tgt, safe_ids}, 1) : tgt;
        const auto x_s = topk ? torch::cat({x_t, x_k}, 1) : x_t;
        auto value = (x_s - m - ls).exp() * a - slot_ids.eq(tgt).to(torch::kFloat32) * a;
        if (topk) {
          value += ((x_s - m) * (1.0 / T) - lst).exp() * kd_coef.unsqueeze(1);
          const auto same = slot_ids.unsqueeze(2).eq(safe_ids.unsqueeze(1)).to(torch::kFloat32);  // [c, S, K]
          value -= (same * p.unsqueeze(1)).sum(-1) * (alpha * T * inv_n);
        }
        lm::training::logit_softmax_gradient_(logits, stats, T, a, kd_coef);
        logits.scatter_(1, slot_ids, value.to(logits.scalar_type()));
        auto gh = grad_hidden.narrow(0, begin, c);
        at::mm_out(gh, logits, W);
        add_product_(grad_w, logits.t(), h);
      }
      continue;
    }
    const auto logits = torch::matmul(h, W.t()).to(torch::kFloat32);  // [c, V]
    const auto tgt = in.targets.narrow(0, begin, c).view({c, 1});
    const auto log_s = torch::log_softmax(logits, -1);
    ce_sum += -log_s.gather(1, tgt).sum();
    torch::Tensor grad;  // d total / d logits, times N
    if (want_grad) {
      grad = log_s.exp();
      grad.scatter_add_(1, tgt, torch::full({c, 1}, -1.0, grad.options()));
      grad.mul_(ce_weight);
    }
    if (teacher_info) {
      const auto log_q = T == 1.0 ? log_s : torch::log_softmax(logits / T, -1);
      torch::Tensor p, log_p, log_q_at;
      torch::Tensor p1, log_p1, log_s_at;  // at T = 1, for the metric
      if (full) {
        const auto t = in.teacher(begin, c).to(torch::kFloat32);
        log_p = torch::log_softmax(t / T, -1);
        p = torch::where(torch::isfinite(log_p), log_p.exp(), torch::zeros_like(log_p));
        kd_sum += kl_sum(p, log_p, log_q).sum();
        if (kl_metric) {
          log_p1 = T == 1.0 ? log_p : torch::log_softmax(t, -1);
          p1 = T == 1.0 ? p : torch::where(torch::isfinite(log_p1), log_p1.exp(), torch::zeros_like(log_p1));
          kl_sum_t1 += kl_sum(p1, log_p1, log_s).sum();
        }
        if (want_grad) grad.add_((log_q.exp() * p.sum(-1, true) - p) * (alpha * T));
      } else {
        const auto ids = in.topk_ids.narrow(0, begin, c), safe_ids = ids.clamp_min(0);
        const auto valid = ids.ge(0);
        const auto lp = in.topk_logprobs.narrow(0, begin, c).to(torch::kFloat32);
        std::tie(p, log_p) = topk_distribution(lp, valid, T);
        kd_sum += kl_sum(p, log_p, log_q.gather(1, safe_ids)).sum();
        if (kl_metric) {
          std::tie(p1, log_p1) = topk_distribution(lp, valid, 1.0);
          kl_sum_t1 += kl_sum(p1, log_p1, log_s.gather(1, safe_ids)).sum();
        }
        if (want_grad) {
          grad.add_(log_q.exp() * (p.sum(-1, true) * (alpha * T)));
          grad.scatter_add_(1, safe_ids, p * (-alpha * T));
        }
      }
    }
    if (want_grad) {
      const auto g = grad.mul_(inv_n).to(compute);
      grad_hidden.narrow(0, begin, c).copy_(torch::matmul(g, W));
      add_product_(grad_w, g.t(), h);
    }
  }
  auto ce = ce_sum * inv_n;
  torch::Tensor kd = teacher_info ? kd_sum * inv_n : torch::Tensor();
  auto value = teacher_info ? alpha * T * T * kd + ce_weight * ce : ce;
  if (kl_metric) *kl_metric = teacher_info ? kl_sum_t1 * inv_n : torch::Tensor();
  if (!want_grad) return {value, kd, ce};
  torch::AutoGradMode enable(true);
  if (!in.hidden.requires_grad()) grad_hidden = torch::Tensor();
  if (!in.lm_head.requires_grad())
    grad_w = torch::Tensor();
  else
    grad_w = grad_w.to(in.lm_head.scalar_type());
  auto total = PrecomputedGradient::apply(in.hidden, in.lm_head, value, grad_hidden, grad_w);
  return {total, kd, ce};
}

}  // namespace lal::train
