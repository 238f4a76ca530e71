// The four families, each as explicit code over checkpoint-named weights (llama.cpp style). Semantics follow the
// transformers modeling files: RMSNorm in float32 then cast back before the weight; rotate-half rotary embedding
// on the first rotary_dim channels; softmax in float32.
#include "lal/lm/transformer.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "lal/lm/safetensors.hpp"
#if LAL_LM_HAVE_KERNELS
#include "cuda/kernels.hpp"
#endif

namespace lal::lm {

namespace {

torch::ScalarType to_torch(DType t, const TensorInfo& info) {
  switch (t) {
    case DType::F32: return torch::kFloat32;
    case DType::F16: return torch::kFloat16;
    case DType::BF16: return torch::kBFloat16;
    default:
      throw std::runtime_error(info.file + ": tensor '" + info.name + "' has dtype " + dtype_name(t) +
                               "; weights must be F32, F16 or BF16");
  }
}

/// Largest weight magnitude accepted: its square still fits float32 (3.4e38), so one product with an activation of
/// the same order cannot overflow. Real checkpoints stay below ~1e3.
constexpr double kMaxWeightMagnitude = 1.8e19;

struct WeightLoader {
  const Checkpoint& ckpt;
  torch::Device device;
  torch::ScalarType dtype;
  bool allow_nonfinite = false;
  std::int64_t bytes = 0;
  std::vector<std::pair<std::string, torch::Tensor>> pending{};  // (name, max |x| on the device; NaN propagates)

  /// Queue the check of `t` (the weight `name` as loaded: on its device, in the model dtype, so a value that
  /// overflows in the conversion is seen as inf). Reduced in chunks on the device: no full-size temporary.
  void check(const std::string& name, const torch::Tensor& t) {
    if (allow_nonfinite || t.numel() == 0) return;
    const auto flat = t.reshape({-1});
    constexpr std::int64_t kChunk = 1 << 24;
    torch::Tensor worst;
    for (std::int64_t start = 0; start < flat.numel(); start += kChunk) {
      auto m = flat.narrow(0, start, std::min(kChunk, flat.numel() - start)).abs().amax().to(torch::kFloat32);
      worst = worst.defined() ? torch::maximum(worst, m) : m;  // maximum propagates NaN
    }
    pending.emplace_back(name, worst);
  }
  /// Read the queued checks back (one device→host copy) and refuse the first bad weight, naming its file and tensor.
  void verify() {
    if (pending.empty()) return;
    std::vector<torch::Tensor> values;
    for (const auto& p : pending) values.push_back(p.second);
    const auto host = torch::stack(values).to(torch::kCPU, torch::kFloat64);
    const auto* v = host.data_ptr<double>();
    for (std::size_t i = 0; i < pending.size(); ++i) {
      if (v[i] <= kMaxWeightMagnitude) continue;  // false for NaN
      const TensorInfo& info = ckpt.at(pending[i].first);
      std::string what = "holds NaN";
      if (std::isinf(v[i]))
        what = std::string("holds ±inf (in ") + dtype_name_of(dtype) + ", the dtype it is loaded as)";
      else if (!std::isnan(v[i]))
        what = "holds a value of magnitude " + std::to_string(v[i]) + " (over 1.8e19: its square overflows float32)";
      throw std::runtime_error(info.file + ": tensor '" + info.name + "' (byte " + std::to_string(info.file_offset) +
                               ") " + what +
                               "; such weights only produce garbage, so the model is refused (--allow_nonfinite "
                               "loads it anyway)");
    }
    pending.clear();
  }
  static const char* dtype_name_of(torch::ScalarType t) {
    return t == torch::kFloat16 ? "float16" : t == torch::kBFloat16 ? "bfloat16" : "float32";
  }

