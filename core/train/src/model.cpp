// The trainable decoder (mirrors lal::lm::Transformer's llama/qwen2 path op for op), the KD loss, quantization.
#include "lal/train/model.hpp"

#include <cmath>
#include <stdexcept>

#include "lal/train/recompute.hpp"

namespace lal::train {

using lal::lm::DType;
using lal::lm::Family;
using lal::lm::ModelConfig;

// ----------------------------------------------------------------------------------------------- safetensors I/O

torch::ScalarType to_torch_dtype(DType t) {
  switch (t) {
    case DType::F64: return torch::kFloat64;
    case DType::F32: return torch::kFloat32;
    case DType::F16: return torch::kFloat16;
    case DType::BF16: return torch::kBFloat16;
    case DType::I64: return torch::kInt64;
    case DType::I32: return torch::kInt32;
    case DType::I16: return torch::kInt16;
    case DType::I8: return torch::kInt8;
    case DType::U8: return torch::kUInt8;
    case DType::BOOL: return torch::kBool;
  }
  return torch::kFloat32;
}

namespace {
DType to_st_dtype(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat64: return DType::F64;
    case torch::kFloat32: return DType::F32;
    case torch::kFloat16: return DType::F16;
    case torch::kBFloat16: return DType::BF16;
    case torch::kInt64: return DType::I64;
    case torch::kInt32: return DType::I32;
    case torch::kInt16: return DType::I16;
    case torch::kInt8: return DType::I8;
    case torch::kUInt8: return DType::U8;
    case torch::kBool: return DType::BOOL;
    default: throw std::runtime_error(std::string("cannot store dtype ") + c10::toString(t) + " in safetensors");
  }
}

torch::Tensor from_info(const lal::lm::TensorInfo& info) {
  if (info.numel() == 0) return torch::empty(info.shape, torch::TensorOptions().dtype(to_torch_dtype(info.dtype)));
  return torch::from_blob(const_cast<std::byte*>(info.data), info.shape,
                          torch::TensorOptions().dtype(to_torch_dtype(info.dtype)));
}
}  // namespace

std::map<std::string, torch::Tensor> read_safetensors(const std::string& path) {
  const auto file = lal::lm::SafetensorsFile::open(path);
  std::map<std::string, torch::Tensor> out;
  for (const auto& info : file.tensors()) out[info.name] = from_info(info).clone();
  return out;
}

void write_tensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                   const std::map<std::string, std::string>& metadata) {
  std::vector<torch::Tensor> keep;
  std::vector<lal::lm::TensorToWrite> out;
  keep.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.detach().to(torch::kCPU).contiguous());
    const auto& c = keep.back();
    out.push_back({name, to_st_dtype(c.scalar_type()), c.sizes().vec(), c.data_ptr(),
                   static_cast<std::size_t>(c.numel()) * c.element_size()});
  }
  lal::lm::write_safetensors(path, out, metadata);
}

// ----------------------------------------------------------------------------------------------- quantization

// quantize_weight / dequantize_weight: lal/lm/quantize.hpp (core/lm/engine/src/quantize.cpp).

// ----------------------------------------------------------------------------------------------- losses

namespace {
// sum_v p (log p - log q), with 0 log 0 = 0; `valid` marks entries of p that exist (others contribute 0).
torch::Tensor kl_rows(const torch::Tensor& log_p, const torch::Tensor& log_q, const torch::Tensor& valid) {
  auto p = torch::where(valid, log_p.exp(), torch::zeros_like(log_p));
  auto safe_log_p = torch::where(p > 0, log_p, torch::zeros_like(log_p));
  return (p * (safe_log_p - log_q)).sum(-1);
}

LossParts combine(torch::Tensor kd, torch::Tensor ce, double temperature, double alpha) {
  return {alpha * temperature * temperature * kd + (1.0 - alpha) * ce, kd, ce};
}
}  // namespace

