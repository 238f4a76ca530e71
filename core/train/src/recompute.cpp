// Activation checkpointing (reentrant: backward runs the function again and back-propagates through it).
#include "lal/train/recompute.hpp"

namespace lal::train {

namespace {

struct Closure : torch::CustomClassHolder {
  explicit Closure(std::function<torch::Tensor(const torch::Tensor&)> f) : fn(std::move(f)) {}
  std::function<torch::Tensor(const torch::Tensor&)> fn;
};

struct Recompute : torch::autograd::Function<Recompute> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               c10::intrusive_ptr<Closure> closure) {
    ctx->save_for_backward({x});
    auto y = closure->fn(x);  // autograd is off here: nothing inside fn is kept
    ctx->saved_data["fn"] = c10::IValue::make_capsule(std::move(closure));
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    auto closure = c10::static_intrusive_pointer_cast<Closure>(ctx->saved_data["fn"].toCapsule());
    auto x = saved[0].detach().requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode on(true);
      y = closure->fn(x);
    }
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor recompute_in_backward(std::function<torch::Tensor(const torch::Tensor&)> fn, const torch::Tensor& x) {
  return Recompute::apply(x, c10::make_intrusive<Closure>(std::move(fn)));
}

}  // namespace lal::train
