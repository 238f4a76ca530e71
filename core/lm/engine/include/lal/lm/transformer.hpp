// lal::lm — the decoder-only transformer families over checkpoint-named weights: one decoder for the engine
// (inference with a KV cache and the fused CUDA kernels) and for core/train's student (trainable parameters,
// autograd). The families are one file each under src/families/ (a weight-name table and a straight-line forward
// over the shared blocks of src/decoder.hpp).
//
// THIS HEADER INCLUDES LIBTORCH (through torch_compat.hpp). Include it only from engine and trainer sources and
// tests; every other part of lal talks to the torch-free Engine (engine.hpp) or the SDK's LanguageModel.
//
// OWNERSHIP: a Transformer owns its weights (copied out of the mmapped checkpoint into the chosen device/dtype).
// forward() does not modify the model, only the KVCache passed to it; one KVCache per concurrent generation.
// THREADING: forward() is const and may run concurrently on different caches (LibTorch ops are thread-safe), but
// the engine serialises calls anyway to bound memory. A trainable model is used by one trainer thread.
// ERRORS: load() throws std::runtime_error naming the checkpoint and the tensor for a missing tensor, a shape that
// disagrees with config.json, a weight dtype that is not F32/F16/BF16, or a non-finite weight (checked on the device
// where the weights live; WeightOptions::allow_nonfinite overrides); and, before allocating anything, when the
// weights cannot fit the device (check_memory_budget).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lal/lm/detail/torch_compat.hpp"
#include "lal/lm/model_config.hpp"
#include "lal/lm/quantize.hpp"

