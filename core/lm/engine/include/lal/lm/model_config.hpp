// lal::lm — a model's architecture as read from a Hugging Face `config.json` (+ `generation_config.json`).
//
// Supported `model_type`s: qwen2, llama, phi3, gpt_neox. One reading path normalises both dialects of config.json —
// transformers 4 (`rope_theta`, `rope_scaling`, `rotary_pct`, `rotary_emb_base`, top-level `partial_rotary_factor`)
// and transformers 5 (`rope_parameters` with `rope_type`, `rope_theta`, `partial_rotary_factor`, `dtype`) — into
// one ModelConfig, with the defaults of each family's transformers configuration class.
//
// Strict: a key that changes the arithmetic and that the engine does not implement (a rope type, a nested per-layer
// rope_parameters, a quantization_config, an activation, an unknown layer type, ...) throws ConfigError naming the
// file, the key, the value and what is supported; so does a value out of range (eps <= 0, rope_theta <= 0, heads not
// dividing the hidden size, a probability outside [0, 1] in generation_config.json, ...). Nothing falls back to a
// default silently. Keys known to be irrelevant to inference are listed in one place (model_config.cpp,
// kIgnoredKeys); any other key the family does not read is collected in `unknown_keys` (the engine logs them at info
// level). core/lm/engine/README.md has the table of honoured, ignored and refused keys.
//
// Torch-free; immutable after parsing.
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

/// Rotary position embedding, as transformers' modeling_rope_utils computes it. The engine's rotary tables:
///   default  inv_freq[i] = 1 / theta^(2i/dim)
///   linear   inv_freq / factor
///   dynamic  NTK: for a forward whose largest position + 1 (over the batch) exceeds max_position_embeddings,
///            theta' = theta * (factor * len / max_pos - (factor - 1))^(dim / (dim - 2)), float32 as transformers
///   llama3   wavelength-banded scaling (factor, low/high_freq_factor, original_max_position_embeddings)
///   yarn     ramp between interpolated and extrapolated frequencies (beta_fast/slow, truncate) and cos/sin scaled
///            by attention_factor
///   longrope inv_freq / short_factor, or / long_factor for a forward whose largest position + 1 exceeds
///            original_max_position_embeddings; cos/sin scaled by attention_factor
struct RopeConfig {
  std::string type = "default";  ///< default | linear | dynamic | llama3 | yarn | longrope
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0;                       ///< llama3
  double high_freq_factor = 4.0;                      ///< llama3
  std::int64_t original_max_position_embeddings = 0;  ///< llama3, yarn, longrope
  double beta_fast = 32.0, beta_slow = 1.0;           ///< yarn
  bool truncate = true;                               ///< yarn
  double attention_factor = 1.0;  ///< yarn, longrope: cos and sin are multiplied by it (resolved when parsing)
  std::vector<double> short_factor, long_factor;  ///< longrope, rotary_dim / 2 each
  /// dynamic and longrope: the tables depend on the longest position of each forward.
  bool depends_on_length() const { return type == "dynamic" || type == "longrope"; }
};

/// generation_config.json as transformers applies it: keys that are absent keep GenerationConfig's defaults
/// (do_sample false, temperature 1, top_k 50, top_p 1, repetition_penalty 1). `lal generate` and the LanguageModel
/// service use these unless the user or the pipeline gives a value (Engine::sampling_for()).
struct GenerationDefaults {
  bool from_file = false;  ///< generation_config.json was present
  bool do_sample = false;
  double temperature = 1.0;
  std::int64_t top_k = 50;
  double top_p = 1.0;
  double min_p = 0.0;
  double repetition_penalty = 1.0;
  std::int64_t max_new_tokens = 0;  ///< 0 = not given
  std::int64_t min_new_tokens = 0;
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
  RopeConfig rope;
  double norm_eps = 1e-6;
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  ///< q/k/v projections (or the fused one) have a bias
  bool o_bias = false;    ///< output projection has a bias
  bool mlp_bias = false;
  bool parallel_residual = false;  ///< gpt_neox use_parallel_residual
  /// 0 = no layer uses a sliding window; otherwise the window of the layers that do (qwen2 with use_sliding_window,
  /// layer_types "sliding_attention"; phi3 sliding_window). Attention is exact up to this many tokens; the engine
  /// refuses longer sequences (sliding-window masking is not implemented).
  std::int64_t sliding_window = 0;
  std::string torch_dtype;                  ///< as written ("bfloat16", ...), may be empty
  std::vector<std::int64_t> eos_token_ids;  ///< from config.json and generation_config.json, deduplicated
  std::int64_t bos_token_id = -1;
  std::int64_t pad_token_id = -1;
  GenerationDefaults generation;
  /// Keys of config.json / generation_config.json that are neither read nor known to be irrelevant ("file: key").
  std::vector<std::string> unknown_keys;

  /// Parse `<dir>/config.json` and, when present, `<dir>/generation_config.json`.
  static ModelConfig from_dir(const std::string& dir);
  /// Parse JSON text; `source` names it in messages.
  static ModelConfig from_json_text(const std::string& text, const std::string& source);
  /// Apply generation_config.json's text (eos/bos/pad ids, sampling defaults); `source` names it in messages.
  void apply_generation_config(const std::string& text, const std::string& source);
};

}  // namespace lal::lm