  /// The checkpoint tensor `name`, checked against `shape`, as a CPU tensor over the mapped bytes (no copy).
  torch::Tensor mapped(const std::string& name, const std::vector<std::int64_t>& shape) {
    const TensorInfo& info = ckpt.at(name);
    if (info.shape != shape) {
      auto fmt = [](const std::vector<std::int64_t>& v) {
        std::string s = "[";
        for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
        return s + "]";
      };
      throw std::runtime_error(info.file + ": tensor '" + name + "' (byte " + std::to_string(info.file_offset) +
                               ") has shape " + fmt(info.shape) + " but config.json implies " + fmt(shape));
    }
    return torch::from_blob(const_cast<std::byte*>(info.data), shape,
                            torch::TensorOptions().dtype(to_torch(info.dtype, info)));
  }
  torch::Tensor get(const std::string& name, std::vector<std::int64_t> shape) {
    auto t = mapped(name, shape).to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
    bytes += t.numel() * static_cast<std::int64_t>(t.element_size());
    check(name, t);
    return t;
  }
  /// Tensors concatenated along dim 0 into one device tensor (fused projections), written in place: no second copy.
  torch::Tensor concat(const std::vector<std::pair<std::string, std::vector<std::int64_t>>>& parts) {
    auto shape = parts.at(0).second;
    shape[0] = 0;
    std::vector<torch::Tensor> sources;  // shapes checked against the checkpoint before anything is allocated
    for (const auto& p : parts) {
      shape[0] += p.second.at(0);
      sources.push_back(mapped(p.first, p.second));
    }
    auto out = torch::empty(shape, torch::TensorOptions().dtype(dtype).device(device));
    std::int64_t row = 0;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      auto slice = out.narrow(0, row, parts[i].second[0]);
      slice.copy_(sources[i]);
      check(parts[i].first, slice);
      row += parts[i].second[0];
    }
    bytes += out.numel() * static_cast<std::int64_t>(out.element_size());
    return out;
  }
  torch::Tensor maybe(const std::string& name, bool wanted, std::vector<std::int64_t> shape) {
    return wanted ? get(name, std::move(shape)) : torch::Tensor();
  }
};

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

/// The decoder-layer weights that WeightOptions quantize and offload: every linear layer's matrix.
constexpr torch::Tensor TransformerLayer::*kLinearWeights[] = {
    &TransformerLayer::qkv_w,  &TransformerLayer::o_w,     &TransformerLayer::gate_up_w,
    &TransformerLayer::down_w, &TransformerLayer::fc_in_w, &TransformerLayer::fc_out_w};

std::int64_t tensor_bytes(const torch::Tensor& t) { return t.numel() * static_cast<std::int64_t>(t.element_size()); }

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return b.defined() ? torch::linear(x, w, b) : torch::linear(x, w);
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

/// Where q, k and v heads sit in one token's row of the fused projection (see kernels.hpp).
cuda::QkvLayout qkv_layout(const ModelConfig& c) {
  cuda::QkvLayout L;
  const auto H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  L.heads = static_cast<int>(H);
  L.head_dim = static_cast<int>(D);
  if (c.family == Family::GptNeoX) {  // per head [q_h | k_h | v_h]
    L.kv_heads = static_cast<int>(H);
    L.token_stride = 3 * H * D;
    L.q_offset = 0, L.k_offset = D, L.v_offset = 2 * D;
    L.q_stride = L.k_stride = L.v_stride = 3 * D;
  } else {  // [q heads | k heads | v heads]
    L.kv_heads = static_cast<int>(KV);
    L.token_stride = (H + 2 * KV) * D;
    L.q_offset = 0, L.k_offset = H * D, L.v_offset = (H + KV) * D;
    L.q_stride = L.k_stride = L.v_stride = D;
  }
  return L;
}
#endif

}  // namespace

bool Transformer::kernels_built() {
#if LAL_LM_HAVE_KERNELS
  return true;
#else
  return false;
#endif
}

void Transformer::set_fused_kernels(bool on) {
  if (on && !kernels_built())
    throw std::invalid_argument(
        "fused CUDA kernels: this lal was built without them (no CUDA toolkit or no CUDA LibTorch at configure time)");
  if (on && !device_.is_cuda()) throw std::invalid_argument("fused CUDA kernels need a CUDA device");
  fused_ = on;
}