namespace lal::lm {

/// Preallocated keys/values for every layer: [batch, kv_heads, capacity, head_dim]. Slots [0, length) are filled.
struct KVCache {
  std::vector<torch::Tensor> keys, values;
  std::int64_t length = 0;
  std::int64_t capacity = 0;
  static KVCache allocate(const ModelConfig& config, std::int64_t batch, std::int64_t capacity, torch::ScalarType dtype,
                          torch::Device device);
};

/// One decoder layer's weights, named after the checkpoint tensors they come from. Unused fields stay undefined.
/// The attention input projection is always one fused matrix `qkv_w` (and `qkv_b`): phi3's self_attn.qkv_proj and
/// gpt_neox's attention.query_key_value as stored; llama/qwen2's q_proj, k_proj, v_proj concatenated at load in
/// that order (rows [q | k | v]), so a step runs one matmul instead of three. Likewise the gated MLP's input is one
/// `gate_up_w` (rows [gate | up]): phi3's mlp.gate_up_proj as stored, llama/qwen2's gate_proj and up_proj
/// concatenated. gpt_neox uses dense_h_to_4h/dense_4h_to_h (fc_in/fc_out) and LayerNorm biases.
struct TransformerLayer {
  torch::Tensor attn_norm_w, attn_norm_b;  // input_layernorm
  torch::Tensor qkv_w, qkv_b;              // [q | k | v] rows (gpt_neox: per head [q_h | k_h | v_h])
  torch::Tensor o_w, o_b;                  // o_proj / attention.dense
  torch::Tensor mlp_norm_w, mlp_norm_b;    // post_attention_layernorm
  torch::Tensor gate_up_w, gate_up_b, down_w, down_b;
  torch::Tensor fc_in_w, fc_in_b, fc_out_w, fc_out_b;  // gpt_neox mlp.dense_h_to_4h / dense_4h_to_h
  /// With WeightOptions::quantize: the quantized linear weights, each naming the field it stands for (that field
  /// then stays undefined until forward() dequantizes it for the layer's use).
  std::vector<std::pair<torch::Tensor TransformerLayer::*, QuantizedTensor>> quantized;
  /// Trainable models: the fields made of several checkpoint tensors (qkv_w from q_proj, k_proj, v_proj), each
  /// part a parameter of its own (the field stays undefined; a forward concatenates the parts).
  std::vector<std::pair<torch::Tensor TransformerLayer::*, std::vector<torch::Tensor>>> parts;
};

/// How the decoder layers' weights are stored. Embeddings, lm_head, norms and biases are always dense and resident.
struct WeightOptions {
  /// none | int8 | int4: the linear weights of every decoder layer (q/k/v, o, gate/up, down; gpt_neox's four)
  /// quantized group-wise (quantize.hpp) at load, from the weights as converted to the model dtype. forward()
  /// dequantizes one layer at a time into the model dtype and multiplies densely, so only one layer's dense weights
  /// exist at once; logits equal those of a dense model holding the dequantized weights (tested).
  std::string quantize = "none";
  std::int64_t quantize_group = 64;
  /// Keep the decoder layers' linear weights (dense or quantized) in pinned host memory and copy each layer to the
  /// device just before it runs (copies queued on the compute stream; the device holds one layer at a time, plus
  /// what the caching allocator keeps). A no-op on the CPU, where the weights are in host memory already.
  bool cpu_offload = false;
  /// Load weights holding NaN, ±inf (also after conversion to the model dtype, e.g. 1e5 in float16) or a magnitude
  /// over 1.8e19 (whose square overflows float32). Refused by default: such a model only produces garbage.
  bool allow_nonfinite = false;
  /// Also keep the output projection (lm_head; with tied embeddings the embedding matrix, for both its uses: rows
  /// are dequantized for the token lookup) as int8 with `quantize_group`, as llama.cpp keeps its output layer at 8
  /// bits in Q4_0/Q8_0 files. What `--dtype int8|int4` turns on: at batch 1 the lm-head of a small model is a
  /// quarter of all weights.
  bool quantize_lm_head = false;
  /// Quantized weights on a GPU, not offloaded: keep the dequantized (model dtype) linear weights of the first layers
  /// that fit in this many bytes resident on the device after load, so that those layers run without dequantizing
  /// at every forward. The values are those the per-use dequantization makes, so results are identical; it trades
  /// device memory for speed while memory is free (lal distill's teacher generation, before training needs it).
  /// Ignored on the CPU (its kernels read the packed weights directly) and with cpu_offload.
  std::int64_t dequantized_cache_bytes = 0;
};

/// Bytes the weights of `config` take on the device and in host memory when loaded as `element_bytes`-byte
/// elements with `weights` (quantization shrinks the decoder layers' linear weights, cpu_offload moves them to
/// host memory). A double: a bad config.json (intermediate_size 1e15) must give a number, not an overflow.
struct WeightBudget {
  double device_bytes = 0;
  double host_bytes = 0;  ///< offloaded layers (pinned host memory)
};
WeightBudget estimate_weight_bytes(const ModelConfig& config, std::int64_t element_bytes, const WeightOptions& weights,
                                   bool offload);

/// Refuses (std::runtime_error: "model needs X GiB ..., device has Y GiB free") a budget that cannot fit the device
/// or host memory free now. LAL_MEMORY_CHECK=off skips the check (when the estimate of free memory is wrong, e.g.
/// with swap or unified memory).
void check_memory_budget(const WeightBudget& budget, const torch::Device& device, const std::string& what);

/// Which parameters a load keeps, and whether they train (core/train: the student, a teacher's layer subset).
struct ParameterOptions {
  /// Trainable parameters (core/train's student): every checkpoint tensor a float32 leaf that requires grad, kept
  /// separate (named_parameters()); needs dtype float32, quantize none and no cpu_offload.
  bool trainable = false;
  /// Which checkpoint layers to load, in this order (empty = all); config().num_layers becomes their count.
  std::vector<std::int64_t> layers;
  /// Keep only these rows of the embedding and lm_head (vocabulary trimming); config().vocab_size becomes their
  /// count. Not owned; read during load() only.
  const std::vector<std::int32_t>* vocab_rows = nullptr;
};

/// Rotary inverse frequencies [rotary_dim/2] (float32) of the config's rope type, computed as transformers does at
/// initialisation: for dynamic the unscaled table, for longrope the short_factor table (Transformer switches them
/// per forward; RopeConfig says how). Shared with core/train's student so both rotate identically.
torch::Tensor rotary_inverse_frequencies(const ModelConfig& c);
/// longrope's table for `factors` (short_factor or long_factor): 1 / (factor_i * theta^(2i/dim)).
torch::Tensor longrope_inverse_frequencies(const ModelConfig& c, const std::vector<double>& factors);

/// One decoder layer as a function of the residual stream [B, T, hidden] (see Transformer::hidden_states).
using LayerFunction = std::function<torch::Tensor(const torch::Tensor&)>;
/// Runs a layer on the stream: return fn(x), or arrange for it to run again in backward (activation checkpointing:
/// `fn` owns what it reads and computes the same thing each time).
using LayerRunner = std::function<torch::Tensor(const LayerFunction& fn, const torch::Tensor& x)>;

class Transformer {
 public:
  /// Load `dir` (config.json + safetensors) onto `device` in `dtype` (float32, bfloat16 or float16), decoder
  /// weights stored as `weights` says. Throws std::invalid_argument for a bad quantize mode or group size.
  static std::shared_ptr<Transformer> load(const std::string& dir, torch::Device device, torch::ScalarType dtype,
                                           const WeightOptions& weights = {}, const ParameterOptions& parameters = {});
  /// A randomly initialised trainable float32 model of `config`'s family (normal(0, 0.02), matrices that write into
  /// the residual stream scaled by 1/sqrt(2 layers), norms 1, biases 0), drawn from a CPU generator seeded by `seed`
  /// in the order of the family's weight table (same seed, same weights, on any device).
  static std::shared_ptr<Transformer> random(const ModelConfig& config, std::uint64_t seed, torch::Device device);

