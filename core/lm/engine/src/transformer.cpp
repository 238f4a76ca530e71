// The decoder: loading by the family's weight-name table (families/*.cpp), quantization and offload, trainable
// parameters, rotary tables, and the entry points (forward, decode_static, logits) over the family's forward.
#include "lal/lm/transformer.hpp"

#include <ATen/Parallel.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "cpu/cpu_linear.hpp"
#include "decoder.hpp"
#include "lal/lm/safetensors.hpp"
#include "lal/lm/sampling.hpp"

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
  /// The tensor on the device in the model dtype; with `rows`, only those rows (vocabulary trimming).
  torch::Tensor get(const std::string& name, const std::vector<std::int64_t>& shape, const torch::Tensor& rows = {}) {
    auto cpu = mapped(name, shape);
    if (rows.defined()) cpu = cpu.index_select(0, rows);
    auto t = cpu.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
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
};

std::int64_t tensor_bytes(const torch::Tensor& t) { return t.numel() * static_cast<std::int64_t>(t.element_size()); }

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
  const std::string hint =
      " (a wrong config.json? else a smaller dtype, --quantize or --cpu_offload; "
      "LAL_MEMORY_CHECK=off skips this check)";
  if (device.is_cuda() && device_free >= 0 && budget.device_bytes > device_free)
    throw std::runtime_error(what + ": the model needs " + gib_text(budget.device_bytes) + " for its weights on " +
                             device.str() + ", which has " + gib_text(device_free) + " free" + hint);
  if (host_free >= 0 && on_host > host_free)
    throw std::runtime_error(what + ": the model needs " + gib_text(on_host) + " of host memory for its weights, " +
                             "and " + gib_text(host_free) + " is available" + hint);
}