// Rotary inverse frequencies as transformers' modeling_rope_utils computes them at initialisation (float32, the
// same operations in the same order): the table for short sequences where the rope type switches with length.
torch::Tensor rotary_inverse_frequencies(const ModelConfig& c) {
  const auto dim = c.rotary_dim;
  const auto& r = c.rope;
  auto exponents = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  auto inv_freq = 1.0 / torch::pow(r.theta, exponents);
  if (r.type == "linear") {
    inv_freq = inv_freq / r.factor;
  } else if (r.type == "llama3") {
    const double old_len = static_cast<double>(r.original_max_position_embeddings);
    const double low_wavelen = old_len / r.low_freq_factor;
    const double high_wavelen = old_len / r.high_freq_factor;
    auto wavelen = 2 * M_PI / inv_freq;
    auto scaled = torch::where(wavelen > low_wavelen, inv_freq / r.factor, inv_freq);
    auto smooth = (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / r.factor + smooth * scaled;
    auto medium = (wavelen < high_wavelen).logical_not() & (wavelen > low_wavelen).logical_not();
    inv_freq = torch::where(medium, smoothed, scaled);
  } else if (r.type == "yarn") {
    auto pos_freqs = torch::pow(r.theta, exponents);
    auto extrapolation = 1.0 / pos_freqs;
    auto interpolation = 1.0 / (r.factor * pos_freqs);
    const double d = static_cast<double>(dim), orig = static_cast<double>(r.original_max_position_embeddings);
    auto correction_dim = [&](double rotations) {
      return (d * std::log(orig / (rotations * 2 * M_PI))) / (2 * std::log(r.theta));
    };
    double low = correction_dim(r.beta_fast), high = correction_dim(r.beta_slow);
    if (r.truncate) low = std::floor(low), high = std::ceil(high);
    low = std::max(low, 0.0);
    high = std::min(high, d - 1);
    if (low == high) high += 0.001;
    auto ramp = ((torch::arange(dim / 2, torch::kInt64).to(torch::kFloat32) - low) / (high - low)).clamp(0, 1);
    auto extrapolation_factor = 1 - ramp;
    inv_freq = interpolation * (1 - extrapolation_factor) + extrapolation * extrapolation_factor;
  } else if (r.type == "longrope") {
    inv_freq = longrope_inverse_frequencies(c, r.short_factor);
  }
  return inv_freq;
}

torch::Tensor longrope_inverse_frequencies(const ModelConfig& c, const std::vector<double>& factors) {
  const auto dim = c.rotary_dim;
  auto ext = torch::tensor(factors, torch::kFloat64).to(torch::kFloat32);
  auto shape = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  return 1.0 / (ext * torch::pow(c.rope.theta, shape));
}

torch::Tensor Transformer::inverse_frequencies(const torch::Tensor& positions) const {
  const auto& r = config_.rope;
  if (!r.depends_on_length()) return inv_freq_;
  // As transformers' dynamic_rope_update: the longest position + 1 of this forward, over the whole batch.
  auto length = positions.max().to(device_) + 1;
  if (r.type == "longrope") return torch::where(length > r.original_max_position_embeddings, inv_freq_long_, inv_freq_);
  // dynamic NTK, in float32 from a tensor length as transformers computes it.
  const auto max_pos = config_.max_position_embeddings;
  const double dim = static_cast<double>(config_.rotary_dim);
  auto seq = torch::clamp_min(length, max_pos).to(torch::kFloat32);
  auto base = ((seq * r.factor) / static_cast<double>(max_pos) - (r.factor - 1)).pow(dim / (dim - 2)) * r.theta;
  auto exponents = torch::arange(0, config_.rotary_dim, 2, torch::TensorOptions().dtype(torch::kLong).device(device_))
                       .to(torch::kFloat32) /
                   dim;
  auto scaled = 1.0 / torch::pow(base, exponents);
  return torch::where(length > max_pos, scaled, inv_freq_);
}

KVCache KVCache::allocate(const ModelConfig& config, std::int64_t batch, std::int64_t capacity, torch::ScalarType dtype,
                          torch::Device device) {
  KVCache c;
  c.capacity = capacity;
  const auto opts = torch::TensorOptions().dtype(dtype).device(device);
  for (std::int64_t i = 0; i < config.num_layers; ++i) {
    c.keys.push_back(torch::zeros({batch, config.num_kv_heads, capacity, config.head_dim}, opts));
    c.values.push_back(torch::zeros({batch, config.num_kv_heads, capacity, config.head_dim}, opts));
  }
  return c;
}

WeightBudget estimate_weight_bytes(const ModelConfig& c, std::int64_t element_bytes, const WeightOptions& weights,
                                   bool offload) {
  const double E = static_cast<double>(c.hidden_size), I = static_cast<double>(c.intermediate_size),
               D = static_cast<double>(c.head_dim), H = static_cast<double>(c.num_heads),
               KV = static_cast<double>(c.num_kv_heads), V = static_cast<double>(c.vocab_size),
               L = static_cast<double>(c.num_layers);
  const bool neox = c.family == Family::GptNeoX;
  const double mlp_matrices = neox ? 2 : 3;
  const double linear = (H + 2 * KV) * D * E + E * H * D + mlp_matrices * I * E;  // per layer
  const double other = (neox ? 4 : 2) * E + (H + 2 * KV) * D + E + 2 * I + E;     // norms, biases (upper bound)
  const double outside = V * E * (c.tie_word_embeddings ? 1 : 2) + 2 * E;         // embeddings, head, final norm
  const int bits = quantize_bits(weights.quantize);
  const double bytes = static_cast<double>(element_bytes);
  const double linear_bytes =
      bits ? linear * (bits / 8.0 + 2.0 / static_cast<double>(std::max<std::int64_t>(weights.quantize_group, 1)))
           : linear * bytes;
  WeightBudget b;
  b.device_bytes = (outside + L * other) * bytes;
  if (offload) {
    b.host_bytes = L * linear_bytes;
    b.device_bytes += linear * bytes;  // one dense layer at a time
  } else {
    b.device_bytes += L * linear_bytes + (bits ? linear * bytes : 0);  // + the layer being quantized
  }
  return b;
}

namespace {
double gib(double bytes) { return bytes / double(1ull << 30); }
std::string gib_text(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, bytes >= 1e18 ? "%.3g GiB" : "%.1f GiB", gib(bytes));
  return buf;
}
/// MemAvailable of /proc/meminfo in bytes, -1 when unknown.
double host_available_bytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return -1;
  char line[256];
  double kib = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
  std::fclose(f);
  return kib < 0 ? -1 : kib * 1024;
}
}  // namespace