  /// Run `ids` [B,T] (int64) at `positions` [B,T] (rotary positions; with left padding they start at 0 at each
  /// row's first real token). `key_mask` [B, S] bool, S = cached length + T, marks real (non-padding) tokens, or is
  /// undefined when every token is real. With `cache`, keys/values are appended at slots [length, length+T) and
  /// cache->length advances; without, attention covers these T tokens only.
  /// Returns float32 logits [B, T, vocab] or, with `last_only`, [B, 1, vocab].
  torch::Tensor forward(const torch::Tensor& ids, const torch::Tensor& positions, const torch::Tensor& key_mask,
                        KVCache* cache, bool last_only) const;

  /// Training and scoring: float32 logits [B, T, vocab] for right-padded `ids` [B, T] (causal attention, positions
  /// 0..T-1, no cache), computed in `compute_dtype` (weights cast per use: float32 masters run in bfloat16 on CUDA;
  /// norms and softmax stay float32). Differentiable when gradients are enabled; the fused kernels (when turned on)
  /// run only when they are not.
  torch::Tensor logits(const torch::Tensor& ids, torch::ScalarType compute_dtype) const;
  /// The final-normed hidden states [B, T, hidden] in `compute_dtype` that logits() projects with lm_head().
  /// `positions` [B, T] (default 0..T-1 in every row) and `mask` bool [B, 1, T, T] (true = may attend; default
  /// causal) describe packed documents; `run_layer` (default: plain calls) runs each decoder layer.
  torch::Tensor hidden_states(const torch::Tensor& ids, torch::ScalarType compute_dtype,
                              const torch::Tensor& positions = {}, const torch::Tensor& mask = {},
                              const LayerRunner& run_layer = {}) const;
  /// The output projection [vocab, hidden] as stored (the embedding when tied).
  const torch::Tensor& lm_head() const { return lm_head_; }
  /// The token embedding matrix [vocab, hidden] (undefined where an int8 lm-head stands in for tied embeddings).
  const torch::Tensor& embedding() const { return embed_; }

  /// Shape-static decode step (CUDA-graph capturable): one token per row, `ids`/`positions` [B,1], keys/values
  /// written at cache slot `slot` (int64 [1] tensor on the device), attention over the whole cache capacity with
  /// `key_mask` [B, capacity] (true = a real token, `slot` included). Leaves cache.length alone. `slot` may also
  /// hold one slot per row (int64 [B]): rows at different lengths decode together (the continuous-batching
  /// scheduler). Returns float32 logits [B, 1, vocab].
  torch::Tensor decode_static(const torch::Tensor& ids, const torch::Tensor& positions, const torch::Tensor& slot,
                              const torch::Tensor& key_mask, KVCache& cache) const;

  /// Whether this build has the fused CUDA kernels (src/cuda/kernels.cu: RMSNorm + residual add, LayerNorm,
  /// rotary in place, SwiGLU, KV append, GQA decode attention with split-K). They replace the LibTorch ops of the
  /// forward pass on a CUDA device; the LibTorch path stays the reference (and the CPU path).
  static bool kernels_built();
  /// Use the fused kernels (true) or the LibTorch ops (false). Throws std::invalid_argument when turning them on
  /// without kernels_built() or off a CUDA device. Off by default; Engine::load turns them on for "auto".
  /// Not thread-safe against forward(): set it before generating.
  void set_fused_kernels(bool on);
  bool fused_kernels() const { return fused_; }