std::shared_ptr<Transformer> Transformer::load(const std::string& dir, torch::Device device, torch::ScalarType dtype,
                                               const WeightOptions& weights, const ParameterOptions& parameters) {
  const int bits = quantize_bits(weights.quantize, "quantize");
  if (bits && (weights.quantize_group < 2 || weights.quantize_group % 2))
    throw std::invalid_argument("quantize group size " + std::to_string(weights.quantize_group) +
                                ": expected an even number >= 2");
  if (parameters.trainable && (bits || weights.cpu_offload || dtype != torch::kFloat32))
    throw std::invalid_argument("trainable weights are float32, neither quantized nor offloaded");
  std::shared_ptr<Transformer> m(new Transformer());
  m->config_ = ModelConfig::from_dir(dir);
  m->device_ = device;
  m->dtype_ = dtype;
  m->weights_ = weights;
  m->trainable_ = parameters.trainable;
  // Host memory is where CPU weights live anyway: offloading there is a no-op (Engine::describe() says so).
  m->offload_ = weights.cpu_offload && !device.is_cpu();
  m->set_fields();
  ModelConfig& c = m->config_;
  check_memory_budget(
      estimate_weight_bytes(c, static_cast<std::int64_t>(c10::elementSize(dtype)), weights, m->offload_), device,
      c.source);
  const auto& family = decoder::family_def(c.family);
  const Checkpoint ckpt = Checkpoint::open_dir(dir);
  torch::NoGradGuard no_grad;
  WeightLoader w{ckpt, device, dtype, weights.allow_nonfinite};
  const auto E = c.hidden_size, V = c.vocab_size;
  torch::Tensor rows;
  if (parameters.vocab_rows) rows = torch::tensor(*parameters.vocab_rows, torch::kInt64);
  auto param = [&](const std::string& name, torch::Tensor t) {
    if (!m->trainable_) return t;
    t.requires_grad_(true);
    m->params_.emplace_back(name, t);
    return t;
  };
  m->embed_ = param(family.embed, w.get(family.embed, {V, E}, rows));
  std::vector<std::int64_t> layers = parameters.layers;
  if (layers.empty())
    for (std::int64_t i = 0; i < c.num_layers; ++i) layers.push_back(i);
  const auto table = family.layer_weights(c);
  for (std::size_t out = 0; out < layers.size(); ++out) {
    const auto i = layers[out];
    if (i < 0 || i >= c.num_layers)
      throw std::runtime_error(dir + ": no layer " + std::to_string(i) + " (the model has " +
                               std::to_string(c.num_layers) + ")");
    const std::string p = family.layer_prefix + std::to_string(i) + ".";
    const std::string named = family.layer_prefix + std::to_string(out) + ".";
    Layer l;
    for (const auto& entry : table) {
      torch::Tensor& dense = l.*entry.field;
      if (m->trainable_) {
        std::vector<torch::Tensor> parts;
        for (const auto& part : entry.parts)
          parts.push_back(param(named + part.name, w.get(p + part.name, part.shape)));
        if (parts.size() == 1)
          dense = parts[0];
        else
          l.parts.emplace_back(entry.field, std::move(parts));
        continue;
      }
      if (entry.parts.size() == 1) {
        dense = w.get(p + entry.parts[0].name, entry.parts[0].shape);
      } else {
        std::vector<std::pair<std::string, std::vector<std::int64_t>>> parts;
        for (const auto& part : entry.parts) parts.emplace_back(p + part.name, part.shape);
        dense = w.concat(parts);
      }
    }
    w.verify();  // this layer's weights as loaded, before quantization
    // Quantize / offload this layer's linear weights now, so that the device holds one dense layer at most.
    for (auto field : m->matrix_fields_) {
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
    if (device.is_cpu() && !m->trainable_) {  // streamed every decode step: 2 MiB pages (cpu::huge_page_copy)
      for (auto field : m->matrix_fields_) l.*field = cpu::huge_page_copy(l.*field);
      for (auto& fq : l.quantized) fq.second.data = cpu::huge_page_copy(fq.second.data);
    }
    m->layers_.push_back(std::move(l));
  }
  if (bits && !m->offload_ && device.is_cuda() && weights.dequantized_cache_bytes > 0) {
    for (const auto& l : m->layers_) {
      std::int64_t bytes = 0;
      for (const auto& [field, q] : l.quantized)
        bytes += q.shape.at(0) * q.shape.at(1) * static_cast<std::int64_t>(c10::elementSize(dtype));
      if (m->dequantized_bytes_ + bytes > weights.dequantized_cache_bytes) break;
      Layer d = l;  // shallow: norms and biases shared
      for (const auto& [field, q] : l.quantized) d.*field = dequantize_weight(q, dtype, device);
      d.quantized.clear();
      m->dequantized_.push_back(std::move(d));
      m->dequantized_bytes_ += bytes;
    }
  }
  m->final_norm_w_ = param(family.final_norm_w, w.get(family.final_norm_w, {E}));
  if (family.final_norm_b) m->final_norm_b_ = param(family.final_norm_b, w.get(family.final_norm_b, {E}));
  if (c.tie_word_embeddings) {
    m->lm_head_ = m->embed_;
  } else {
    if (!ckpt.find(family.lm_head))
      throw std::runtime_error(ckpt.description() + ": no tensor '" + family.lm_head + "' and " + c.source +
                               " has \"tie_word_embeddings\": false");
    m->lm_head_ = param(family.lm_head, w.get(family.lm_head, {V, E}, rows));
  }
  w.verify();
  if (weights.quantize_lm_head) {
    m->lm_head_q_ = quantize_weight(m->lm_head_, 8, weights.quantize_group);
    w.bytes += m->lm_head_q_->bytes() - m->lm_head_.numel() * static_cast<std::int64_t>(m->lm_head_.element_size());
    // Tied: token lookups read rows of the int8 matrix too (what llama.cpp does with a quantized token_embd).
    if (c.tie_word_embeddings) m->embed_ = torch::Tensor();
    m->lm_head_ = torch::Tensor();
  }
  if (device.is_cpu() && !m->trainable_) {  // the lm-head is the largest weight a decode step reads
    const bool tied = m->lm_head_.defined() && m->lm_head_.is_same(m->embed_);
    m->lm_head_ = cpu::huge_page_copy(m->lm_head_);
    if (tied) m->embed_ = m->lm_head_;
    if (m->lm_head_q_) m->lm_head_q_->data = cpu::huge_page_copy(m->lm_head_q_->data);
  }
  c.num_layers = static_cast<std::int64_t>(layers.size());
  if (rows.defined()) c.vocab_size = rows.numel();
  m->parameter_bytes_ = w.bytes;
  m->inv_freq_ = rotary_inverse_frequencies(c).to(device);
  if (c.rope.type == "longrope") m->inv_freq_long_ = longrope_inverse_frequencies(c, c.rope.long_factor).to(device);
  return m;
}

namespace {

/// A float32 CPU tensor of N(0, std) values, made in chunks of 2^20 elements, each from its own generator seeded by
/// (seed, stream, chunk): the same values for any number of threads, while the chunks fill in parallel. (One
/// generator draws ~140 M values a second on one core: a 7.6 B-parameter student took most of a minute.)
torch::Tensor random_normal(const std::vector<std::int64_t>& shape, double std, std::uint64_t seed,
                            std::uint64_t stream) {
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  auto t = torch::empty(shape, torch::kFloat32);
  auto flat = t.view({-1});
  const auto n = flat.numel(), chunks = (n + kChunk - 1) / kChunk;
  at::parallel_for(0, chunks, 1, [&](std::int64_t begin, std::int64_t end) {
    for (auto i = begin; i < end; ++i) {
      auto gen =
          at::detail::createCPUGenerator(splitmix64(seed ^ splitmix64((stream << 32) + static_cast<std::uint64_t>(i))));
      flat.narrow(0, i * kChunk, std::min(kChunk, n - i * kChunk)).normal_(0.0, std, gen);
    }
  });
  return t;
}

}  // namespace

std::shared_ptr<Transformer> Transformer::random(const ModelConfig& config, std::uint64_t seed, torch::Device device) {
  std::shared_ptr<Transformer> m(new Transformer());
  m->config_ = config;
  m->device_ = device;
  m->trainable_ = true;
  m->set_fields();
  const auto& c = m->config_;
  const auto& family = decoder::family_def(c.family);
  const double std = 0.02, residual_std = 0.02 / std::sqrt(2.0 * static_cast<double>(c.num_layers));
  std::uint64_t stream = 0;  // one per tensor, in the order they are made
  auto make = [&](const std::string& name, decoder::WeightRole role, const std::vector<std::int64_t>& shape) {
    torch::Tensor t;
    switch (role) {
      case decoder::WeightRole::Norm: t = torch::ones(shape, torch::kFloat32); break;
      case decoder::WeightRole::Bias: t = torch::zeros(shape, torch::kFloat32); break;
      case decoder::WeightRole::Matrix: t = random_normal(shape, std, seed, stream); break;
      case decoder::WeightRole::ResidualMatrix: t = random_normal(shape, residual_std, seed, stream); break;
    }
    ++stream;
    t = t.to(device).requires_grad_(true);
    m->params_.emplace_back(name, t);
    m->parameter_bytes_ += tensor_bytes(t);
    return t;
  };
  const auto E = c.hidden_size, V = c.vocab_size;
  m->embed_ = make(family.embed, decoder::WeightRole::Matrix, {V, E});
  const auto table = family.layer_weights(c);
  for (std::int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = family.layer_prefix + std::to_string(i) + ".";
    Layer l;
    for (const auto& entry : table) {
      std::vector<torch::Tensor> parts;
      for (const auto& part : entry.parts) parts.push_back(make(p + part.name, entry.role, part.shape));
      if (parts.size() == 1)
        l.*entry.field = parts[0];
      else
        l.parts.emplace_back(entry.field, std::move(parts));
    }
    m->layers_.push_back(std::move(l));
  }
  m->final_norm_w_ = make(family.final_norm_w, decoder::WeightRole::Norm, {E});
  if (family.final_norm_b) m->final_norm_b_ = make(family.final_norm_b, decoder::WeightRole::Bias, {E});
  m->lm_head_ = c.tie_word_embeddings ? m->embed_ : make(family.lm_head, decoder::WeightRole::Matrix, {V, E});
  m->inv_freq_ = rotary_inverse_frequencies(c).to(device);
  if (c.rope.type == "longrope") m->inv_freq_long_ = longrope_inverse_frequencies(c, c.rope.long_factor).to(device);
  return m;
}

void Transformer::set_fields() {
  for (const auto& entry : decoder::family_def(config_.family).layer_weights(config_)) {
    fields_.push_back(entry.field);
    if (entry.role == decoder::WeightRole::Matrix || entry.role == decoder::WeightRole::ResidualMatrix)
      matrix_fields_.push_back(entry.field);
  }
}

std::int64_t Transformer::parameter_count() const {
  std::int64_t n = embed_.numel() + final_norm_w_.numel() + (final_norm_b_.defined() ? final_norm_b_.numel() : 0);
  if (!lm_head_.is_same(embed_)) n += lm_head_.numel();
  for (const auto& l : layers_) {
    for (auto field : fields_)
      if ((l.*field).defined()) n += (l.*field).numel();
    for (const auto& [field, q] : l.quantized) n += q.shape.at(0) * q.shape.at(1);
    for (const auto& [field, parts] : l.parts)
      for (const auto& t : parts) n += t.numel();
  }
  return n;
}

std::string Transformer::dequantized_summary() const {
  if (dequantized_.empty()) return "";
  return std::to_string(dequantized_.size()) + " of " + std::to_string(config_.num_layers) +
         " layers kept dequantized (" + std::to_string(dequantized_bytes_ >> 20) + " MiB)";
}

const TransformerLayer& Transformer::layer_for_use(std::size_t i, Layer& scratch, torch::ScalarType compute) const {
  if (i < dequantized_.size() && compute == dtype_) return dequantized_[i];
  const Layer& stored = layers_[i];
  if (!offload_ && stored.quantized.empty() && stored.parts.empty() && compute == dtype_) return stored;
  scratch = stored;  // shallow: tensors are shared, the previous layer's device copies are released
  if (!offload_ && device_.is_cpu() && stored.parts.empty() && compute == dtype_ && !torch::GradMode::is_enabled()) {
    // CPU inference: each quantized weight stays packed; its int8/uint8 data tensor stands in the layer as a handle
    // that decoder::linear() hands to the CPU kernels (cpu::QuantizedWeights, set around the layer by run()).
    for (const auto& [field, q] : stored.quantized) scratch.*field = q.data;
    return scratch;
  }
  if (offload_)
    for (auto field : matrix_fields_)
      if ((scratch.*field).defined()) scratch.*field = (scratch.*field).to(device_, /*non_blocking=*/true);
  for (const auto& [field, q] : stored.quantized) scratch.*field = dequantize_weight(q, compute, device_);
  for (const auto& [field, parts] : stored.parts) {
    std::vector<torch::Tensor> cast;
    for (const auto& t : parts) cast.push_back(t.to(compute));
    scratch.*field = torch::cat(cast);
  }
  if (compute != dtype_)
    for (auto field : fields_)
      if ((scratch.*field).defined()) scratch.*field = (scratch.*field).to(compute);
  return scratch;
}

namespace {

/// Whether LAL_CPU_DECODE=torch asks for the LibTorch ops in CPU decode steps (read per step: tests switch it).
bool cpu_decode_layers_off() {
  const char* v = std::getenv("LAL_CPU_DECODE");
  if (!v || !*v || std::string(v) == "fused") return false;
  if (std::string(v) == "torch") return true;
  throw std::invalid_argument(std::string("LAL_CPU_DECODE='") + v + "': expected fused or torch");
}

bool gated_silu(const ModelConfig& c) { return c.hidden_act == "silu" || c.hidden_act == "swish"; }

/// Every layer has a contiguous float32/bfloat16 K and V cache and no separately stored parts (trainable models).
bool cpu_cache_usable(const KVCache& cache, const std::vector<TransformerLayer>& layers) {
  if (cache.keys.size() != layers.size() || cache.values.size() != layers.size()) return false;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& k = cache.keys[i];
    const auto& v = cache.values[i];
    if (!k.is_contiguous() || !v.is_contiguous() || k.scalar_type() != v.scalar_type() ||
        (k.scalar_type() != torch::kFloat32 && k.scalar_type() != torch::kBFloat16) || !layers[i].parts.empty())
      return false;
  }
  return true;
}

cpu::Floats floats_of(const torch::Tensor& t) {
  cpu::Floats f;
  if (t.defined()) f.data = t.data_ptr(), f.bf16 = t.scalar_type() == torch::kBFloat16;
  return f;
}

/// A CPU decode step (one token per row) through `layers` with decode_layer(): the final-normed hidden states
/// [B, 1, hidden] in float32. `mask` bool [B or 1, 1, 1, S] or undefined; `slot` as decode_static's, or undefined
/// (append at cache.length).
torch::Tensor cpu_decode(const ModelConfig& c, const std::vector<TransformerLayer>& layers,
                         const torch::Tensor& final_norm_w, const torch::Tensor& inv_freq, const torch::Tensor& h,
                         const torch::Tensor& positions, const torch::Tensor& mask, KVCache& cache,
                         const torch::Tensor& slot) {
  using Layer = TransformerLayer;
  const auto B = h.size(0), E = c.hidden_size;
  cpu::DecodeShape shape;
  shape.batch = B, shape.hidden = E, shape.heads = c.num_heads, shape.kv_heads = c.num_kv_heads;
  shape.head_dim = c.head_dim, shape.intermediate = c.intermediate_size, shape.rotary_dim = c.rotary_dim;
  shape.capacity = cache.capacity, shape.norm_eps = static_cast<float>(c.norm_eps);
  shape.cache_bf16 = cache.keys.at(0).scalar_type() == torch::kBFloat16;
  // The rotation in float32 (the LibTorch path's bfloat16 tables are rounded; the activations here are float32).
  const auto rotation = decoder::rotation_for(c, positions, inv_freq, torch::kFloat32, false);
  const auto cos = rotation.cos.reshape({B, c.rotary_dim}).contiguous();
  const auto sin = rotation.sin.reshape({B, c.rotary_dim}).contiguous();
  cpu::DecodeRows rows;
  rows.cos = cos.data_ptr<float>(), rows.signed_sin = sin.data_ptr<float>();
  torch::Tensor visible;
  if (mask.defined()) {
    visible = mask.expand({B, 1, 1, mask.size(-1)}).reshape({B, mask.size(-1)}).contiguous();
    rows.mask = visible.data_ptr<bool>(), rows.mask_stride = visible.size(1);
  }
  for (std::int64_t b = 0; b < B; ++b) {
    if (!slot.defined()) {  // append at the cache's length, attend to everything up to it
      rows.write_slot.push_back(cache.length);
      rows.keys.push_back(cache.length + 1);
      continue;
    }
    const auto at = slot.numel() == 1 ? slot.item<std::int64_t>() : slot[b].item<std::int64_t>();
    if (at < 0 || at >= cache.capacity) throw std::out_of_range("decode slot outside the KV cache");
    rows.write_slot.push_back(at);
    std::int64_t last = at;  // keys past the last visible slot change nothing: stop there
    for (std::int64_t s = at + 1; s < cache.capacity; ++s)
      if (!rows.mask || rows.mask[b * rows.mask_stride + s]) last = s;
    rows.keys.push_back(last + 1);
  }
  auto stream = h.reshape({B, E}).to(torch::kFloat32).contiguous();
  const auto pool = cpu::intra_op_pool();
  const auto isa = cpu::active_isa();
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const Layer& l = layers[i];
    auto matrix = [&](const torch::Tensor Layer::*field) {
      for (const auto& [f, q] : l.quantized)
        if (f == field) return cpu::view_of(q);
      return cpu::view_of(l.*field);
    };
    cpu::DecodeLayerWeights w;
    w.attn_norm = floats_of(l.attn_norm_w), w.mlp_norm = floats_of(l.mlp_norm_w);
    w.qkv_bias = floats_of(l.qkv_b), w.o_bias = floats_of(l.o_b);
    w.gate_up_bias = floats_of(l.gate_up_b), w.down_bias = floats_of(l.down_b);
    w.qkv = matrix(&Layer::qkv_w), w.o = matrix(&Layer::o_w);
    w.gate_up = matrix(&Layer::gate_up_w), w.down = matrix(&Layer::down_w);
    w.keys = cache.keys[i].data_ptr(), w.values = cache.values[i].data_ptr();
    RECORD_FUNCTION("lal::cpu_decode_layer", std::vector<c10::IValue>());  // one operator in profiles
    cpu::decode_layer(shape, w, rows, stream.data_ptr<float>(), isa, pool);
  }
  auto out = torch::empty({B, 1, E}, stream.options());
  cpu::rms_norm_rows(stream.data_ptr<float>(), B, E, floats_of(final_norm_w), shape.norm_eps, out.data_ptr<float>());
  return out;
}

}  // namespace