void check_memory_budget(const WeightBudget& budget, const torch::Device& device, const std::string& what) {
  if (const char* env = std::getenv("LAL_MEMORY_CHECK"); env && std::string(env) == "off") return;
  const double host_free = host_available_bytes();
  const double device_free = device.is_cuda() ? static_cast<double>(detail::cuda_free_bytes(device)) : host_free;
  const double on_host = budget.host_bytes + (device.is_cuda() ? 0 : budget.device_bytes);
  const std::string hint = " (a wrong config.json? else a smaller dtype, --quantize or --cpu_offload; "
                           "LAL_MEMORY_CHECK=off skips this check)";
  if (device.is_cuda() && device_free >= 0 && budget.device_bytes > device_free)
    throw std::runtime_error(what + ": the model needs " + gib_text(budget.device_bytes) + " for its weights on " +
                             device.str() + ", which has " + gib_text(device_free) + " free" + hint);
  if (host_free >= 0 && on_host > host_free)
    throw std::runtime_error(what + ": the model needs " + gib_text(on_host) + " of host memory for its weights, " +
                             "and " + gib_text(host_free) + " is available" + hint);
}

std::shared_ptr<Transformer> Transformer::load(const std::string& dir, torch::Device device, torch::ScalarType dtype,
                                               const WeightOptions& weights) {
  const int bits = quantize_bits(weights.quantize, "quantize");
  if (bits && (weights.quantize_group < 2 || weights.quantize_group % 2))
    throw std::invalid_argument("quantize group size " + std::to_string(weights.quantize_group) +
                                ": expected an even number >= 2");
  std::shared_ptr<Transformer> m(new Transformer());
  m->config_ = ModelConfig::from_dir(dir);
  m->device_ = device;
  m->dtype_ = dtype;
  m->weights_ = weights;
  // Host memory is where CPU weights live anyway: offloading there is a no-op (Engine::describe() says so).
  m->offload_ = weights.cpu_offload && !device.is_cpu();
  const ModelConfig& c = m->config_;
  check_memory_budget(
      estimate_weight_bytes(c, static_cast<std::int64_t>(c10::elementSize(dtype)), weights, m->offload_), device,
      c.source);
  const Checkpoint ckpt = Checkpoint::open_dir(dir);
  torch::NoGradGuard no_grad;
  WeightLoader w{ckpt, device, dtype, weights.allow_nonfinite};
  const auto E = c.hidden_size, I = c.intermediate_size, D = c.head_dim, H = c.num_heads, KV = c.num_kv_heads,
             V = c.vocab_size;
  const bool neox = c.family == Family::GptNeoX;
  const std::string top = neox ? "gpt_neox." : "model.";
  m->embed_ = w.get(neox ? "gpt_neox.embed_in.weight" : "model.embed_tokens.weight", {V, E});
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = top + "layers." + std::to_string(i) + ".";
    Layer l;
    l.attn_norm_w = w.get(p + "input_layernorm.weight", {E});
    l.mlp_norm_w = w.get(p + "post_attention_layernorm.weight", {E});
    switch (c.family) {
      case Family::Llama:
      case Family::Qwen2: {
        const std::string a = p + "self_attn.", m = p + "mlp.";
        l.qkv_w = w.concat({{a + "q_proj.weight", {H * D, E}},
                            {a + "k_proj.weight", {KV * D, E}},
                            {a + "v_proj.weight", {KV * D, E}}});
        if (c.qkv_bias)
          l.qkv_b =
              w.concat({{a + "q_proj.bias", {H * D}}, {a + "k_proj.bias", {KV * D}}, {a + "v_proj.bias", {KV * D}}});
        l.o_w = w.get(a + "o_proj.weight", {E, H * D});
        l.o_b = w.maybe(a + "o_proj.bias", c.o_bias, {E});
        l.gate_up_w = w.concat({{m + "gate_proj.weight", {I, E}}, {m + "up_proj.weight", {I, E}}});
        if (c.mlp_bias) l.gate_up_b = w.concat({{m + "gate_proj.bias", {I}}, {m + "up_proj.bias", {I}}});
        l.down_w = w.get(m + "down_proj.weight", {E, I});
        l.down_b = w.maybe(m + "down_proj.bias", c.mlp_bias, {E});
        break;
      }
      case Family::Phi3:
        l.qkv_w = w.get(p + "self_attn.qkv_proj.weight", {(H + 2 * KV) * D, E});
        l.o_w = w.get(p + "self_attn.o_proj.weight", {E, H * D});
        l.gate_up_w = w.get(p + "mlp.gate_up_proj.weight", {2 * I, E});
        l.down_w = w.get(p + "mlp.down_proj.weight", {E, I});
        break;
      case Family::GptNeoX:
        l.attn_norm_b = w.get(p + "input_layernorm.bias", {E});
        l.mlp_norm_b = w.get(p + "post_attention_layernorm.bias", {E});
        l.qkv_w = w.get(p + "attention.query_key_value.weight", {3 * H * D, E});
        l.qkv_b = w.maybe(p + "attention.query_key_value.bias", c.qkv_bias, {3 * H * D});
        l.o_w = w.get(p + "attention.dense.weight", {E, H * D});
        l.o_b = w.maybe(p + "attention.dense.bias", c.o_bias, {E});
        l.fc_in_w = w.get(p + "mlp.dense_h_to_4h.weight", {I, E});
        l.fc_in_b = w.get(p + "mlp.dense_h_to_4h.bias", {I});
        l.fc_out_w = w.get(p + "mlp.dense_4h_to_h.weight", {E, I});
        l.fc_out_b = w.get(p + "mlp.dense_4h_to_h.bias", {E});
        break;
    }
    w.verify();  // this layer's weights as loaded, before quantization
    // Quantize / offload this layer's linear weights now, so that the device holds one dense layer at most.
    for (auto field : kLinearWeights) {
      torch::Tensor& dense = l.*field;
      if (!dense.defined()) continue;
      if (bits) {
        QuantizedTensor q = quantize_weight(dense, bits, weights.quantize_group);
        w.bytes += q.bytes() - tensor_bytes(dense);
        if (m->offload_) {
          q.data = q.data.to(torch::kCPU).pin_memory();
          q.scales = q.scales.to(torch::kCPU).pin_memory();
          m->offloaded_bytes_ += q.bytes();
        }
        l.quantized.emplace_back(field, std::move(q));
        dense = torch::Tensor();
      } else if (m->offload_) {
        dense = dense.to(torch::kCPU).pin_memory();
        m->offloaded_bytes_ += tensor_bytes(dense);
      }
    }
    m->layers_.push_back(std::move(l));
  }
  if (neox) {
    m->final_norm_w_ = w.get("gpt_neox.final_layer_norm.weight", {E});
    m->final_norm_b_ = w.get("gpt_neox.final_layer_norm.bias", {E});
  } else {
    m->final_norm_w_ = w.get("model.norm.weight", {E});
  }
  const std::string head = neox ? "embed_out.weight" : "lm_head.weight";
  if (c.tie_word_embeddings) {
    m->lm_head_ = m->embed_;
  } else {
    if (!ckpt.find(head))
      throw std::runtime_error(ckpt.description() + ": no tensor '" + head + "' and " + c.source +
                               " has \"tie_word_embeddings\": false");
    m->lm_head_ = w.get(head, {V, E});
  }
  w.verify();
  m->parameter_bytes_ = w.bytes;
  m->inv_freq_ = rotary_inverse_frequencies(c).to(device);
  if (c.rope.type == "longrope") m->inv_freq_long_ = longrope_inverse_frequencies(c, c.rope.long_factor).to(device);
  return m;
}

