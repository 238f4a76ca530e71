// The four families, each as explicit code over checkpoint-named weights (llama.cpp style). Semantics follow the
// transformers modeling files: RMSNorm in float32 then cast back before the weight; rotate-half rotary embedding
// on the first rotary_dim channels; softmax in float32.
#include "lal/lm/transformer.hpp"

#include <cmath>

#include "lal/lm/safetensors.hpp"

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

struct WeightLoader {
  const Checkpoint& ckpt;
  torch::Device device;
  torch::ScalarType dtype;
  std::int64_t bytes = 0;

  torch::Tensor get(const std::string& name, std::vector<std::int64_t> shape) {
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
    auto src = torch::from_blob(const_cast<std::byte*>(info.data), shape,
                                torch::TensorOptions().dtype(to_torch(info.dtype, info)));
    auto t = src.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
    bytes += t.numel() * static_cast<std::int64_t>(t.element_size());
    return t;
  }
  torch::Tensor maybe(const std::string& name, bool wanted, std::vector<std::int64_t> shape) {
    return wanted ? get(name, std::move(shape)) : torch::Tensor();
  }
};

torch::Tensor rotate_half(const torch::Tensor& x) {
  const auto half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                           std::int64_t rotary_dim) {
  if (rotary_dim == x.size(-1)) return x * cos + rotate_half(x) * sin;
  auto rot = x.narrow(-1, 0, rotary_dim);
  auto pass = x.narrow(-1, rotary_dim, x.size(-1) - rotary_dim);
  return torch::cat({rot * cos + rotate_half(rot) * sin, pass}, -1);
}

torch::Tensor activation(const std::string& act, const torch::Tensor& x) {
  if (act == "silu" || act == "swish") return torch::silu(x);
  if (act == "gelu") return torch::gelu(x);
  if (act == "relu") return torch::relu(x);
  return torch::gelu(x, "tanh");  // gelu_new, gelu_pytorch_tanh, gelu_fast
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return b.defined() ? torch::linear(x, w, b) : torch::linear(x, w);
}

// Rotary inverse frequencies with rope_scaling applied, computed as transformers does (float32 arithmetic).
torch::Tensor inverse_frequencies(const ModelConfig& c) {
  const auto dim = c.rotary_dim;
  auto exponents = torch::arange(0, dim, 2, torch::kInt64).to(torch::kFloat32) / static_cast<double>(dim);
  auto inv_freq = 1.0 / torch::pow(c.rope_theta, exponents);
  const auto& s = c.rope_scaling;
  if (s.type == "linear") {
    inv_freq = inv_freq / s.factor;
  } else if (s.type == "llama3") {
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor;
    const double high_wavelen = old_len / s.high_freq_factor;
    auto wavelen = 2 * M_PI / inv_freq;
    auto scaled = torch::where(wavelen > low_wavelen, inv_freq / s.factor, inv_freq);
    auto smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
    auto medium = (wavelen < high_wavelen).logical_not() & (wavelen > low_wavelen).logical_not();
    inv_freq = torch::where(medium, smoothed, scaled);
  }
  return inv_freq;
}

}  // namespace

KVCache KVCache::allocate(const ModelConfig& config, std::int64_t batch, std::int64_t capacity,
                          torch::ScalarType dtype, torch::Device device) {
  KVCache c;
  c.capacity = capacity;
  const auto opts = torch::TensorOptions().dtype(dtype).device(device);
  for (std::int64_t i = 0; i < config.num_layers; ++i) {
    c.keys.push_back(torch::zeros({batch, config.num_kv_heads, capacity, config.head_dim}, opts));
    c.values.push_back(torch::zeros({batch, config.num_kv_heads, capacity, config.head_dim}, opts));
  }
  return c;
}

