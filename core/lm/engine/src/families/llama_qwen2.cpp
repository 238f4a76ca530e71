// Llama and Qwen2 (transformers' LlamaForCausalLM, Qwen2ForCausalLM): pre-norm RMSNorm decoder, rotary attention
// over separate q/k/v projections (fused into qkv_w at load), gated MLP over gate/up (fused into gate_up_w).
#include "../decoder.hpp"

namespace lal::lm::decoder {

namespace {

using L = TransformerLayer;

std::vector<LayerWeight> layer_weights(const ModelConfig& c) {
  const auto E = c.hidden_size, I = c.intermediate_size, H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  std::vector<LayerWeight> w = {
      {&L::attn_norm_w, WeightRole::Norm, {{"input_layernorm.weight", {E}}}},
      {&L::mlp_norm_w, WeightRole::Norm, {{"post_attention_layernorm.weight", {E}}}},
      {&L::qkv_w,
       WeightRole::Matrix,
       {{"self_attn.q_proj.weight", {H * D, E}},
        {"self_attn.k_proj.weight", {KV * D, E}},
        {"self_attn.v_proj.weight", {KV * D, E}}}},
      {&L::o_w, WeightRole::ResidualMatrix, {{"self_attn.o_proj.weight", {E, H * D}}}},
      {&L::gate_up_w, WeightRole::Matrix, {{"mlp.gate_proj.weight", {I, E}}, {"mlp.up_proj.weight", {I, E}}}},
      {&L::down_w, WeightRole::ResidualMatrix, {{"mlp.down_proj.weight", {E, I}}}},
  };
  if (c.qkv_bias)
    w.push_back({&L::qkv_b,
                 WeightRole::Bias,
                 {{"self_attn.q_proj.bias", {H * D}},
                  {"self_attn.k_proj.bias", {KV * D}},
                  {"self_attn.v_proj.bias", {KV * D}}}});
  if (c.o_bias) w.push_back({&L::o_b, WeightRole::Bias, {{"self_attn.o_proj.bias", {E}}}});
  if (c.mlp_bias) {
    w.push_back({&L::gate_up_b, WeightRole::Bias, {{"mlp.gate_proj.bias", {I}}, {"mlp.up_proj.bias", {I}}}});
    w.push_back({&L::down_b, WeightRole::Bias, {{"mlp.down_proj.bias", {E}}}});
  }
  return w;
}

}  // namespace

void pre_norm_gated_layer(const Pass& p, std::size_t i, const TransformerLayer& l, Residual& r) {
  auto x = r.rms_norm(l.attn_norm_w);
  r.add(linear(p, attention(p, i, QkvOrder::Grouped, linear(p, x, l.qkv_w, l.qkv_b)), l.o_w, l.o_b));
  x = r.rms_norm(l.mlp_norm_w);
  r.add(gated_mlp(p, x, l.gate_up_w, l.gate_up_b, l.down_w, l.down_b));
}

torch::Tensor final_rms_norm(const Pass& p, Residual& r) { return r.rms_norm(p.final_norm_w); }

const FamilyDef kLlamaQwen2 = {
    "model.layers.", "model.embed_tokens.weight", "model.norm.weight", nullptr, "lm_head.weight",
    layer_weights,   pre_norm_gated_layer,        final_rms_norm};

}  // namespace lal::lm::decoder