const TransformerLayer& Transformer::layer_for_use(std::size_t i, Layer& scratch) const {
  const Layer& stored = layers_[i];
  if (!offload_ && stored.quantized.empty()) return stored;
  scratch = stored;  // shallow: tensors are shared, the previous layer's device copies are released
  if (offload_)
    for (auto field : kLinearWeights)
      if ((scratch.*field).defined()) scratch.*field = (scratch.*field).to(device_, /*non_blocking=*/true);
  for (const auto& [field, q] : stored.quantized) scratch.*field = dequantize_weight(q, dtype_, device_);
  return scratch;
}

torch::Tensor Transformer::norm(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) const {
#if LAL_LM_HAVE_KERNELS
  if (fused_) {
    auto in = x.contiguous();
    auto out = torch::empty_like(in);
    const auto cols = in.size(-1), rows = in.numel() / cols;
    if (config_.family == Family::GptNeoX)
      cuda::layer_norm(in.data_ptr(), out.data_ptr(), w.data_ptr(), b.defined() ? b.data_ptr() : nullptr, rows, cols,
                       static_cast<float>(config_.norm_eps), kernel_type(in), stream_of(in));
    else
      cuda::add_rms_norm(in.data_ptr(), nullptr, out.data_ptr(), w.data_ptr(), rows, cols,
                         static_cast<float>(config_.norm_eps), kernel_type(in), stream_of(in));
    return out;
  }
#endif
  if (config_.family == Family::GptNeoX) return torch::layer_norm(x, {x.size(-1)}, w, b, config_.norm_eps);
  auto xf = x.to(torch::kFloat32);
  xf = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config_.norm_eps);
  return w * xf.to(x.scalar_type());
}

