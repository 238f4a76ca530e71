// GPT-NeoX (transformers' GPTNeoXForCausalLM, Pythia): LayerNorm with biases, q/k/v fused per head, partial rotary,
// plain GELU MLP, parallel (attention and MLP both read h) or sequential residual.
#include "../decoder.hpp"

namespace lal::lm::decoder {

namespace {

using L = TransformerLayer;

std::vector<LayerWeight> layer_weights(const ModelConfig& c) {
  const auto E = c.hidden_size, I = c.intermediate_size, H = c.num_heads, D = c.head_dim;
  std::vector<LayerWeight> w = {
      {&L::attn_norm_w, WeightRole::Norm, {{"input_layernorm.weight", {E}}}},
      {&L::attn_norm_b, WeightRole::Bias, {{"input_layernorm.bias", {E}}}},
      {&L::mlp_norm_w, WeightRole::Norm, {{"post_attention_layernorm.weight", {E}}}},
      {&L::mlp_norm_b, WeightRole::Bias, {{"post_attention_layernorm.bias", {E}}}},
      {&L::qkv_w, WeightRole::Matrix, {{"attention.query_key_value.weight", {3 * H * D, E}}}},
      {&L::o_w, WeightRole::ResidualMatrix, {{"attention.dense.weight", {E, H * D}}}},
      {&L::fc_in_w, WeightRole::Matrix, {{"mlp.dense_h_to_4h.weight", {I, E}}}},
      {&L::fc_in_b, WeightRole::Bias, {{"mlp.dense_h_to_4h.bias", {I}}}},
      {&L::fc_out_w, WeightRole::ResidualMatrix, {{"mlp.dense_4h_to_h.weight", {E, I}}}},
      {&L::fc_out_b, WeightRole::Bias, {{"mlp.dense_4h_to_h.bias", {E}}}},
  };
  if (c.qkv_bias) w.push_back({&L::qkv_b, WeightRole::Bias, {{"attention.query_key_value.bias", {3 * H * D}}}});
  if (c.o_bias) w.push_back({&L::o_b, WeightRole::Bias, {{"attention.dense.bias", {E}}}});
  return w;
}

void layer(const Pass& p, std::size_t i, const TransformerLayer& l, Residual& r) {
  const auto h = r.h();
  auto x = layer_norm(p, h, l.attn_norm_w, l.attn_norm_b);
  auto attn = linear(p, attention(p, i, QkvOrder::PerHead, linear(p, x, l.qkv_w, l.qkv_b)), l.o_w, l.o_b);
  if (p.config.parallel_residual) {
    x = layer_norm(p, h, l.mlp_norm_w, l.mlp_norm_b);
    r.set(plain_mlp(p, x, l.fc_in_w, l.fc_in_b, l.fc_out_w, l.fc_out_b) + attn + h);
  } else {
    attn = attn + h;
    x = layer_norm(p, attn, l.mlp_norm_w, l.mlp_norm_b);
    r.set(plain_mlp(p, x, l.fc_in_w, l.fc_in_b, l.fc_out_w, l.fc_out_b) + attn);
  }
}

torch::Tensor final_norm(const Pass& p, Residual& r) { return layer_norm(p, r.h(), p.final_norm_w, p.final_norm_b); }

}  // namespace

const FamilyDef kGptNeoX = {"gpt_neox.layers.",
                            "gpt_neox.embed_in.weight",
                            "gpt_neox.final_layer_norm.weight",
                            "gpt_neox.final_layer_norm.bias",
                            "embed_out.weight",
                            layer_weights,
                            layer,
                            final_norm};

}  // namespace lal::lm::decoder
