// AdamW (loop / multi-tensor / fused kernels) and gradient clipping. See include/lal/train/optim.hpp.
#include "lal/train/optim.hpp"

#include <torch/version.h>

#include <cmath>
#include <stdexcept>

#include "collectives.hpp"
#include "lal/train/distill.hpp"
#include "lal/train/world.hpp"

// torch::_fused_adamw_ came with LibTorch 2.0 (CUDA); its CPU kernel with 2.4. Debian's 1.13 has neither.
#if __has_include(<ATen/ops/_fused_adamw.h>)
#define LAL_TRAIN_HAVE_FUSED_ADAMW 1
#include <ATen/ops/_fused_adamw.h>
#endif

namespace lal::train {

namespace {
constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kEps = 1e-8;
}

bool fused_adamw_available(const torch::Device& device) {
#if LAL_TRAIN_HAVE_FUSED_ADAMW
  if (device.is_cuda()) return true;
  return device.is_cpu() && (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4));
#else
  (void)device;
  return false;
#endif
}

AdamWKernel adamw_kernel(const std::string& name, const torch::Device& device) {
  if (name == "loop") return AdamWKernel::Loop;
  if (name == "foreach") return AdamWKernel::MultiTensor;
  if (name == "auto") return fused_adamw_available(device) ? AdamWKernel::Fused : AdamWKernel::MultiTensor;
  if (name == "fused") {
    if (!fused_adamw_available(device))
      throw std::runtime_error(std::string("--adamw fused: this LibTorch (") + TORCH_VERSION +
                               ") has no fused AdamW kernel for " + device.str() +
                               " (CUDA needs LibTorch >= 2.0, CPU >= 2.4); use --adamw foreach");
    return AdamWKernel::Fused;
  }
  throw std::runtime_error("--adamw " + name + ": expected auto, fused, foreach or loop");
}

void check_speed_options(const DistillOptions& o, const std::string& device) {
  (void)adamw_kernel(o.adamw, torch::Device(device));
}

const char* adamw_kernel_name(AdamWKernel k) {
  switch (k) {
    case AdamWKernel::Loop: return "loop";
    case AdamWKernel::MultiTensor: return "foreach";
    case AdamWKernel::Fused: return "fused";
  }
  return "?";
}

AdamW::AdamW(const std::vector<std::pair<std::string, torch::Tensor>>& params, double weight_decay, AdamWKernel kernel,
             std::vector<int> owner, int rank)
    : params_(params),
      weight_decay_(weight_decay),
      kernel_(kernel),
      owner_(std::move(owner)),
      rank_(rank),
      sharded_(!owner_.empty()) {
  if (owner_.empty()) owner_.assign(params_.size(), rank_);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const auto& p = params_[i].second;
    const bool mine = owner_[i] == rank_;
    const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
    m_.push_back(mine ? torch::zeros_like(p, f32).detach() : torch::Tensor());
    v_.push_back(mine ? torch::zeros_like(p, f32).detach() : torch::Tensor());
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++t_;
  const double c1 = 1 - std::pow(kBeta1, static_cast<double>(t_)), c2 = 1 - std::pow(kBeta2, static_cast<double>(t_));
  switch (kernel_) {
    case AdamWKernel::Loop: step_loop(lr, c1, c2); break;
    case AdamWKernel::MultiTensor: step_multi_tensor(lr, c1, c2); break;
    case AdamWKernel::Fused: step_fused(lr); break;
  }
}

void AdamW::step_loop(double lr, double c1, double c2) {
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& p = params_[i].second;
    if (owner_[i] != rank_ || !p.grad().defined()) continue;
    const auto& g = p.grad();
    if (p.dim() >= 2 && weight_decay_ > 0) p.mul_(1 - lr * weight_decay_);  // matrices only, not norms/biases
    m_[i].mul_(kBeta1).add_(g, 1 - kBeta1);
    v_[i].mul_(kBeta2).addcmul_(g, g, 1 - kBeta2);
    auto denom = (v_[i] / c2).sqrt_().add_(kEps);
    p.addcdiv_(m_[i], denom, -lr / c1);
  }
}

void AdamW::step_multi_tensor(double lr, double c1, double c2) {
  // The loop's operations in the same order, each over all tensors at once (bit-equal to step_loop).
  std::vector<torch::Tensor> decayed, p, g, m, v;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& t = params_[i].second;
    if (owner_[i] != rank_ || !t.grad().defined()) continue;
    if (t.dim() >= 2 && weight_decay_ > 0) decayed.push_back(t);
    p.push_back(t), g.push_back(t.grad()), m.push_back(m_[i]), v.push_back(v_[i]);
  }
  if (p.empty()) return;
  if (!decayed.empty()) torch::_foreach_mul_(decayed, 1 - lr * weight_decay_);
  torch::_foreach_mul_(m, kBeta1);
  torch::_foreach_add_(m, g, 1 - kBeta1);
  torch::_foreach_mul_(v, kBeta2);
  torch::_foreach_addcmul_(v, g, g, 1 - kBeta2);
  auto denom = torch::_foreach_div(v, c2);
  torch::_foreach_sqrt_(denom);
  torch::_foreach_add_(denom, kEps);
  torch::_foreach_addcdiv_(p, m, denom, -lr / c1);
}

