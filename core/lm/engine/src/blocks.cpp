// The decoder's shared blocks (decoder.hpp). Semantics follow the transformers modeling files: RMSNorm in float32
// then cast back before the weight; rotate-half rotary embedding on the first rotary_dim channels; softmax in
// float32. The LibTorch ops are the reference (and differentiable); the fused CUDA kernels round as they do.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cpu/cpu_linear.hpp"
#include "decoder.hpp"
#include "lal/lm/training_kernels.hpp"
#if LAL_LM_HAVE_KERNELS
#include "cuda/kernels.hpp"
#endif

namespace lal::lm::decoder {

namespace {

/// [x1 | x2] -> [x2 | x1] along the last dimension, in one kernel (a flip of a [..., 2, d/2] view).
torch::Tensor swap_halves(const torch::Tensor& x) {
  auto split = x.sizes().vec();
  const auto d = split.back();
  split.back() = 2;
  split.push_back(d / 2);
  return x.view(split).flip(-2).reshape(x.sizes());
}

/// Rotate-half rotary embedding, x * cos + rotate_half(x) * sin, written as x * cos + swap_halves(x) * signed_sin
/// with signed_sin = [-sin | sin]: the same products (a sign moves from one factor to the other, exactly) in four
/// kernels instead of six.
torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& signed_sin,
                           std::int64_t rotary_dim) {
  if (rotary_dim == x.size(-1)) return x * cos + swap_halves(x) * signed_sin;
  auto rot = x.narrow(-1, 0, rotary_dim);
  auto pass = x.narrow(-1, rotary_dim, x.size(-1) - rotary_dim);
  return torch::cat({rot * cos + swap_halves(rot) * signed_sin, pass}, -1);
}

torch::Tensor activation(const std::string& act, const torch::Tensor& x) {
  if (act == "silu" || act == "swish") return torch::silu(x);
  if (act == "gelu") return torch::gelu(x);
  if (act == "relu") return torch::relu(x);
  return torch::gelu(x, "tanh");  // gelu_new, gelu_pytorch_tanh, gelu_fast
}

/// q [B, H, T, D] attending to k/v [B, KV, S, D] (grouped heads expanded), as [B, T, H * D].
torch::Tensor attention_heads(const ModelConfig& c, const torch::Tensor& q, torch::Tensor k, torch::Tensor v,
                              const torch::Tensor& mask, bool causal) {
  const auto B = q.size(0), T = q.size(2), H = c.num_heads, KV = k.size(1), D = c.head_dim;
  if (KV != H && T == 1 && q.device().is_cpu() && !torch::GradMode::is_enabled()) {
    // One query per row: the H/KV query heads of a group attend as H/KV "positions" of one k/v head, so the cache
    // is read in place instead of being expanded (copied) to H heads every step. Head order as below.
    auto grouped =
        detail::attention(q.reshape({B, KV, H / KV, D}), k, v, mask, false, 1.0 / std::sqrt(static_cast<double>(D)));
    return grouped.reshape({B, 1, H * D});
  }
  if (KV != H) {  // grouped-query attention: each kv head serves H/KV query heads
    const auto S = k.size(2);
    k = k.unsqueeze(2).expand({B, KV, H / KV, S, D}).reshape({B, H, S, D});
    v = v.unsqueeze(2).expand({B, KV, H / KV, S, D}).reshape({B, H, S, D});
  }
  auto out = detail::attention(q, k, v, mask, causal, 1.0 / std::sqrt(static_cast<double>(D)));
  return out.transpose(1, 2).reshape({B, T, H * D});
}

/// The q, k and v heads [B, heads, T, D] of a fused projection output [B, T, ...] (views).
struct Heads {
  torch::Tensor q, k, v;
};
Heads split_heads(const ModelConfig& c, QkvOrder order, const torch::Tensor& qkv) {
  const auto B = qkv.size(0), T = qkv.size(1), H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  if (order == QkvOrder::PerHead) {
    auto heads = qkv.view({B, T, H, 3 * D}).transpose(1, 2);
    return {heads.narrow(-1, 0, D), heads.narrow(-1, D, D), heads.narrow(-1, 2 * D, D)};
  }
  auto heads = qkv.view({B, T, H + 2 * KV, D}).transpose(1, 2);
  return {heads.narrow(1, 0, H), heads.narrow(1, H, KV), heads.narrow(1, H + KV, KV)};
}

/// Rotates q and k of `qkv` with the LibTorch ops. Grouped: the query and key heads together, in one pass.
Heads rotated_heads(const Pass& p, QkvOrder order, const torch::Tensor& qkv) {
  const auto& c = p.config;
  const auto& r = p.rotation;
  if (order == QkvOrder::PerHead) {
    auto h = split_heads(c, order, qkv);
    return {apply_rotary(h.q, r.cos, r.sin, c.rotary_dim), apply_rotary(h.k, r.cos, r.sin, c.rotary_dim), h.v};
  }
  const auto B = qkv.size(0), T = qkv.size(1), H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  auto heads = qkv.view({B, T, H + 2 * KV, D}).transpose(1, 2);
  auto qk = apply_rotary(heads.narrow(1, 0, H + KV), r.cos, r.sin, c.rotary_dim);
  return {qk.narrow(1, 0, H), qk.narrow(1, H, KV), heads.narrow(1, H + KV, KV)};
}

#if LAL_LM_HAVE_KERNELS
cuda::ScalarType kernel_type(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kBFloat16: return cuda::ScalarType::BFloat16;
    case torch::kFloat16: return cuda::ScalarType::Float16;
    default: return cuda::ScalarType::Float32;
  }
}
void* stream_of(const torch::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

/// The decode-attention settings, read once from LAL_CUDA_ATTENTION(_HEADS, _SPLITS) (the fast paths when unset); a
/// value it does not know is refused at every decode step until the variable is fixed.
const cuda::AttentionChoice& attention_choice() {
  static const cuda::AttentionChoice choice = cuda::attention_choice_from_env();
  return choice;
}

/// Where q, k and v heads sit in one token's row of the fused projection (see kernels.hpp).
cuda::QkvLayout qkv_layout(const ModelConfig& c, QkvOrder order) {
  cuda::QkvLayout L;
  const auto H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  L.heads = static_cast<int>(H);
  L.head_dim = static_cast<int>(D);
  if (order == QkvOrder::PerHead) {
    L.kv_heads = static_cast<int>(H);
    L.token_stride = 3 * H * D;
    L.q_offset = 0, L.k_offset = D, L.v_offset = 2 * D;
    L.q_stride = L.k_stride = L.v_stride = 3 * D;
  } else {
    L.kv_heads = static_cast<int>(KV);
    L.token_stride = (H + 2 * KV) * D;
    L.q_offset = 0, L.k_offset = H * D, L.v_offset = (H + KV) * D;
    L.q_stride = L.k_stride = L.v_stride = D;
  }
  return L;
}

/// The fused path of attention(): q and k rotated in place in the projection's output; a static decode step
/// instead rotates q in place and k on its way into the cache (one kernel with the v copy), then attends with one
/// kernel. Returns an undefined tensor when the rest is left to the LibTorch ops (`*cached` says whether k/v are in
/// the cache already).
torch::Tensor fused_attention(const Pass& p, std::size_t layer, QkvOrder order, torch::Tensor& qkv, bool* cached) {
  const auto& c = p.config;
  const auto B = qkv.size(0), T = qkv.size(1), H = c.num_heads, D = c.head_dim;
  qkv = qkv.contiguous();
  const auto L = qkv_layout(c, order);
  const auto* positions = p.rotation.positions.data_ptr<std::int64_t>();
  const auto* inv_freq = p.rotation.inv_freq.data_ptr<float>();
  if (!(p.slot.defined() && T == 1 && p.mask.defined() && p.mask.scalar_type() == torch::kBool)) {
    cuda::rotary(qkv.data_ptr(), L, B * T, positions, inv_freq, static_cast<int>(c.rotary_dim), kernel_type(qkv),
                 stream_of(qkv));
    return {};
  }
  auto& keys = p.cache->keys[layer];
  auto& values = p.cache->values[layer];
  const auto capacity = p.cache->capacity;
  const auto slot_stride = p.slot.numel() == 1 ? 0 : 1;
  cuda::rotary_kv_append(qkv.data_ptr(), L, B, positions, inv_freq, static_cast<int>(c.rotary_dim), keys.data_ptr(),
                         values.data_ptr(), capacity, p.slot.data_ptr<std::int64_t>(), slot_stride, kernel_type(qkv),
                         stream_of(qkv));
  *cached = true;
  auto out = torch::empty({B, 1, H * D}, qkv.options());
  const auto& choice = attention_choice();
  const int splits = cuda::decode_attention_splits(B, L.kv_heads, capacity, choice);
  torch::Tensor scratch;
  if (splits > 1) scratch = torch::empty({splits * B * H * (D + 2)}, qkv.options().dtype(torch::kFloat32));
  auto valid = p.mask.reshape({B, capacity});
  if (cuda::decode_attention(qkv.data_ptr(), L, B, keys.data_ptr(), values.data_ptr(), capacity,
                             p.slot.data_ptr<std::int64_t>(), slot_stride, valid.data_ptr<bool>(),
                             static_cast<float>(1.0 / std::sqrt(static_cast<double>(D))), out.data_ptr(), splits,
                             splits > 1 ? scratch.data_ptr<float>() : nullptr, choice, kernel_type(qkv),
                             stream_of(qkv)))
    return out;
  return {};  // a shape the kernel does not handle: attend with the LibTorch ops over the cache
}

/// Whether LAL_CUDA_GEMV (read once) leaves the small-batch GEMV kernels on: unset or "on"; "off" keeps cuBLAS for
/// every matrix (to measure one against the other).
bool gemv_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("LAL_CUDA_GEMV");
    if (!v || !*v || std::string(v) == "on") return true;
    if (std::string(v) == "off") return false;
    throw std::invalid_argument(std::string("LAL_CUDA_GEMV='") + v + "': expected on or off");
  }();
  return on;
}