torch::Tensor Transformer::attention_block(const Layer& l, std::size_t index, const torch::Tensor& x,
                                           const Rotation& rotation, const torch::Tensor& mask, bool causal,
                                           KVCache* cache, const torch::Tensor& slot) const {
  const auto& c = config_;
  const auto B = x.size(0), T = x.size(1), H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  auto qkv = linear(x, l.qkv_w, l.qkv_b);
#if LAL_LM_HAVE_KERNELS
  if (rotation.fused) {
    // q and k rotated in place in the projection's output; a decode step then appends k/v to the cache and attends
    // with one kernel each.
    qkv = qkv.contiguous();
    const auto L = qkv_layout(c);
    cuda::rotary(qkv.data_ptr(), L, B * T, rotation.positions.data_ptr<std::int64_t>(),
                 rotation.inv_freq.data_ptr<float>(), static_cast<int>(c.rotary_dim), kernel_type(qkv), stream_of(qkv));
    if (slot.defined() && T == 1 && mask.defined() && mask.scalar_type() == torch::kBool) {
      auto& keys = cache->keys[index];
      auto& values = cache->values[index];
      const auto slot_stride = slot.numel() == 1 ? 0 : 1;
      cuda::kv_append(qkv.data_ptr(), L, B, keys.data_ptr(), values.data_ptr(), cache->capacity,
                      slot.data_ptr<std::int64_t>(), slot_stride, kernel_type(qkv), stream_of(qkv));
      auto out = torch::empty({B, 1, H * D}, qkv.options());
      const int splits = cuda::decode_attention_splits(B, L.kv_heads, cache->capacity);
      torch::Tensor scratch;
      if (splits > 1) scratch = torch::empty({splits * B * H * (D + 2)}, qkv.options().dtype(torch::kFloat32));
      auto valid = mask.reshape({B, cache->capacity});
      if (cuda::decode_attention(qkv.data_ptr(), L, B, keys.data_ptr(), values.data_ptr(), cache->capacity,
                                 slot.data_ptr<std::int64_t>(), slot_stride, valid.data_ptr<bool>(),
                                 static_cast<float>(1.0 / std::sqrt(static_cast<double>(D))), out.data_ptr(), splits,
                                 splits > 1 ? scratch.data_ptr<float>() : nullptr, kernel_type(qkv), stream_of(qkv)))
        return linear(out, l.o_w, l.o_b);
      // A shape the kernel does not handle: k/v are in the cache already; attend below without writing again.
      return linear(attend(qkv, B, T, mask, causal, keys, values), l.o_w, l.o_b);
    }
  }
#endif
  torch::Tensor q, k, v;  // [B, heads, T, D]
  if (c.family == Family::GptNeoX) {
    // Fused per head: [q_h | k_h | v_h] for each head h.
    auto heads = qkv.view({B, T, H, 3 * D}).transpose(1, 2);
    q = heads.narrow(-1, 0, D);
    k = heads.narrow(-1, D, D);
    v = heads.narrow(-1, 2 * D, D);
    if (!rotation.fused) {
      q = apply_rotary(q, rotation.cos, rotation.sin, c.rotary_dim);
      k = apply_rotary(k, rotation.cos, rotation.sin, c.rotary_dim);
    }
  } else {
    // [q heads | k heads | v heads]: the query and key heads are rotated together, in one pass.
    auto heads = qkv.view({B, T, H + 2 * KV, D}).transpose(1, 2);
    auto qk = heads.narrow(1, 0, H + KV);
    if (!rotation.fused) qk = apply_rotary(qk, rotation.cos, rotation.sin, c.rotary_dim);
    q = qk.narrow(1, 0, H);
    k = qk.narrow(1, H, KV);
    v = heads.narrow(1, H + KV, KV);
  }
  if (slot.defined()) {  // static decode: write at a device-side slot (one for all rows, or one per row)
    if (slot.numel() == 1) {
      cache->keys[index].index_copy_(2, slot, k);
      cache->values[index].index_copy_(2, slot, v);
    } else {
      auto at = slot.view({B, 1, 1, 1}).expand({B, KV, 1, D});  // scatter_: capturable in a CUDA graph
      cache->keys[index].scatter_(2, at, k);
      cache->values[index].scatter_(2, at, v);
    }
    k = cache->keys[index];
    v = cache->values[index];
  } else if (cache) {
    const auto past = cache->length;
    cache->keys[index].narrow(2, past, T).copy_(k);
    cache->values[index].narrow(2, past, T).copy_(v);
    k = cache->keys[index].narrow(2, 0, past + T);
    v = cache->values[index].narrow(2, 0, past + T);
  }
  return linear(attention_heads(q, k, v, mask, causal), l.o_w, l.o_b);
}