LossParts distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                            const torch::Tensor& targets, double temperature, double alpha) {
  auto ce = torch::nn::functional::cross_entropy(student_logits, targets);
  if (!teacher_logits.defined()) return {ce, torch::Tensor(), ce};
  auto log_q = torch::log_softmax(student_logits / temperature, -1);
  auto log_p = torch::log_softmax(teacher_logits.detach().to(torch::kFloat32) / temperature, -1);
  auto kd = kl_rows(log_p, log_q, torch::isfinite(log_p)).mean();
  return combine(kd, ce, temperature, alpha);
}

LossParts distillation_loss_topk(const torch::Tensor& student_logits, const torch::Tensor& topk_ids,
                                 const torch::Tensor& topk_logprobs, const torch::Tensor& targets, double temperature,
                                 double alpha) {
  auto ce = torch::nn::functional::cross_entropy(student_logits, targets);
  auto valid = topk_ids.ge(0);
  auto scaled = (topk_logprobs.to(torch::kFloat32) / temperature)
                    .masked_fill(valid.logical_not(), -std::numeric_limits<float>::infinity());
  auto log_p = torch::log_softmax(scaled, -1);
  auto log_q = torch::log_softmax(student_logits / temperature, -1).gather(1, topk_ids.clamp_min(0));
  auto kd = kl_rows(log_p, log_q, valid & torch::isfinite(log_p)).mean();
  return combine(kd, ce, temperature, alpha);
}

torch::Tensor mean_kl(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits) {
  auto log_p = torch::log_softmax(teacher_logits.to(torch::kFloat32), -1);
  return kl_rows(log_p, torch::log_softmax(student_logits, -1), torch::isfinite(log_p)).mean();
}

// ----------------------------------------------------------------------------------------------- the decoder

namespace {
torch::Tensor rotate_half(const torch::Tensor& x) {
  const auto half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

torch::Tensor apply_rotary(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  return x * cos + rotate_half(x) * sin;
}

void check_family(const ModelConfig& c) {
  if (c.family != Family::Qwen2 && c.family != Family::Llama)
    throw std::runtime_error(c.source + ": model_type " + c.model_type +
                             " is not supported by the trainable decoder (qwen2, llama)");
  if (c.rotary_dim != c.head_dim) throw std::runtime_error(c.source + ": partial rotary is not supported");
  if (c.rope.depends_on_length() || c.rope.attention_factor != 1.0)
    throw std::runtime_error(c.source + ": rope type \"" + c.rope.type +
                             "\" is not supported by the trainable decoder (default, linear, llama3)");
  if (c.hidden_act != "silu" && c.hidden_act != "swish")
    throw std::runtime_error(c.source + ": hidden_act " + c.hidden_act + " is not supported (silu)");
}
}  // namespace

torch::Tensor CausalLM::on_device(const torch::Tensor& t, torch::ScalarType dtype) const {
  if (!t.defined()) return t;
  if (t.device() == device_ && t.scalar_type() == dtype) return t;
  return t.to(device_, dtype, /*non_blocking=*/offload_);
}

torch::Tensor CausalLM::linear(const Linear& l, const torch::Tensor& x) const {
  const auto dt = x.scalar_type();
  auto w = l.is_quantized ? dequantize_weight(l.quantized, dt, device_) : on_device(l.weight, dt);
  return l.bias.defined() ? torch::linear(x, w, on_device(l.bias, dt)) : torch::linear(x, w);
}

torch::Tensor CausalLM::norm(const torch::Tensor& x, const torch::Tensor& w) const {
  auto xf = x.to(torch::kFloat32);
  xf = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + config_.norm_eps);
  return on_device(w, x.scalar_type()) * xf.to(x.scalar_type());
}