torch::Tensor Transformer::run(torch::Tensor h, const torch::Tensor& positions, const torch::Tensor& mask, bool causal,
                               KVCache* cache, const torch::Tensor& slot, torch::ScalarType compute, bool fused,
                               const LayerRunner& run_layer) const {
  // CPU decode step of the pre-norm gated family: the layers in plain C++ (cpu/decode_layer.hpp).
  const auto& family = decoder::family_def(config_.family);
  if (device_.is_cpu() && !run_layer && cache && h.dim() == 3 && h.size(1) == 1 && compute == dtype_ && !offload_ &&
      !trainable_ && !torch::GradMode::is_enabled() && (dtype_ == torch::kFloat32 || dtype_ == torch::kBFloat16) &&
      family.layer == decoder::pre_norm_gated_layer && gated_silu(config_) && !final_norm_b_.defined() &&
      (!mask.defined() || mask.scalar_type() == torch::kBool) && cpu_cache_usable(*cache, layers_) &&
      !cpu_decode_layers_off())
    return cpu_decode(config_, layers_, final_norm_w_, inverse_frequencies(positions), h, positions, mask, *cache,
                      slot);
  // Inference on the CPU: OpenBLAS on one thread (cpu_linear.hpp: its spinning threads slowed a prompt ~2x).
  std::optional<cpu::SingleThreadedBlas> one_blas_thread;
  if (device_.is_cpu() && !trainable_ && !torch::GradMode::is_enabled()) one_blas_thread.emplace();
  decoder::Pass p(config_);
  p.fused = fused;
  p.rotation = decoder::rotation_for(config_, positions, inverse_frequencies(positions), compute, fused);
  p.mask = mask;
  p.causal = causal;
  p.cache = cache;
  p.slot = slot;
  p.final_norm_w = final_norm_w_.to(compute);
  if (final_norm_b_.defined()) p.final_norm_b = final_norm_b_.to(compute);
  decoder::Residual stream(p, std::move(h));
  Layer scratch;
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    if (!run_layer) {
      cpu::QuantizedWeights packed(layers_[i].quantized);
      family.layer(p, i, layer_for_use(i, scratch, compute), stream);
      continue;
    }
    // The layer as a function that owns what it reads (no cache): it may run again in backward.
    auto layer = [this, pass = p, i, compute, fn = family.layer](const torch::Tensor& x) {
      Layer own;
      cpu::QuantizedWeights packed(layers_[i].quantized);
      decoder::Residual s(pass, x);
      fn(pass, i, layer_for_use(i, own, compute), s);
      return s.h();
    };
    stream.set(run_layer(layer, stream.h()));
  }
  return family.final_norm(p, stream);
}