/// The rows of x up to which the GEMV kernels replace cuBLAS. Measured on an H200 (bf16, BENCHMARKS.md): at one row
/// they beat cuBLAS (Qwen2.5-7B shape 5.06 vs 5.45 ms per step, 0.5B 1.23 vs 1.48); at 2 and 4 rows cuBLAS is faster
/// for 7B (5.48 vs 5.84, 5.52 vs 6.70 ms), so from 2 rows on cuBLAS runs.
constexpr std::int64_t kGemvRowsUsed = 1;

/// x and w (and b) in one 16-bit or float32 dtype on CUDA, w [N, K] contiguous, at most kGemvRowsUsed rows of x:
/// the rows, else 0.
std::int64_t gemv_rows(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const auto type = w.scalar_type();
  if (!gemv_enabled() || !x.is_cuda() || x.scalar_type() != type || w.dim() != 2 || !w.is_contiguous() || x.dim() < 1 ||
      x.size(-1) != w.size(1) || w.size(1) == 0 ||
      (type != torch::kBFloat16 && type != torch::kFloat16 && type != torch::kFloat32))
    return 0;
  if (b.defined() && (b.scalar_type() != type || !b.is_contiguous() || b.numel() != w.size(0))) return 0;
  const auto rows = x.numel() / w.size(1);
  return rows >= 1 && rows <= std::min(kGemvRowsUsed, cuda::kGemvMaxRows) ? rows : 0;
}
#endif