  const ModelConfig& config() const { return config_; }
  torch::Device device() const { return device_; }
  torch::ScalarType dtype() const { return dtype_; }
  /// Bytes of all weights as stored (quantized ones at their packed size with scales; tied lm_head counted once),
  /// wherever they are. offloaded_bytes() of them live in host memory (cpu_offload on a GPU), the rest on device().
  std::int64_t parameter_bytes() const { return parameter_bytes_; }
  std::int64_t offloaded_bytes() const { return offloaded_bytes_; }
  const WeightOptions& weight_options() const { return weights_; }
  /// Whether weights are streamed from host memory (cpu_offload on a non-CPU device).
  bool offloaded() const { return offload_; }
  /// Layers kept dequantized (WeightOptions::dequantized_cache_bytes: the first ones) and their bytes.
  std::size_t dequantized_layers() const { return dequantized_.size(); }
  std::int64_t dequantized_bytes() const { return dequantized_bytes_; }
  /// "N of L layers kept dequantized (X MiB)", or "" when none is (for logs and Engine::describe()).
  std::string dequantized_summary() const;
  /// Trainable models: every parameter with its checkpoint name (tied lm_head not repeated), in a fixed order (the
  /// family's table order, embedding first). Empty for inference models.
  const std::vector<std::pair<std::string, torch::Tensor>>& named_parameters() const { return params_; }
  /// Number of weights (quantized ones counted by their dense shape; a tied lm_head once).
  std::int64_t parameter_count() const;

 private:
  using Layer = TransformerLayer;
  Transformer() = default;
  /// Embedded tokens h -> final normed hidden states: the family's forward over the decoder blocks.
  torch::Tensor run(torch::Tensor h, const torch::Tensor& positions, const torch::Tensor& mask, bool causal,
                    KVCache* cache, const torch::Tensor& slot, torch::ScalarType compute, bool fused,
                    const LayerRunner& run_layer = {}) const;
  /// Layer `i` ready to run in `compute`: itself when dense, resident and in that dtype, else `scratch` filled with
  /// device copies, dequantized weights, concatenated parts and casts (released when scratch is overwritten by the
  /// next layer).
  const Layer& layer_for_use(std::size_t i, Layer& scratch, torch::ScalarType compute) const;
  /// The inverse frequencies for a forward over `positions`: inv_freq_, or for dynamic/longrope the table chosen by
  /// the longest position (device-side, so a CUDA graph captures the choice).
  torch::Tensor inverse_frequencies(const torch::Tensor& positions) const;
  /// The weight fields of this family's layers (all of them, and the linear matrices), from its table.
  void set_fields();

  ModelConfig config_;
  torch::Device device_{torch::kCPU};
  torch::ScalarType dtype_ = torch::kFloat32;
  std::int64_t parameter_bytes_ = 0, offloaded_bytes_ = 0;
  WeightOptions weights_;
  bool offload_ = false;
  bool fused_ = false;
  bool trainable_ = false;
  std::vector<torch::Tensor Layer::*> fields_, matrix_fields_;
  std::vector<std::pair<std::string, torch::Tensor>> params_;
  torch::Tensor inv_freq_;       // [rotary_dim/2] float32, rope scaling applied
  torch::Tensor inv_freq_long_;  // longrope: the long_factor table
  /// Token embeddings of `ids`: rows of embed_, or dequantized rows of the int8 lm-head when they are tied.
  torch::Tensor embed(const torch::Tensor& ids) const;
  /// Float32 logits of the final hidden states through lm_head_ or its int8 form.
  torch::Tensor head(const torch::Tensor& h) const;

  torch::Tensor embed_, final_norm_w_, final_norm_b_,
      lm_head_;                               // embed_/lm_head_ undefined where lm_head_q_ replaces them
  std::optional<QuantizedTensor> lm_head_q_;  // WeightOptions::quantize_lm_head
  std::vector<Layer> layers_;
  std::vector<Layer> dequantized_;  // the first layers with their quantized weights dequantized (dense, dtype_)
  std::int64_t dequantized_bytes_ = 0;
};

}  // namespace lal::lm