torch::Tensor Transformer::embed(const torch::Tensor& ids) const {
  if (embed_.defined()) return torch::embedding(embed_, ids);
  const QuantizedTensor& q = *lm_head_q_;
  auto flat = ids.reshape({-1});
  QuantizedTensor rows = q;
  rows.data = q.data.index_select(0, flat);
  rows.scales = q.scales.index_select(0, flat);
  rows.shape = {flat.size(0), q.shape[1]};
  auto sizes = ids.sizes().vec();
  sizes.push_back(q.shape[1]);
  return dequantize_weight(rows, dtype_, device_).view(sizes);
}

torch::Tensor Transformer::head(const torch::Tensor& h) const {
  if (!lm_head_q_) {
    if (fused_) {  // a decode step: the small-batch GEMV writes float32 logits directly
      auto logits = decoder::small_batch_linear(h, lm_head_, torch::Tensor(), /*float_out=*/true);
      if (logits.defined()) return logits;
    }
    return decoder::linear(h, lm_head_, torch::Tensor()).to(torch::kFloat32);
  }
  if (device_.is_cpu()) return cpu::linear(h, *lm_head_q_, torch::Tensor()).to(torch::kFloat32);
  return decoder::linear(h, dequantize_weight(*lm_head_q_, dtype_, device_), torch::Tensor()).to(torch::kFloat32);
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
  auto h = run(embed(ids), positions, mask, false, &cache, slot, dtype_, fused_);
  return head(h);
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

  auto h = run(embed(ids.to(device_)), positions, mask, causal, cache, {}, dtype_, fused_);
  if (cache) cache->length = S;
  if (last_only) h = h.narrow(1, T - 1, 1);
  return head(h);
}

