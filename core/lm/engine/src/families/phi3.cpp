// Phi-3 (transformers' Phi3ForCausalLM): Llama's decoder layer with q/k/v and gate/up stored fused, partial rotary
// and longrope handled by the rotation (decoder.hpp).
#include "../decoder.hpp"

namespace lal::lm::decoder {

namespace {

using L = TransformerLayer;

std::vector<LayerWeight> layer_weights(const ModelConfig& c) {
  const auto E = c.hidden_size, I = c.intermediate_size, H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  return {
      {&L::attn_norm_w, WeightRole::Norm, {{"input_layernorm.weight", {E}}}},
      {&L::mlp_norm_w, WeightRole::Norm, {{"post_attention_layernorm.weight", {E}}}},
      {&L::qkv_w, WeightRole::Matrix, {{"self_attn.qkv_proj.weight", {(H + 2 * KV) * D, E}}}},
      {&L::o_w, WeightRole::ResidualMatrix, {{"self_attn.o_proj.weight", {E, H * D}}}},
      {&L::gate_up_w, WeightRole::Matrix, {{"mlp.gate_up_proj.weight", {2 * I, E}}}},
      {&L::down_w, WeightRole::ResidualMatrix, {{"mlp.down_proj.weight", {E, I}}}},
  };
}

}  // namespace

// The layer is Llama's: [q | k | v] rows, RMSNorm + residual, rotary attention, SwiGLU.
const FamilyDef kPhi3 = {"model.layers.", "model.embed_tokens.weight", "model.norm.weight", nullptr, "lm_head.weight",
                         layer_weights,   pre_norm_gated_layer,        final_rms_norm};

}  // namespace lal::lm::decoder