std::shared_ptr<Transformer> Transformer::load(const std::string& dir, torch::Device device,
                                               torch::ScalarType dtype) {
  std::shared_ptr<Transformer> m(new Transformer());
  m->config_ = ModelConfig::from_dir(dir);
  m->device_ = device;
  m->dtype_ = dtype;
  const ModelConfig& c = m->config_;
  const Checkpoint ckpt = Checkpoint::open_dir(dir);
  torch::NoGradGuard no_grad;
  WeightLoader w{ckpt, device, dtype};
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
      case Family::Qwen2:
        l.q_w = w.get(p + "self_attn.q_proj.weight", {H * D, E});
        l.k_w = w.get(p + "self_attn.k_proj.weight", {KV * D, E});
        l.v_w = w.get(p + "self_attn.v_proj.weight", {KV * D, E});
        l.q_b = w.maybe(p + "self_attn.q_proj.bias", c.qkv_bias, {H * D});
        l.k_b = w.maybe(p + "self_attn.k_proj.bias", c.qkv_bias, {KV * D});
        l.v_b = w.maybe(p + "self_attn.v_proj.bias", c.qkv_bias, {KV * D});
        l.o_w = w.get(p + "self_attn.o_proj.weight", {E, H * D});
        l.o_b = w.maybe(p + "self_attn.o_proj.bias", c.o_bias, {E});
        l.gate_w = w.get(p + "mlp.gate_proj.weight", {I, E});
        l.up_w = w.get(p + "mlp.up_proj.weight", {I, E});
        l.down_w = w.get(p + "mlp.down_proj.weight", {E, I});
        l.gate_b = w.maybe(p + "mlp.gate_proj.bias", c.mlp_bias, {I});
        l.up_b = w.maybe(p + "mlp.up_proj.bias", c.mlp_bias, {I});
        l.down_b = w.maybe(p + "mlp.down_proj.bias", c.mlp_bias, {E});
        break;
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
  m->parameter_bytes_ = w.bytes;
  m->inv_freq_ = inverse_frequencies(c).to(device);
  return m;
}

torch::Tensor Transformer::norm(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) const {
  if (config_.family == Family::GptNeoX) return torch::layer_norm(x, {x.size(-1)}, w, b, config_.norm_eps);
  auto xf = x.to(torch::kFloat32);
  xf = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config_.norm_eps);
  return w * xf.to(x.scalar_type());
}

torch::Tensor Transformer::attention_block(const Layer& l, std::size_t index, const torch::Tensor& x,
                                           const torch::Tensor& cos, const torch::Tensor& sin,
                                           const torch::Tensor& mask, bool causal, KVCache* cache,
                                           const torch::Tensor& slot) const {
  const auto& c = config_;
  const auto B = x.size(0), T = x.size(1), H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  torch::Tensor q, k, v;
  switch (c.family) {
    case Family::Llama:
    case Family::Qwen2:
      q = linear(x, l.q_w, l.q_b).view({B, T, H, D});
      k = linear(x, l.k_w, l.k_b).view({B, T, KV, D});
      v = linear(x, l.v_w, l.v_b).view({B, T, KV, D});
      break;
    case Family::Phi3: {
      auto qkv = linear(x, l.qkv_w, l.qkv_b);
      q = qkv.narrow(-1, 0, H * D).view({B, T, H, D});
      k = qkv.narrow(-1, H * D, KV * D).view({B, T, KV, D});
      v = qkv.narrow(-1, (H + KV) * D, KV * D).view({B, T, KV, D});
      break;
    }
    case Family::GptNeoX: {
      // Fused per head: [q_h | k_h | v_h] for each head h.
      auto qkv = linear(x, l.qkv_w, l.qkv_b).view({B, T, H, 3 * D});
      q = qkv.narrow(-1, 0, D);
      k = qkv.narrow(-1, D, D);
      v = qkv.narrow(-1, 2 * D, D);
      break;
    }
  }
  q = apply_rotary(q.transpose(1, 2), cos, sin, c.rotary_dim);
  k = apply_rotary(k.transpose(1, 2), cos, sin, c.rotary_dim);
  v = v.transpose(1, 2);
  if (slot.defined()) {  // static decode: write at a device-side slot, attend over the full capacity
    cache->keys[index].index_copy_(2, slot, k);
    cache->values[index].index_copy_(2, slot, v);
    k = cache->keys[index];
    v = cache->values[index];
  } else if (cache) {
    const auto past = cache->length;
    cache->keys[index].narrow(2, past, T).copy_(k);
    cache->values[index].narrow(2, past, T).copy_(v);
    k = cache->keys[index].narrow(2, 0, past + T);
    v = cache->values[index].narrow(2, 0, past + T);
  }
  if (KV != H) {  // grouped-query attention: each kv head serves H/KV query heads
    const auto S = k.size(2);
    k = k.unsqueeze(2).expand({B, KV, H / KV, S, D}).reshape({B, H, S, D});
    v = v.unsqueeze(2).expand({B, KV, H / KV, S, D}).reshape({B, H, S, D});
  }
  auto out = detail::attention(q, k, v, mask, causal, 1.0 / std::sqrt(static_cast<double>(D)));
  out = out.transpose(1, 2).reshape({B, T, H * D});
  return linear(out, l.o_w, l.o_b);
}