torch::Tensor CausalLM::attention(const Layer& l, const torch::Tensor& x, const torch::Tensor& cos,
                                  const torch::Tensor& sin, const torch::Tensor& mask) const {
  const auto& c = config_;
  const auto B = x.size(0), T = x.size(1), H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  auto q = apply_rotary(linear(l.q, x).view({B, T, H, D}).transpose(1, 2), cos, sin);
  auto k = apply_rotary(linear(l.k, x).view({B, T, KV, D}).transpose(1, 2), cos, sin);
  auto v = linear(l.v, x).view({B, T, KV, D}).transpose(1, 2);
  if (KV != H) {
    k = k.unsqueeze(2).expand({B, KV, H / KV, T, D}).reshape({B, H, T, D});
    v = v.unsqueeze(2).expand({B, KV, H / KV, T, D}).reshape({B, H, T, D});
  }
  auto out = lal::lm::detail::attention(q, k, v, mask, /*causal=*/T > 1, 1.0 / std::sqrt(static_cast<double>(D)));
  return linear(l.o, out.transpose(1, 2).reshape({B, T, H * D}));
}

torch::Tensor CausalLM::forward(const torch::Tensor& ids, torch::ScalarType compute_dtype) const {
  return torch::linear(hidden_states(ids, compute_dtype), on_device(lm_head_, compute_dtype)).to(torch::kFloat32);
}

torch::Tensor CausalLM::hidden_states(const torch::Tensor& ids, torch::ScalarType compute_dtype, const Packing& packing,
                                      bool recompute_layers) const {
  const auto B = ids.size(0), T = ids.size(1);
  auto positions =
      packing.positions.defined()
          ? packing.positions.to(device_)
          : torch::arange(T, torch::TensorOptions().dtype(torch::kInt64).device(device_)).view({1, T}).expand({B, T});
  torch::Tensor mask;  // [B, 1, T, T]: same document and not in the future
  if (packing.segments.defined()) {
    const auto seg = packing.segments.to(device_);
    mask = seg.unsqueeze(2)
               .eq(seg.unsqueeze(1))
               .logical_and(torch::ones({T, T}, torch::TensorOptions().dtype(torch::kBool).device(device_)).tril())
               .unsqueeze(1);
  }
  auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_.view({1, 1, -1});
  auto emb = torch::cat({freqs, freqs}, -1);
  auto cos = emb.cos().to(compute_dtype).unsqueeze(1);
  auto sin = emb.sin().to(compute_dtype).unsqueeze(1);
  auto h = torch::embedding(embed_, ids.to(device_)).to(compute_dtype);
  for (const auto& l : layers_) {
    auto layer = [this, &l, cos, sin, mask](const torch::Tensor& x) {
      auto y = x + attention(l, norm(x, l.attn_norm), cos, sin, mask);
      const auto z = norm(y, l.mlp_norm);
      return y + linear(l.down, torch::silu(linear(l.gate, z)) * linear(l.up, z));
    };
    h = recompute_layers && torch::GradMode::is_enabled() ? recompute_in_backward(layer, h) : layer(h);
  }
  return norm(h, final_norm_);
}

void CausalLM::collect_parameters() {
  params_.clear();
  params_.emplace_back("model.embed_tokens.weight", embed_);
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    auto& l = layers_[i];
    params_.emplace_back(p + "input_layernorm.weight", l.attn_norm);
    params_.emplace_back(p + "post_attention_layernorm.weight", l.mlp_norm);
    const std::pair<const char*, Linear*> lin[] = {
        {"self_attn.q_proj", &l.q}, {"self_attn.k_proj", &l.k}, {"self_attn.v_proj", &l.v}, {"self_attn.o_proj", &l.o},
        {"mlp.gate_proj", &l.gate}, {"mlp.up_proj", &l.up},     {"mlp.down_proj", &l.down}};
    for (auto [name, ln] : lin) {
      if (ln->weight.defined()) params_.emplace_back(p + name + ".weight", ln->weight);
      if (ln->bias.defined()) params_.emplace_back(p + name + ".bias", ln->bias);
    }
  }
  params_.emplace_back("model.norm.weight", final_norm_);
  if (!config_.tie_word_embeddings) params_.emplace_back("lm_head.weight", lm_head_);
}