#if LAL_LM_HAVE_KERNELS
/// RMSNorm (no residual add) with the fused forward kernel and its backward kernel, for training on CUDA.
struct RmsNormFunction : torch::autograd::Function<RmsNormFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               double eps) {
    auto in = x.contiguous();
    auto out = torch::empty_like(in);
    const auto E = in.size(-1), rows = in.numel() / E;
    cuda::add_rms_norm(in.data_ptr(), nullptr, out.data_ptr(), w.data_ptr(), rows, E, static_cast<float>(eps),
                       kernel_type(in), stream_of(in));
    ctx->save_for_backward({in, w});
    ctx->saved_data["eps"] = eps;
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const auto &x = saved[0], &w = saved[1];
    const auto dy = grad[0].to(x.scalar_type()).contiguous();
    const auto E = x.size(-1), rows = x.numel() / E;
    auto dx = torch::empty_like(x);
    auto partial = torch::empty({cuda::rms_norm_backward_blocks(rows), E}, x.options().dtype(torch::kFloat32));
    auto rstd = torch::empty({rows}, x.options().dtype(torch::kFloat32));
    cuda::rms_norm_backward(x.data_ptr(), w.data_ptr(), dy.data_ptr(), dx.data_ptr(), rstd.data_ptr<float>(),
                            partial.data_ptr<float>(), rows, E, static_cast<float>(ctx->saved_data["eps"].toDouble()),
                            kernel_type(x), stream_of(x));
    return {dx, partial.sum(0).to(w.scalar_type()), torch::Tensor()};
  }
};