torch::Tensor Transformer::attention_heads(const torch::Tensor& q, torch::Tensor k, torch::Tensor v,
                                           const torch::Tensor& mask, bool causal) const {
  const auto& c = config_;
  const auto B = q.size(0), T = q.size(2), H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  if (KV != H) {  // grouped-query attention: each kv head serves H/KV query heads
    const auto S = k.size(2);
    k = k.unsqueeze(2).expand({B, KV, H / KV, S, D}).reshape({B, H, S, D});
    v = v.unsqueeze(2).expand({B, KV, H / KV, S, D}).reshape({B, H, S, D});
  }
  auto out = detail::attention(q, k, v, mask, causal, 1.0 / std::sqrt(static_cast<double>(D)));
  return out.transpose(1, 2).reshape({B, T, H * D});
}

torch::Tensor Transformer::attend(const torch::Tensor& qkv, std::int64_t B, std::int64_t T, const torch::Tensor& mask,
                                  bool causal, const torch::Tensor& keys, const torch::Tensor& values) const {
  const auto& c = config_;
  const auto H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  torch::Tensor q;
  if (c.family == Family::GptNeoX)
    q = qkv.view({B, T, H, 3 * D}).transpose(1, 2).narrow(-1, 0, D);
  else
    q = qkv.view({B, T, H + 2 * KV, D}).transpose(1, 2).narrow(1, 0, H);
  return attention_heads(q, keys, values, mask, causal);
}

torch::Tensor Transformer::mlp_block(const Layer& l, const torch::Tensor& x) const {
  const auto& act = config_.hidden_act;
  if (config_.family == Family::GptNeoX)
    return linear(activation(act, linear(x, l.fc_in_w, l.fc_in_b)), l.fc_out_w, l.fc_out_b);
  auto gate_up = linear(x, l.gate_up_w, l.gate_up_b);
  const auto I = config_.intermediate_size;
#if LAL_LM_HAVE_KERNELS
  if (fused_ && (act == "silu" || act == "swish")) {
    gate_up = gate_up.contiguous();
    auto sizes = gate_up.sizes().vec();
    sizes.back() = I;
    auto gated = torch::empty(sizes, gate_up.options());
    cuda::swiglu(gate_up.data_ptr(), gated.data_ptr(), gate_up.numel() / (2 * I), I, kernel_type(gate_up),
                 stream_of(gate_up));
    return linear(gated, l.down_w, l.down_b);
  }
#endif
  return linear(activation(act, gate_up.narrow(-1, 0, I)) * gate_up.narrow(-1, I, I), l.down_w, l.down_b);
}

torch::Tensor Transformer::run_layers(torch::Tensor h, const torch::Tensor& positions, const torch::Tensor& mask,
                                      bool causal, KVCache* cache, const torch::Tensor& slot) const {
  const auto& c = config_;
  Rotation rotation;
  rotation.fused = fused_ && c.rope.attention_factor == 1.0;
  if (rotation.fused) {
    rotation.positions = positions.to(device_, torch::kLong).contiguous();
    rotation.inv_freq = inverse_frequencies(positions).contiguous();
  } else {
    // Rotary tables for these positions: [B, 1, T, rotary_dim] in the model dtype; sin with the sign of
    // rotate_half folded in ([-sin | sin], see apply_rotary).
    // yarn and longrope scale cos and sin by the attention factor (in float32, before the cast, as transformers).
    auto freqs = positions.to(device_, torch::kFloat32).unsqueeze(-1) * inverse_frequencies(positions).view({1, 1, -1});
    auto cos = torch::cat({freqs, freqs}, -1).cos();
    auto half_sin = freqs.sin();
    if (c.rope.attention_factor != 1.0) {
      cos = cos * c.rope.attention_factor;
      half_sin = half_sin * c.rope.attention_factor;
    }
    rotation.cos = cos.to(dtype_).unsqueeze(1);
    rotation.sin = torch::cat({-half_sin, half_sin}, -1).to(dtype_).unsqueeze(1);
  }

  Layer scratch;
#if LAL_LM_HAVE_KERNELS
  if (fused_ && c.family != Family::GptNeoX) {
    // Residual add fused with the next norm: x = norm(h += delta), two kernels per layer.
    h = h.contiguous();
    auto x = torch::empty_like(h);
    const auto E = h.size(-1), rows = h.numel() / E;
    const auto eps = static_cast<float>(c.norm_eps);
    auto add_norm = [&](const torch::Tensor& delta, const torch::Tensor& w) {
      auto d = delta.defined() ? delta.contiguous() : delta;
      cuda::add_rms_norm(h.data_ptr(), d.defined() ? d.data_ptr() : nullptr, x.data_ptr(), w.data_ptr(), rows, E, eps,
                         kernel_type(h), stream_of(h));
    };
    add_norm({}, layers_.at(0).attn_norm_w);
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const Layer& l = layer_for_use(i, scratch);
      add_norm(attention_block(l, i, x, rotation, mask, causal, cache, slot), l.mlp_norm_w);
      add_norm(mlp_block(l, x), i + 1 < layers_.size() ? layers_[i + 1].attn_norm_w : final_norm_w_);
    }
    return x;
  }