CausalLM CausalLM::random(const ModelConfig& config, std::uint64_t seed, torch::Device device) {
  check_family(config);
  CausalLM m;
  m.config_ = config;
  m.device_ = device;
  const auto& c = config;
  auto gen = at::detail::createCPUGenerator(seed);
  const double std = 0.02, residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(c.num_layers));
  auto normal = [&](std::vector<std::int64_t> shape, double s) {
    return torch::empty(shape, torch::kFloat32).normal_(0.0, s, gen).to(device).requires_grad_(true);
  };
  auto ones = [&](std::int64_t n) { return torch::ones({n}, torch::kFloat32).to(device).requires_grad_(true); };
  auto zeros = [&](std::int64_t n) { return torch::zeros({n}, torch::kFloat32).to(device).requires_grad_(true); };
  const auto E = c.hidden_size, I = c.intermediate_size, H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  m.embed_ = normal({c.vocab_size, E}, std);
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    Layer l;
    l.attn_norm = ones(E), l.mlp_norm = ones(E);
    l.q.weight = normal({H * D, E}, std), l.k.weight = normal({KV * D, E}, std), l.v.weight = normal({KV * D, E}, std);
    if (c.qkv_bias) l.q.bias = zeros(H * D), l.k.bias = zeros(KV * D), l.v.bias = zeros(KV * D);
    l.o.weight = normal({E, H * D}, residual_std);
    if (c.o_bias) l.o.bias = zeros(E);
    l.gate.weight = normal({I, E}, std), l.up.weight = normal({I, E}, std),
    l.down.weight = normal({E, I}, residual_std);
    if (c.mlp_bias) l.gate.bias = zeros(I), l.up.bias = zeros(I), l.down.bias = zeros(E);
    m.layers_.push_back(std::move(l));
  }
  m.final_norm_ = ones(E);
  m.lm_head_ = c.tie_word_embeddings ? m.embed_ : normal({c.vocab_size, E}, std);
  m.inv_freq_ = rotary_inverse_frequencies(c).to(device);
  m.collect_parameters();
  return m;
}

