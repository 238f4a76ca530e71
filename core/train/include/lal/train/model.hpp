// lal::train — the differentiable student (and frozen teacher) decoder, the distillation loss, and weight-only
// quantization.
//
// THIS HEADER INCLUDES LIBTORCH. Include it from core/train sources and tests only; the CLI uses distill.hpp.
//
// CausalLM is the engine's decoder (lal::lm::Transformer: one class, one file per family under
// core/lm/engine/src/families) with the trainer's interface: a student has trainable float32 parameters, one per
// checkpoint tensor (named_parameters()), and its forward runs the engine's blocks with autograd-capable LibTorch
// ops; a teacher is loaded like the engine's model (int8/int4, CPU offload). A model exported from here gives the
// engine the same logits (tests/train checks <= 1e-4 in float32) because it is the same code.
//
// OWNERSHIP: a CausalLM owns (shares) its decoder. THREADING: forward() is const; one trainer thread uses a model.
// ERRORS: std::runtime_error naming the checkpoint and tensor (missing tensor, wrong shape, unsupported family).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lal/lm/detail/torch_compat.hpp"
#include "lal/lm/model_config.hpp"
#include "lal/lm/quantize.hpp"
#include "lal/lm/safetensors.hpp"
#include "lal/lm/transformer.hpp"

namespace lal::train {

// ---------------------------------------------------------------------------------------------------------------
// Weight-only quantization (symmetric, group-wise along the input dimension).

// The one implementation lives in the engine (lal/lm/quantize.hpp: format, error bound); re-exported here.
using lal::lm::dequantize_weight;
using lal::lm::quantize_weight;
using lal::lm::QuantizedTensor;

// ---------------------------------------------------------------------------------------------------------------
// The distillation loss.

struct LossParts {
  torch::Tensor total;  ///< alpha * T^2 * kd + (1 - alpha) * ce (ce alone without teacher)
  torch::Tensor kd;     ///< mean over positions of KL(teacher_T || student_T); undefined without teacher
  torch::Tensor ce;     ///< mean cross-entropy of the targets (the teacher's tokens)
};

/// `student_logits` [N, V] float32; `teacher_logits` [N, V] (already aligned to the student's vocabulary; -inf for
/// tokens the teacher cannot produce) or undefined; `targets` [N] int64.
LossParts distillation_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                            const torch::Tensor& targets, double temperature, double alpha);

/// The same with the teacher known only by its top-k log-probabilities (at temperature 1): `topk_ids` [N, K] int64
/// in the student's vocabulary (-1 = unused slot), `topk_logprobs` [N, K]. The teacher distribution at temperature
/// T is renormalised over the k tokens; the student's log-softmax over its full vocabulary is gathered at them.
LossParts distillation_loss_topk(const torch::Tensor& student_logits, const torch::Tensor& topk_ids,
                                 const torch::Tensor& topk_logprobs, const torch::Tensor& targets, double temperature,
                                 double alpha);

/// Mean over positions of KL(softmax(teacher) || softmax(student)) at temperature 1 (the held-out metric).
torch::Tensor mean_kl(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits);

// ---------------------------------------------------------------------------------------------------------------
// The decoder.

struct LoadOptions {
  torch::Device device{torch::kCPU};
  torch::ScalarType dtype = torch::kFloat32;  ///< storage dtype of dense weights
  bool trainable = false;                     ///< parameters require grad (float32 masters)
  std::string quantize = "none";              ///< none | int8 | int4 (decoder-layer linears only)
  std::int64_t quantize_group = 64;
  bool cpu_offload = false;                  ///< weights stay in CPU memory; each use copies them to `device`
  std::int64_t dequantized_cache_bytes = 0;  ///< quantized on a GPU: WeightOptions::dequantized_cache_bytes
  std::vector<std::int64_t> layers;          ///< which checkpoint layers to load (empty = all)
  const std::vector<std::int32_t>* vocab_rows = nullptr;  ///< keep only these embedding/lm_head rows (trimming)
};

