// lal::lm::decoder — the shared blocks of every decoder family and the family table (private to core/lm/engine).
//
// One decoder serves the engine (inference, KV cache, fused CUDA kernels) and core/train's student (autograd):
// lal::lm::Transformer loads weights by a family's name table and runs the family's forward, which is a straight
// line over the blocks below. A family is one file under families/: its weight-name table (which checkpoint tensors
// fill which TransformerLayer field, and their shapes) and its forward. core/lm/engine/README.md says how to add one.
//
// Blocks run the fused CUDA kernels (cuda/kernels.hpp) when Pass::fused is set (a CUDA device, kernels built, no
// gradient needed) and LibTorch ops otherwise: the LibTorch ops are the reference, differentiable, and the CPU path.
// THIS HEADER INCLUDES LIBTORCH. THREADING: the blocks are reentrant; a Pass belongs to one forward.
#pragma once

#include <cstddef>
#include <vector>

#include "lal/lm/transformer.hpp"

namespace lal::lm::decoder {

/// Rotary input of one forward: cos/sin tables [B, 1, T, rotary_dim] in the compute dtype (sin with the sign of
/// rotate_half folded in: [-sin | sin]) for the LibTorch ops, or the positions and inverse frequencies for the fused
/// kernel (`fused`: only without yarn/longrope's attention factor, which the kernel does not apply).
struct Rotation {
  torch::Tensor cos, sin, positions, inv_freq;
  bool fused = false;
};
/// The rotation for `positions` [B, T] with inverse frequencies `inv_freq` [rotary_dim / 2] (float32, on the device).
Rotation rotation_for(const ModelConfig& c, const torch::Tensor& positions, const torch::Tensor& inv_freq,
                      torch::ScalarType dtype, bool fused);

/// What the blocks of one forward share: the configuration, which ops run, the rotation, the attention mask and the
/// KV cache. Copyable: a recomputed layer (activation checkpointing) keeps a copy without the cache.
struct Pass {
  explicit Pass(const ModelConfig& c) : config(c) {}
  const ModelConfig& config;
  bool fused = false;  ///< fused CUDA kernels (inference on a CUDA device with kernels built)
  Rotation rotation;
  torch::Tensor mask;   ///< bool [B, 1, T, S] (true = may attend) or undefined
  bool causal = false;  ///< with an undefined mask: lower-triangular attention over these T tokens
  KVCache* cache = nullptr;
  torch::Tensor slot;  ///< static decode: the cache slot(s) to write (see Transformer::decode_static)
  torch::Tensor final_norm_w, final_norm_b;  ///< in the compute dtype
};

// ------------------------------------------------------------------------------------------------ blocks

/// x W^T (+ b).
torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);
/// linear(x, w, b), by the small-batch GEMV kernel when the pass is fused and x has at most 4 rows (decode steps).
torch::Tensor linear(const Pass& p, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);
/// x W^T (+ b) by the small-batch GEMV kernel (float_out: as float32 holding the dtype-rounded values), or an
/// undefined tensor where it does not apply (no kernels built, LAL_CUDA_GEMV=off, more than 4 rows of x, dtypes).
torch::Tensor small_batch_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                                 bool float_out);