void AdamW::step_fused(double lr) {
#if LAL_TRAIN_HAVE_FUSED_ADAMW
  // Two calls: matrices with weight decay, vectors without. The kernel reads the step count from a float tensor per
  // parameter (kept here, re-made after load()).
  std::vector<torch::Tensor> p[2], g[2], m[2], v[2], s[2];
  if (fused_steps_.empty())
    for (std::size_t i = 0; i < params_.size(); ++i)
      fused_steps_.push_back(
          owner_[i] == rank_
              ? torch::full({}, static_cast<double>(t_ - 1),
                            torch::TensorOptions().dtype(torch::kFloat32).device(params_[i].second.device()))
              : torch::Tensor());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto& t = params_[i].second;
    if (owner_[i] != rank_ || !t.grad().defined()) continue;
    const int k = t.dim() >= 2 && weight_decay_ > 0 ? 1 : 0;
    p[k].push_back(t), g[k].push_back(t.grad()), m[k].push_back(m_[i]), v[k].push_back(v_[i]);
    s[k].push_back(fused_steps_[i]);
  }
  for (int k = 0; k < 2; ++k) {
    if (p[k].empty()) continue;
    torch::_foreach_add_(s[k], 1.0);
    at::_fused_adamw_(p[k], g[k], m[k], v[k], /*max_exp_avg_sqs=*/{}, s[k], lr, kBeta1, kBeta2,
                      k == 1 ? weight_decay_ : 0.0, kEps, /*amsgrad=*/false, /*maximize=*/false);
  }
#else
  (void)lr;
  throw std::logic_error("AdamW: fused kernel selected in a LibTorch without one");
#endif
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_)
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

void AdamW::broadcast_updates(World& world) const {
  if (!sharded_) return;  // every rank updated every parameter the same way
  std::vector<torch::Tensor> all;
  for (const auto& [name, p] : params_) all.push_back(p);
  collectives::share_owned(world, all, owner_, "parameter update (all-gather)");
}

std::vector<std::pair<std::string, torch::Tensor>> AdamW::state(World& world) const {
  std::vector<std::pair<std::string, torch::Tensor>> s;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    auto m = m_[i], v = v_[i];
    if (world.distributed() && sharded_) {
      // One parameter's moments at a time, from their owner; rank 0 keeps them in CPU memory, the other ranks
      // drop what they received, so no device holds more than one parameter's state beyond its own shard.
      if (!m.defined())
        m = torch::zeros_like(params_[i].second, torch::TensorOptions().dtype(torch::kFloat32)),
        v = torch::zeros_like(m);
      collectives::broadcast(world, {m, v}, owner_[i], "optimizer-state gather");
      if (!world.is_main()) continue;
      m = m.to(torch::kCPU), v = v.to(torch::kCPU);
    }
    s.emplace_back("exp_avg." + params_[i].first, m);
    s.emplace_back("exp_avg_sq." + params_[i].first, v);
  }
  s.emplace_back("step", torch::tensor({t_}, torch::kInt64));
  return s;
}

void AdamW::load(const std::map<std::string, torch::Tensor>& s, const std::string& source) {
  torch::NoGradGuard no_grad;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (owner_[i] != rank_) continue;
    for (auto [prefix, dst] : {std::pair<const char*, torch::Tensor*>{"exp_avg.", &m_[i]}, {"exp_avg_sq.", &v_[i]}}) {
      auto it = s.find(prefix + params_[i].first);
      if (it == s.end()) throw std::runtime_error(source + ": no optimizer tensor '" + prefix + params_[i].first + "'");
      dst->copy_(it->second);
    }
  }
  auto it = s.find("step");
  if (it == s.end()) throw std::runtime_error(source + ": no optimizer tensor 'step'");
  t_ = it->second.item<std::int64_t>();
  fused_steps_.clear();
}

torch::Tensor clip_gradients(const std::vector<std::pair<std::string, torch::Tensor>>& params, double max_norm) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const auto& [name, p] : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  if (grads.empty()) return torch::zeros({}, torch::kFloat64);
  const auto norm = torch::stack(torch::_foreach_norm(grads, 2)).to(torch::kFloat64).pow(2).sum().sqrt();
  if (max_norm <= 0) return norm;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  if (grads.front().is_cuda()) {
    // The factor in float64, rounded to the gradients' dtype as a Scalar argument would be.
    const auto scale = torch::full_like(norm, max_norm).div(norm + 1e-6).clamp_max(1.0).to(grads.front().scalar_type());
    torch::_foreach_mul_(grads, scale);
    return norm;
  }
#endif
  const double n = norm.item<double>();
  if (n > max_norm) torch::_foreach_mul_(grads, max_norm / (n + 1e-6));
  return norm;
}

}  // namespace lal::train
