// lal::lm — a model's architecture as read from a Hugging Face `config.json` (+ `generation_config.json`).
//
// Supported `model_type`s: qwen2, llama, phi3, gpt_neox. Each family's keys and defaults follow its transformers
// configuration class; the result is normalised into one ModelConfig (fused/unfused layout, bias flags, rotary
// dimension) that the forward functions read. Anything the engine cannot run exactly — an unknown model_type, a
// rope_scaling type other than linear/llama3, an active sliding window, a non-integer where an integer belongs —
// throws ConfigError naming config.json and the key. Torch-free; immutable after parsing.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace lal::lm {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Family { Llama, Qwen2, Phi3, GptNeoX };
const char* family_name(Family f);

struct RopeScaling {
  std::string type;  ///< "" (none), "linear", "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;   ///< llama3
  double high_freq_factor = 4.0;  ///< llama3
  std::int64_t original_max_position_embeddings = 8192;  ///< llama3
};

struct ModelConfig {
  std::string source;  ///< path of config.json, for messages
  Family family = Family::Llama;
  std::string model_type;
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;
  std::int64_t intermediate_size = 0;
  std::int64_t num_layers = 0;
  std::int64_t num_heads = 0;
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;
  std::int64_t rotary_dim = 0;  ///< head_dim x partial_rotary_factor / rotary_pct (even)
  std::int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  double norm_eps = 1e-6;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
  bool qkv_bias = false;     ///< q/k/v projections (or the fused one) have a bias
  bool o_bias = false;       ///< output projection has a bias
  bool mlp_bias = false;
  bool parallel_residual = false;  ///< gpt_neox use_parallel_residual
  std::int64_t sliding_window = 0;  ///< 0 = none; otherwise sequences longer than this are refused
  std::string torch_dtype;          ///< as written ("bfloat16", ...), may be empty
  std::vector<std::int64_t> eos_token_ids;  ///< from config.json and generation_config.json, deduplicated
  std::int64_t bos_token_id = -1;
  std::int64_t pad_token_id = -1;

  /// Parse `<dir>/config.json` and, when present, `<dir>/generation_config.json`.
  static ModelConfig from_dir(const std::string& dir);
  /// Parse JSON text; `source` names it in messages.
  static ModelConfig from_json_text(const std::string& text, const std::string& source);
};

}  // namespace lal::lm