/// torch.layer_norm over the last dimension (GPT-NeoX), or the fused kernel.
torch::Tensor layer_norm(const Pass& p, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

/// The residual stream h between blocks and layers, with norm + residual add. add(delta) adds a block's output;
/// rms_norm(w) returns RMSNorm(h) * w, RMSNorm in float32 then cast back before the weight (transformers'
/// LlamaRMSNorm). With the fused kernels an add waits for the next rms_norm and both run as one kernel that updates h
/// in place (two kernels per pre-norm layer); otherwise the add happens at once (the autograd path).
class Residual {
 public:
  Residual(const Pass& p, torch::Tensor h);
  void add(const torch::Tensor& delta);
  torch::Tensor rms_norm(const torch::Tensor& w);
  /// h with every add applied.
  const torch::Tensor& h();
  void set(torch::Tensor h);

 private:
  const Pass& pass_;
  torch::Tensor h_, pending_;
};

/// How q, k and v heads sit in a fused projection's output row.
enum class QkvOrder {
  Grouped,  ///< [q heads | k heads | v heads] (llama, qwen2, phi3)
  PerHead,  ///< per head [q_h | k_h | v_h], kv heads = heads (gpt_neox)
};

/// Attention with an optional KV cache over the fused projection output `qkv` [B, T, ...] of layer `layer`: q and
/// k rotated (first rotary_dim channels, rotate-half), k/v appended to the cache (or written at the static slot),
/// grouped-query attention with softmax in float32. Returns [B, T, heads * head_dim], before the output projection.
torch::Tensor attention(const Pass& p, std::size_t layer, QkvOrder order, torch::Tensor qkv);

/// Gated MLP: down(act(gate) * up) over the fused projection [gate | up] (SwiGLU kernel for silu when fused).
torch::Tensor gated_mlp(const Pass& p, const torch::Tensor& x, const torch::Tensor& gate_up_w,
                        const torch::Tensor& gate_up_b, const torch::Tensor& down_w, const torch::Tensor& down_b);
/// Plain MLP: out(act(in(x))).
torch::Tensor plain_mlp(const Pass& p, const torch::Tensor& x, const torch::Tensor& in_w, const torch::Tensor& in_b,
                        const torch::Tensor& out_w, const torch::Tensor& out_b);

// ------------------------------------------------------------------------------------------------ families

/// What a weight is, for loading (quantize and offload apply to linear matrices only) and random initialisation
/// (norm weights 1, biases 0, matrices normal(0, 0.02), matrices that write into the residual stream scaled by
/// 1 / sqrt(2 * layers)).
enum class WeightRole { Norm, Bias, Matrix, ResidualMatrix };

/// A checkpoint tensor: name (relative to the layer's prefix for layer weights) and shape.
struct TensorName {
  std::string name;
  std::vector<std::int64_t> shape;
};

/// One TransformerLayer field and the checkpoint tensors it is made of, concatenated along dim 0 in this order
/// (llama's q_proj, k_proj, v_proj into qkv_w). Trainable models keep the parts as separate parameters.
struct LayerWeight {
  torch::Tensor TransformerLayer::*field;
  WeightRole role;
  std::vector<TensorName> parts;
};

/// A family: its checkpoint names and its forward, one layer at a time. Each lives in families/<name>.cpp.
struct FamilyDef {
  const char* layer_prefix;  ///< layer i's tensors are named layer_prefix + i + "." + part name
  const char* embed;
  const char* final_norm_w;
  const char* final_norm_b;  ///< nullptr: the final norm has no bias
  const char* lm_head;       ///< read unless tie_word_embeddings
  /// The fields of every layer (optional tensors, such as biases, included only when the config has them).
  std::vector<LayerWeight> (*layer_weights)(const ModelConfig& c);
  /// Decoder layer `i` (weights `l`) on the residual stream.
  void (*layer)(const Pass& p, std::size_t i, const TransformerLayer& l, Residual& r);
  /// The final norm of the stream: the hidden states the lm_head reads.
  torch::Tensor (*final_norm)(const Pass& p, Residual& r);
};

extern const FamilyDef kLlamaQwen2;  // families/llama_qwen2.cpp
extern const FamilyDef kPhi3;        // families/phi3.cpp
extern const FamilyDef kGptNeoX;     // families/gpt_neox.cpp

/// The pre-norm RMSNorm layer with a gated MLP over fused q/k/v and gate/up fields, and its final RMSNorm
/// (llama_qwen2.cpp); phi3's layer is the same.
void pre_norm_gated_layer(const Pass& p, std::size_t i, const TransformerLayer& l, Residual& r);
torch::Tensor final_rms_norm(const Pass& p, Residual& r);

/// The table entry of `f` (one line per family).
const FamilyDef& family_def(Family f);

}  // namespace lal::lm::decoder