/// silu(gate) * up of a fused [gate | up] projection output, forward and backward kernels, for training on CUDA.
struct SwigluFunction : torch::autograd::Function<SwigluFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& gate_up) {
    auto in = gate_up.contiguous();
    const auto I = in.size(-1) / 2, rows = in.numel() / (2 * I);
    auto sizes = in.sizes().vec();
    sizes.back() = I;
    auto out = torch::empty(sizes, in.options());
    cuda::swiglu(in.data_ptr(), out.data_ptr(), rows, I, kernel_type(in), stream_of(in));
    ctx->save_for_backward({in});
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto in = ctx->get_saved_variables()[0];
    const auto dy = grad[0].to(in.scalar_type()).contiguous();
    const auto I = in.size(-1) / 2, rows = in.numel() / (2 * I);
    auto d = torch::empty_like(in);
    cuda::swiglu_backward(in.data_ptr(), dy.data_ptr(), d.data_ptr(), rows, I, kernel_type(in), stream_of(in));
    return {d};
  }
};

/// Rotary embedding of the q and k heads of a fused projection output [B, T, (H + 2 KV) * D] (grouped order) with
/// grouped-query attention's expansion, for training on CUDA: q, k, v [B, T, H, D] (q and k rotated by the Rotation's
/// tables, each k/v head repeated for its group) in one kernel; backward: their gradients into the row's gradient in
/// one kernel (instead of slice gradients filled with zeros, the expansion's sums and the rotation's ops).
struct RotaryFunction : torch::autograd::Function<RotaryFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& qkv,
                                                const torch::Tensor& cos, const torch::Tensor& signed_sin,
                                                std::int64_t heads, std::int64_t kv_heads, std::int64_t head_dim) {
    auto in = qkv.contiguous();
    const auto B = in.size(0), T = in.size(1), rot = cos.size(-1), tokens = B * T;
    const auto c = cos.expand({B, 1, T, rot}).reshape({tokens, rot}).contiguous();
    const auto s = signed_sin.expand({B, 1, T, rot}).reshape({tokens, rot}).contiguous();
    auto q = torch::empty({B, T, heads, head_dim}, in.options());
    auto k = torch::empty_like(q), v = torch::empty_like(q);
    cuda::rotary_train(in.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(), tokens, static_cast<int>(heads),
                       static_cast<int>(kv_heads), static_cast<int>(head_dim), static_cast<int>(rot), c.data_ptr(),
                       s.data_ptr(), false, kernel_type(in), stream_of(in));
    ctx->save_for_backward({c, s});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["kv_heads"] = kv_heads;
    ctx->saved_data["head_dim"] = head_dim;
    ctx->saved_data["batch"] = B;
    return {q, k, v};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    const auto saved = ctx->get_saved_variables();
    const auto &c = saved[0], &s = saved[1];
    const auto H = ctx->saved_data["heads"].toInt(), KV = ctx->saved_data["kv_heads"].toInt();
    const auto D = ctx->saved_data["head_dim"].toInt(), B = ctx->saved_data["batch"].toInt();
    const auto tokens = c.size(0);
    auto part = [&](int i) {
      return grad[i].defined() ? grad[i].to(c.scalar_type()).contiguous() : torch::zeros({tokens, H * D}, c.options());
    };
    const auto dq = part(0), dk = part(1), dv = part(2);
    auto dx = torch::empty({B, tokens / B, (H + 2 * KV) * D}, c.options());
    cuda::rotary_train(dx.data_ptr(), const_cast<void*>(dq.data_ptr()), const_cast<void*>(dk.data_ptr()),
                       const_cast<void*>(dv.data_ptr()), tokens, static_cast<int>(H), static_cast<int>(KV),
                       static_cast<int>(D), static_cast<int>(c.size(-1)), c.data_ptr(), s.data_ptr(), true,
                       kernel_type(dx), stream_of(dx));
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

/// The training kernels' conditions (training_kernels.hpp) for grad-mode blocks: x and w in one dtype.
bool training_kernels_for(const torch::Tensor& x, const torch::Tensor& w) {
  return torch::GradMode::is_enabled() && training::kernels_apply(x) && w.scalar_type() == x.scalar_type() &&
         w.device() == x.device();
}
#endif

}  // namespace