torch::Tensor Transformer::logits(const torch::Tensor& ids, torch::ScalarType compute_dtype) const {
  return torch::linear(hidden_states(ids, compute_dtype), lm_head_.to(compute_dtype)).to(torch::kFloat32);
}

torch::Tensor Transformer::hidden_states(const torch::Tensor& ids, torch::ScalarType compute_dtype,
                                         const torch::Tensor& positions, const torch::Tensor& mask,
                                         const LayerRunner& run_layer) const {
  const auto B = ids.size(0), T = ids.size(1);
  if (config_.sliding_window > 0 && T > config_.sliding_window)
    throw std::runtime_error(config_.source + ": sequence of " + std::to_string(T) +
                             " tokens exceeds \"sliding_window\" " + std::to_string(config_.sliding_window) +
                             ", which this engine does not implement");
  auto pos =
      positions.defined()
          ? positions.to(device_)
          : torch::arange(T, torch::TensorOptions().dtype(torch::kInt64).device(device_)).view({1, T}).expand({B, T});
  // The rows are gathered before the cast: a float32 master embedding is not cast whole.
  auto h = torch::embedding(embed_, ids.to(device_)).to(compute_dtype);
  const bool fused = fused_ && !torch::GradMode::is_enabled();
  const auto m = mask.defined() ? mask.to(device_) : mask;
  return run(std::move(h), pos, m, !m.defined() && T > 1, nullptr, {}, compute_dtype, fused, run_layer);
}

namespace decoder {
const FamilyDef& family_def(Family f) {
  switch (f) {
    case Family::Llama:
    case Family::Qwen2: return kLlamaQwen2;
    case Family::Phi3: return kPhi3;
    case Family::GptNeoX: return kGptNeoX;
  }
  throw std::logic_error("unknown model family");
}
}  // namespace decoder

}  // namespace lal::lm
