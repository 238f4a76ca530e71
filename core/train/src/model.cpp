// The trainer's interface to the engine's decoder (lal::lm::Transformer), the KD loss, safetensors I/O.
#include "lal/train/model.hpp"

#include <cmath>
#include <stdexcept>

#include "lal/train/recompute.hpp"

namespace lal::train {

using lal::lm::DType;
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
  auto mapped = MappedTensors::open(path);
  for (auto& [name, t] : mapped.tensors) t = t.clone();
  return std::move(mapped.tensors);
}

MappedTensors MappedTensors::open(const std::string& path) {
  MappedTensors m{lal::lm::SafetensorsFile::open(path), {}};
  for (const auto& info : m.file.tensors()) m.tensors[info.name] = from_info(info);
  return m;
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

CausalLM CausalLM::random(const ModelConfig& config, std::uint64_t seed, torch::Device device) {
  return CausalLM(lal::lm::Transformer::random(config, seed, device));
}

CausalLM CausalLM::load(const std::string& dir, const LoadOptions& o) {
  lal::lm::WeightOptions w;
  w.quantize = o.quantize, w.quantize_group = o.quantize_group, w.cpu_offload = o.cpu_offload;
  w.dequantized_cache_bytes = o.dequantized_cache_bytes;
  lal::lm::ParameterOptions p;
  p.trainable = o.trainable, p.layers = o.layers, p.vocab_rows = o.vocab_rows;
  return CausalLM(lal::lm::Transformer::load(dir, o.device, o.trainable ? torch::kFloat32 : o.dtype, w, p));
}

torch::Tensor CausalLM::forward(const torch::Tensor& ids, torch::ScalarType compute_dtype) const {
  return decoder_->logits(ids, compute_dtype);
}

torch::Tensor CausalLM::hidden_states(const torch::Tensor& ids, torch::ScalarType compute_dtype, const Packing& packing,
                                      bool recompute_layers) const {
  torch::Tensor mask;  // [B, 1, T, T]: same document and not in the future
  if (packing.segments.defined()) {
    const auto T = ids.size(1);
    const auto seg = packing.segments.to(device());
    mask = seg.unsqueeze(2)
               .eq(seg.unsqueeze(1))
               .logical_and(torch::ones({T, T}, torch::TensorOptions().dtype(torch::kBool).device(device())).tril())
               .unsqueeze(1);
  }
  lal::lm::LayerRunner run_layer;
  if (recompute_layers && torch::GradMode::is_enabled()) run_layer = recompute_in_backward;
  return decoder_->hidden_states(ids, compute_dtype, packing.positions, mask, run_layer);
}

void CausalLM::load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& source) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, param] : named_parameters()) {
    auto p = param;
    auto it = tensors.find(name);
    if (it == tensors.end()) throw std::runtime_error(source + ": no tensor '" + name + "'");
    if (it->second.sizes() != p.sizes()) {
      auto shape = [](c10::IntArrayRef s) {
        std::string out = "[";
        for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
        return out + "]";
      };
      const bool vocab_rows = p.dim() == 2 && it->second.dim() == 2 && p.size(1) == it->second.size(1) &&
                              (name.find("embed") != std::string::npos || name.find("lm_head") != std::string::npos);
      throw std::runtime_error(source + ": tensor '" + name + "' has shape " + shape(it->second.sizes()) +
                               ", this model " + shape(p.sizes()) +
                               (vocab_rows ? " (another vocabulary size: the run's --vocab_multiple, --trim_vocab or "
                                             "tokenizer differs from the checkpoint's)"
                                           : ""));
    }
    p.copy_(it->second);
  }
}

void CausalLM::save_safetensors(const std::string& path, DType dtype,
                                const std::map<std::string, std::string>& metadata) const {
  if (named_parameters().empty()) throw std::logic_error("save_safetensors: the model is not trainable");
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& [name, t] : named_parameters())
    out.emplace_back(name, t.detach().to(torch::kCPU, to_torch_dtype(dtype)));
  auto meta = metadata;
  meta.emplace("format", "pt");
  write_tensors(path, out, meta);
}

}  // namespace lal::train