torch::Tensor small_batch_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                                 bool float_out) {
#if LAL_LM_HAVE_KERNELS
  const auto rows = gemv_rows(x, w, b);
  if (rows == 0) return {};
  auto in = x.contiguous();
  auto sizes = x.sizes().vec();
  sizes.back() = w.size(0);
  auto out = torch::empty(sizes, in.options().dtype(float_out ? torch::kFloat32 : in.scalar_type()));
  if (cuda::gemv(in.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr, out.data_ptr(), float_out, rows,
                 w.size(0), w.size(1), kernel_type(in), stream_of(in)))
    return out;
#else
  (void)x, (void)w, (void)b, (void)float_out;
#endif
  return {};
}

Rotation rotation_for(const ModelConfig& c, const torch::Tensor& positions, const torch::Tensor& inv_freq,
                      torch::ScalarType dtype, bool fused) {
  Rotation r;
  r.fused = fused && c.rope.attention_factor == 1.0;
  const auto device = inv_freq.device();
  if (r.fused) {
    r.positions = positions.to(device, torch::kLong).contiguous();
    r.inv_freq = inv_freq.contiguous();
    return r;
  }
  // yarn and longrope scale cos and sin by the attention factor (in float32, before the cast, as transformers).
  auto freqs = positions.to(device, torch::kFloat32).unsqueeze(-1) * inv_freq.view({1, 1, -1});
  auto cos = torch::cat({freqs, freqs}, -1).cos();
  auto half_sin = freqs.sin();
  if (c.rope.attention_factor != 1.0) {
    cos = cos * c.rope.attention_factor;
    half_sin = half_sin * c.rope.attention_factor;
  }
  r.cos = cos.to(dtype).unsqueeze(1);
  r.sin = torch::cat({-half_sin, half_sin}, -1).to(dtype).unsqueeze(1);
  return r;
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (!torch::GradMode::is_enabled() && x.device().is_cpu()) {  // CPU inference: src/cpu (decode kernels, threads)
    if (cpu::applies(x, w)) return cpu::linear(x, w, b);
    if (w.scalar_type() == torch::kChar || w.scalar_type() == torch::kByte) {
      const QuantizedTensor* q = cpu::QuantizedWeights::find(w);
      if (!q) throw std::logic_error("decoder::linear: an integer weight that is no quantized weight of this layer");
      return cpu::linear(x, *q, b);
    }
  }
  return b.defined() ? torch::linear(x, w, b) : torch::linear(x, w);
}

torch::Tensor linear(const Pass& p, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  if (p.fused) {
    auto out = small_batch_linear(x, w, b, /*float_out=*/false);
    if (out.defined()) return out;
  }
  return linear(x, w, b);
}

torch::Tensor layer_norm(const Pass& p, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
#if LAL_LM_HAVE_KERNELS
  if (p.fused) {
    auto in = x.contiguous();
    auto out = torch::empty_like(in);
    const auto cols = in.size(-1), rows = in.numel() / cols;
    cuda::layer_norm(in.data_ptr(), out.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr, rows, cols,
                     static_cast<float>(p.config.norm_eps), kernel_type(in), stream_of(in));
    return out;
  }
#endif
  return torch::layer_norm(x, {x.size(-1)}, w, b, p.config.norm_eps);
}

Residual::Residual(const Pass& p, torch::Tensor h) : pass_(p), h_(std::move(h)) {
  if (p.fused) h_ = h_.contiguous();  // the kernel updates it in place
}

void Residual::add(const torch::Tensor& delta) {
  if (!pass_.fused) {
    h_ = h_ + delta;
    return;
  }
  if (pending_.defined()) h_.add_(pending_);
  pending_ = delta;
}

const torch::Tensor& Residual::h() {
  if (pending_.defined()) h_.add_(pending_);
  pending_ = torch::Tensor();
  return h_;
}

void Residual::set(torch::Tensor h) {
  h_ = pass_.fused ? h.contiguous() : std::move(h);
  pending_ = torch::Tensor();
}