#endif
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layer_for_use(i, scratch);
    if (c.family == Family::GptNeoX) {
      auto attn = attention_block(l, i, norm(h, l.attn_norm_w, l.attn_norm_b), rotation, mask, causal, cache, slot);
      if (c.parallel_residual) {
        auto mlp = mlp_block(l, norm(h, l.mlp_norm_w, l.mlp_norm_b));
        h = mlp + attn + h;
      } else {
        attn = attn + h;
        h = mlp_block(l, norm(attn, l.mlp_norm_w, l.mlp_norm_b)) + attn;
      }
    } else {
      h = h + attention_block(l, i, norm(h, l.attn_norm_w, l.attn_norm_b), rotation, mask, causal, cache, slot);
      h = h + mlp_block(l, norm(h, l.mlp_norm_w, l.mlp_norm_b));
    }
  }
  return norm(h, final_norm_w_, final_norm_b_);
}

torch::Tensor Transformer::decode_static(const torch::Tensor& ids, const torch::Tensor& positions,
                                         const torch::Tensor& slot, const torch::Tensor& key_mask,
                                         KVCache& cache) const {
  torch::NoGradGuard no_grad;
  if (config_.sliding_window > 0 && cache.capacity > config_.sliding_window)
    throw std::runtime_error(config_.source + ": cache of " + std::to_string(cache.capacity) +
                             " tokens exceeds \"sliding_window\" " + std::to_string(config_.sliding_window) +
                             ", which this engine does not implement");
  const auto B = ids.size(0);
  auto mask = key_mask.view({B, 1, 1, cache.capacity});
  auto h = run_layers(torch::embedding(embed_, ids), positions, mask, false, &cache, slot);
  return torch::linear(h, lm_head_).to(torch::kFloat32);
}

torch::Tensor Transformer::forward(const torch::Tensor& ids, const torch::Tensor& positions,
                                   const torch::Tensor& key_mask, KVCache* cache, bool last_only) const {
  torch::NoGradGuard no_grad;
  const auto& c = config_;
  const auto T = ids.size(1);
  const auto past = cache ? cache->length : 0;
  const auto S = past + T;
  if (cache && S > cache->capacity)
    throw std::runtime_error("KV cache overflow: " + std::to_string(S) + " tokens > capacity " +
                             std::to_string(cache->capacity));
  if (c.sliding_window > 0 && S > c.sliding_window)
    throw std::runtime_error(c.source + ": sequence of " + std::to_string(S) + " tokens exceeds \"sliding_window\" " +
                             std::to_string(c.sliding_window) + ", which this engine does not implement");

  torch::Tensor mask;
  bool causal = false;
  if (key_mask.defined() || (T > 1 && past > 0)) {
    auto opts = torch::TensorOptions().dtype(torch::kLong).device(device_);
    auto kpos = torch::arange(S, opts).view({1, S});
    auto qpos = (torch::arange(T, opts) + past).view({T, 1});
    mask = (kpos <= qpos).view({1, 1, T, S});
    if (key_mask.defined()) {
      // Padding keys are invisible; a padding query still sees itself so that its softmax row is not all -inf.
      mask = (mask & key_mask.narrow(1, 0, S).to(device_).view({-1, 1, 1, S})) | (kpos == qpos).view({1, 1, T, S});
    }
  } else {
    causal = T > 1;
  }

  auto h = run_layers(torch::embedding(embed_, ids.to(device_)), positions, mask, causal, cache, {});
  if (cache) cache->length = S;
  if (last_only) h = h.narrow(1, T - 1, 1);
  return torch::linear(h, lm_head_).to(torch::kFloat32);
}

}  // namespace lal::lm