class CausalLM {
 public:
  /// A randomly initialised trainable model (normal(0, 0.02), residual projections scaled by 1/sqrt(2 layers),
  /// norms 1, biases 0), created with a generator seeded by `seed` (same seed, same weights, on any device).
  static CausalLM random(const lal::lm::ModelConfig& config, std::uint64_t seed, torch::Device device);
  /// Load a Hugging Face directory of any family the engine runs. The returned config reflects `layers` and
  /// `vocab_rows`.
  static CausalLM load(const std::string& dir, const LoadOptions& options);

  /// Logits [B, T, V] float32 for right-padded `ids` [B, T] (causal attention; positions 0..T-1). Linear layers
  /// compute in `compute_dtype` (bfloat16 on CUDA: float32 masters are cast per use, norms/softmax stay float32).
  torch::Tensor forward(const torch::Tensor& ids, torch::ScalarType compute_dtype = torch::kFloat32) const;

  /// Where the documents of a packed batch lie: `positions` [B, T] int64 rotary positions (restarting at 0 for each
  /// document) and `segments` [B, T] int64 document numbers (a token attends only to earlier tokens of its own
  /// segment). Both undefined: one document per row, positions 0..T-1, plain causal attention.
  struct Packing {
    torch::Tensor positions, segments;
  };
  /// The final-normed hidden states [B, T, E] in `compute_dtype` (forward() = lm_head(hidden_states())). With
  /// `recompute_layers`, each layer keeps only its input for backward and runs again there (activation
  /// checkpointing: the same gradients, less memory, one more forward). lal::lm::Transformer::hidden_states.
  torch::Tensor hidden_states(const torch::Tensor& ids, torch::ScalarType compute_dtype, const Packing& packing = {},
                              bool recompute_layers = false) const;
  /// The output projection [V, E] as stored (the embedding when tied).
  const torch::Tensor& lm_head() const { return decoder_->lm_head(); }
  const torch::Tensor& embedding() const { return decoder_->embedding(); }

  const lal::lm::ModelConfig& config() const { return decoder_->config(); }
  torch::Device device() const { return decoder_->device(); }
  /// The decoder itself (e.g. to turn on the fused CUDA kernels of a teacher: they run when no gradient is needed).
  lal::lm::Transformer& decoder() const { return *decoder_; }
  /// Trainable tensors with their checkpoint names (tied lm_head not repeated), in a fixed order; empty unless the
  /// model is trainable.
  const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters() const {
    return decoder_->named_parameters();
  }
  std::int64_t parameter_count() const { return decoder_->parameter_count(); }
  /// Bytes the weights occupy as stored (quantized weights at their packed size).
  std::int64_t weight_bytes() const { return decoder_->parameter_bytes(); }

  /// Overwrite parameters from `tensors` (name -> tensor); every parameter must be present with its shape.
  void load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& source);
  /// Write the parameters as a safetensors file with checkpoint names, converted to `dtype` (F32 or BF16).
  /// Throws std::logic_error for a model that is not trainable.
  void save_safetensors(const std::string& path, lal::lm::DType dtype,
                        const std::map<std::string, std::string>& metadata = {}) const;

 private:
  explicit CausalLM(std::shared_ptr<lal::lm::Transformer> decoder) : decoder_(std::move(decoder)) {}
  std::shared_ptr<lal::lm::Transformer> decoder_;
};

/// Rotary inverse frequencies with rope scaling: the engine's own function (one implementation for both).
using lal::lm::rotary_inverse_frequencies;

/// Safetensors dtype <-> torch dtype, and reading a whole safetensors file into CPU tensors (copies).
torch::ScalarType to_torch_dtype(lal::lm::DType t);
std::map<std::string, torch::Tensor> read_safetensors(const std::string& path);
/// A safetensors file's tensors as CPU views into its read-only mapping (no copy: pages are read when a tensor is
/// first used and shared by every process mapping the file), valid while this object lives; never write to them.
struct MappedTensors {
  lal::lm::SafetensorsFile file;
  std::map<std::string, torch::Tensor> tensors;
  static MappedTensors open(const std::string& path);
};
/// Write CPU copies of `tensors` (kept in the given order) atomically.
void write_tensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                   const std::map<std::string, std::string>& metadata = {});

}  // namespace lal::train