torch::Tensor Transformer::mlp_block(const Layer& l, const torch::Tensor& x) const {
  const auto& act = config_.hidden_act;
  switch (config_.family) {
    case Family::Llama:
    case Family::Qwen2:
      return linear(activation(act, linear(x, l.gate_w, l.gate_b)) * linear(x, l.up_w, l.up_b), l.down_w, l.down_b);
    case Family::Phi3: {
      auto gate_up = linear(x, l.gate_up_w, torch::Tensor());
      const auto I = config_.intermediate_size;
      return linear(gate_up.narrow(-1, I, I) * activation(act, gate_up.narrow(-1, 0, I)), l.down_w, l.down_b);
    }
    case Family::GptNeoX:
      return linear(activation(act, linear(x, l.fc_in_w, l.fc_in_b)), l.fc_out_w, l.fc_out_b);
  }
  return {};
}

torch::Tensor Transformer::run_layers(torch::Tensor h, const torch::Tensor& positions, const torch::Tensor& mask,
                                      bool causal, KVCache* cache, const torch::Tensor& slot) const {
  const auto& c = config_;
  // Rotary tables for these positions: [B, 1, T, rotary_dim] in the model dtype.
  auto freqs = positions.to(device_, torch::kFloat32).unsqueeze(-1) * inv_freq_.view({1, 1, -1});
  auto emb = torch::cat({freqs, freqs}, -1);
  auto cos = emb.cos().to(dtype_).unsqueeze(1);
  auto sin = emb.sin().to(dtype_).unsqueeze(1);

  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const Layer& l = layers_[i];
    if (c.family == Family::GptNeoX) {
      auto attn = attention_block(l, i, norm(h, l.attn_norm_w, l.attn_norm_b), cos, sin, mask, causal, cache, slot);
      if (c.parallel_residual) {
        auto mlp = mlp_block(l, norm(h, l.mlp_norm_w, l.mlp_norm_b));
        h = mlp + attn + h;
      } else {
        attn = attn + h;
        h = mlp_block(l, norm(attn, l.mlp_norm_w, l.mlp_norm_b)) + attn;
      }
    } else {
      h = h + attention_block(l, i, norm(h, l.attn_norm_w, l.attn_norm_b), cos, sin, mask, causal, cache, slot);
      h = h + mlp_block(l, norm(h, l.mlp_norm_w, l.mlp_norm_b));
    }
  }
  return h;
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
  h = norm(h, final_norm_w_, final_norm_b_);
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
  h = norm(h, final_norm_w_, final_norm_b_);
  return torch::linear(h, lm_head_).to(torch::kFloat32);
}

}  // namespace lal::lm