torch::Tensor Residual::rms_norm(const torch::Tensor& w) {
#if LAL_LM_HAVE_KERNELS
  if (pass_.fused) {
    auto d = pending_.defined() ? pending_.contiguous() : pending_;
    pending_ = torch::Tensor();
    auto out = torch::empty_like(h_);
    const auto E = h_.size(-1), rows = h_.numel() / E;
    cuda::add_rms_norm(h_.data_ptr(), d.defined() ? d.data_ptr() : nullptr, out.data_ptr(), w.data_ptr(), rows, E,
                       static_cast<float>(pass_.config.norm_eps), kernel_type(h_), stream_of(h_));
    return out;
  }
#endif
#if LAL_LM_HAVE_KERNELS
  if (training_kernels_for(h(), w) && w.dim() == 1) return RmsNormFunction::apply(h_, w, pass_.config.norm_eps);
#endif
  auto xf = h().to(torch::kFloat32);
  xf = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + pass_.config.norm_eps);
  return w * xf.to(h_.scalar_type());
}

torch::Tensor attention(const Pass& p, std::size_t layer, QkvOrder order, torch::Tensor qkv) {
  const auto& c = p.config;
  bool cached = false;
#if LAL_LM_HAVE_KERNELS
  if (p.rotation.fused) {
    auto out = fused_attention(p, layer, order, qkv, &cached);
    if (out.defined()) return out;
  }
#endif
#if LAL_LM_HAVE_KERNELS
  if (!p.rotation.fused && !p.cache && order == QkvOrder::Grouped && qkv.dim() == 3 && p.rotation.cos.defined() &&
      p.rotation.cos.dim() == 4 && training_kernels_for(qkv, p.rotation.cos) && c.rotary_dim % 2 == 0 &&
      c.rotary_dim <= c.head_dim && c.num_heads % c.num_kv_heads == 0 &&
      qkv.size(-1) == (c.num_heads + 2 * c.num_kv_heads) * c.head_dim) {
    auto qkv_heads =
        RotaryFunction::apply(qkv, p.rotation.cos, p.rotation.sin, c.num_heads, c.num_kv_heads, c.head_dim);
    return attention_heads(c, qkv_heads[0].transpose(1, 2), qkv_heads[1].transpose(1, 2), qkv_heads[2].transpose(1, 2),
                           p.mask, p.causal);
  }
#endif
  auto heads = p.rotation.fused ? split_heads(c, order, qkv) : rotated_heads(p, order, qkv);
  auto k = heads.k, v = heads.v;
  if (p.slot.defined()) {  // static decode: write at a device-side slot (one for all rows, or one per row)
    auto& keys = p.cache->keys[layer];
    auto& values = p.cache->values[layer];
    if (cached) {
      // the fused kernel appended k/v already
    } else if (p.slot.numel() == 1) {
      keys.index_copy_(2, p.slot, k);
      values.index_copy_(2, p.slot, v);
    } else {
      const auto B = k.size(0);
      auto at = p.slot.view({B, 1, 1, 1}).expand({B, k.size(1), 1, c.head_dim});  // scatter_: capturable
      keys.scatter_(2, at, k);
      values.scatter_(2, at, v);
    }
    k = keys;
    v = values;
  } else if (p.cache) {
    const auto past = p.cache->length, T = qkv.size(1);
    p.cache->keys[layer].narrow(2, past, T).copy_(k);
    p.cache->values[layer].narrow(2, past, T).copy_(v);
    k = p.cache->keys[layer].narrow(2, 0, past + T);
    v = p.cache->values[layer].narrow(2, 0, past + T);
  }
  return attention_heads(c, heads.q, k, v, p.mask, p.causal);
}

torch::Tensor gated_mlp(const Pass& p, const torch::Tensor& x, const torch::Tensor& gate_up_w,
                        const torch::Tensor& gate_up_b, const torch::Tensor& down_w, const torch::Tensor& down_b) {
  const auto& act = p.config.hidden_act;
#if LAL_LM_HAVE_KERNELS
  const bool silu = act == "silu" || act == "swish";
  if (p.fused && silu) {  // a few rows: the projection and SwiGLU in one kernel
    if (const auto rows = gemv_rows(x, gate_up_w, gate_up_b)) {
      auto in = x.contiguous();
      const auto inner = gate_up_w.size(0) / 2;
      auto sizes = in.sizes().vec();
      sizes.back() = inner;
      auto gated = torch::empty(sizes, in.options());
      if (cuda::gemv_swiglu(in.data_ptr(), gate_up_w.data_ptr(), gate_up_b.defined() ? gate_up_b.data_ptr() : nullptr,
                            gated.data_ptr(), rows, inner, gate_up_w.size(1), kernel_type(in), stream_of(in)))
        return linear(p, gated, down_w, down_b);
    }
  }
#endif
  auto gate_up = linear(p, x, gate_up_w, gate_up_b);
  const auto I = gate_up.size(-1) / 2;
#if LAL_LM_HAVE_KERNELS
  if (p.fused && silu) {
    gate_up = gate_up.contiguous();
    auto sizes = gate_up.sizes().vec();
    sizes.back() = I;
    auto gated = torch::empty(sizes, gate_up.options());
    cuda::swiglu(gate_up.data_ptr(), gated.data_ptr(), gate_up.numel() / (2 * I), I, kernel_type(gate_up),
                 stream_of(gate_up));
    return linear(p, gated, down_w, down_b);
  }
#endif
#if LAL_LM_HAVE_KERNELS
  if ((act == "silu" || act == "swish") && training_kernels_for(gate_up, gate_up))
    return linear(SwigluFunction::apply(gate_up), down_w, down_b);
#endif
  return linear(activation(act, gate_up.narrow(-1, 0, I)) * gate_up.narrow(-1, I, I), down_w, down_b);
}