CausalLM CausalLM::load(const std::string& dir, const LoadOptions& o) {
  CausalLM m;
  m.config_ = ModelConfig::from_dir(dir);
  check_family(m.config_);
  m.device_ = o.device;
  m.offload_ = o.cpu_offload && o.device.is_cuda();
  const auto ckpt = lal::lm::Checkpoint::open_dir(dir);
  torch::NoGradGuard no_grad;
  auto& c = m.config_;
  const auto E = c.hidden_size, I = c.intermediate_size, H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  const auto dtype = o.trainable ? torch::kFloat32 : o.dtype;
  auto get = [&](const std::string& name, std::vector<std::int64_t> shape, bool layer_weight) {
    const auto& info = ckpt.at(name);
    if (info.shape != shape)
      throw std::runtime_error(info.file + ": tensor '" + name + "' has a shape that disagrees with config.json");
    if (info.dtype != DType::F32 && info.dtype != DType::F16 && info.dtype != DType::BF16)
      throw std::runtime_error(info.file + ": tensor '" + name + "' is not F32/F16/BF16");
    const auto target = layer_weight && m.offload_ ? torch::Device(torch::kCPU) : o.device;
    auto t = from_info(info).to(target, dtype, /*non_blocking=*/false, /*copy=*/true);
    if (layer_weight && m.offload_) t = t.pin_memory();
    return o.trainable ? t.requires_grad_(true) : t;
  };
  auto rows = [&](torch::Tensor t) {
    if (!o.vocab_rows) return t;
    auto idx = torch::tensor(*o.vocab_rows, torch::kInt64).to(t.device());
    auto r = t.detach().index_select(0, idx).contiguous();
    return o.trainable ? r.requires_grad_(true) : r;
  };
  auto lin = [&](const std::string& p, std::int64_t out, std::int64_t in, bool bias) {
    Linear l;
    const bool quant = o.quantize == "int8" || o.quantize == "int4";
    if (quant) {
      auto w = from_info(ckpt.at(p + ".weight"));
      if (w.sizes().vec() != std::vector<std::int64_t>{out, in})
        throw std::runtime_error(dir + ": tensor '" + p + ".weight' has a shape that disagrees with config.json");
      l.quantized = quantize_weight(w.to(o.device.is_cuda() && !m.offload_ ? o.device : torch::Device(torch::kCPU)),
                                    o.quantize == "int8" ? 8 : 4, o.quantize_group);
      if (m.offload_)
        l.quantized.data = l.quantized.data.pin_memory(), l.quantized.scales = l.quantized.scales.pin_memory();
      l.is_quantized = true;
    } else {
      l.weight = get(p + ".weight", {out, in}, true);
    }
    if (bias) l.bias = get(p + ".bias", {out}, true);
    return l;
  };
  std::vector<std::int64_t> layers = o.layers;
  if (layers.empty())
    for (std::int64_t i = 0; i < c.num_layers; ++i) layers.push_back(i);
  for (auto i : layers) {
    if (i < 0 || i >= c.num_layers) throw std::runtime_error(dir + ": no layer " + std::to_string(i));
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer l;
    l.attn_norm = get(p + "input_layernorm.weight", {E}, true);
    l.mlp_norm = get(p + "post_attention_layernorm.weight", {E}, true);
    l.q = lin(p + "self_attn.q_proj", H * D, E, c.qkv_bias);
    l.k = lin(p + "self_attn.k_proj", KV * D, E, c.qkv_bias);
    l.v = lin(p + "self_attn.v_proj", KV * D, E, c.qkv_bias);
    l.o = lin(p + "self_attn.o_proj", E, H * D, c.o_bias);
    l.gate = lin(p + "mlp.gate_proj", I, E, c.mlp_bias);
    l.up = lin(p + "mlp.up_proj", I, E, c.mlp_bias);
    l.down = lin(p + "mlp.down_proj", E, I, c.mlp_bias);
    m.layers_.push_back(std::move(l));
  }
  m.embed_ = rows(get("model.embed_tokens.weight", {c.vocab_size, E}, false));
  m.final_norm_ = get("model.norm.weight", {E}, false);
  if (c.tie_word_embeddings) {
    m.lm_head_ = m.embed_;
  } else {
    if (!ckpt.find("lm_head.weight"))
      throw std::runtime_error(ckpt.description() + ": no tensor 'lm_head.weight' and tie_word_embeddings is false");
    m.lm_head_ = rows(get("lm_head.weight", {c.vocab_size, E}, false));
  }
  c.num_layers = static_cast<std::int64_t>(layers.size());
  if (o.vocab_rows) c.vocab_size = static_cast<std::int64_t>(o.vocab_rows->size());
  m.inv_freq_ = rotary_inverse_frequencies(c).to(o.device);
  m.collect_parameters();
  return m;
}

std::int64_t CausalLM::parameter_count() const {
  std::int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel();
  for (const auto& l : layers_)
    for (const Linear* ln : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
      if (ln->is_quantized) n += ln->quantized.shape[0] * ln->quantized.shape[1];
  return n;
}

std::int64_t CausalLM::weight_bytes() const {
  std::int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel() * static_cast<std::int64_t>(t.element_size());
  for (const auto& l : layers_)
    for (const Linear* ln : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
      if (ln->is_quantized) n += ln->quantized.bytes();
  return n;
}

void CausalLM::load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  for (auto& [name, p] : params_) {
    auto it = tensors.find(name);
    if (it == tensors.end()) throw std::runtime_error(source + ": no tensor '" + name + "'");
    if (it->second.sizes() != p.sizes())
      throw std::runtime_error(source + ": tensor '" + name + "' has the wrong shape for this model");
    p.copy_(it->second);
  }
}

void CausalLM::save_safetensors(const std::string& path, DType dtype,
                                const std::map<std::string, std::string>& metadata) const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, t] : params_) out.emplace_back(name, t.detach().to(torch::kCPU, to_torch_dtype(dtype)));
  auto meta = metadata;
  meta.emplace("format", "pt");
  write_tensors(path, out, meta);
}

}  // namespace lal::train