torch::Tensor plain_mlp(const Pass& p, const torch::Tensor& x, const torch::Tensor& in_w, const torch::Tensor& in_b,
                        const torch::Tensor& out_w, const torch::Tensor& out_b) {
  return linear(p, activation(p.config.hidden_act, linear(p, x, in_w, in_b)), out_w, out_b);
}

}  // namespace lal::lm::decoder

namespace lal::lm::training {

bool kernels_built() {
#if LAL_LM_HAVE_KERNELS
  return true;
#else
  return false;
#endif
}

bool kernels_apply(const torch::Tensor& t) {
  if (!kernels_built() || !t.defined() || !t.is_cuda()) return false;
  const auto type = t.scalar_type();
  if (type != torch::kFloat32 && type != torch::kBFloat16 && type != torch::kFloat16) return false;
  const char* v = std::getenv("LAL_TRAIN_KERNELS");
  if (!v || !*v || std::string(v) == "on") return true;
  if (std::string(v) == "off") return false;
  throw std::invalid_argument(std::string("LAL_TRAIN_KERNELS='") + v + "': expected on or off");
}

LogitRowStats logit_row_stats(const torch::Tensor& logits, double temperature) {
  if (!kernels_apply(logits) || logits.dim() != 2 || !logits.is_contiguous())
    throw std::logic_error("training::logit_row_stats: needs contiguous [rows, V] CUDA logits and the kernels");
  const auto rows = logits.size(0);
  auto f32 = logits.options().dtype(torch::kFloat32);
  LogitRowStats s{torch::empty({rows}, f32), torch::empty({rows}, f32), torch::empty({rows}, f32)};
#if LAL_LM_HAVE_KERNELS
  cuda::logit_row_stats(logits.data_ptr(), rows, logits.size(1), static_cast<float>(1.0 / temperature),
                        s.max.data_ptr<float>(), s.log_sum.data_ptr<float>(), s.log_sum_t.data_ptr<float>(),
                        decoder::kernel_type(logits), decoder::stream_of(logits));
#else
  (void)temperature;
#endif
  return s;
}

void logit_softmax_gradient_(const torch::Tensor& logits, const LogitRowStats& stats, double temperature,
                             double ce_coef, const torch::Tensor& kd_coef) {
  if (!kernels_apply(logits) || logits.dim() != 2 || !logits.is_contiguous())
    throw std::logic_error("training::logit_softmax_gradient_: needs contiguous [rows, V] CUDA logits and the kernels");
  const auto kd = kd_coef.defined() ? kd_coef.to(torch::kFloat32).contiguous() : kd_coef;
  if (kd.defined() && kd.numel() != logits.size(0))
    throw std::invalid_argument("training::logit_softmax_gradient_: kd_coef needs one value per row");
#if LAL_LM_HAVE_KERNELS
  cuda::logit_softmax_gradient(
      logits.data_ptr(), logits.size(0), logits.size(1), stats.max.data_ptr<float>(), stats.log_sum.data_ptr<float>(),
      stats.log_sum_t.data_ptr<float>(), static_cast<float>(1.0 / temperature), static_cast<float>(ce_coef),
      kd.defined() ? kd.data_ptr<float>() : nullptr, decoder::kernel_type(logits), decoder::stream_of(logits));
#else
  (void)stats, (void)temperature, (void)ce_coef;
#endif
}

}  // namespace lal::lm::training
