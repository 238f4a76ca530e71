// config.json (transformers 4 and 5 dialects) + generation_config.json → ModelConfig: one reading path, the defaults
// of each family's transformers configuration class, strict about everything that changes the arithmetic.
#include "lal/lm/model_config.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "lal/checks/input_limits.hpp"

namespace lal::lm {

namespace fs = std::filesystem;
using nlohmann::json;

const char* family_name(Family f) {
  switch (f) {
    case Family::Llama: return "llama";
    case Family::Qwen2: return "qwen2";
    case Family::Phi3: return "phi3";
    case Family::GptNeoX: return "gpt_neox";
  }
  return "?";
}

namespace {

// config.json keys that do not change inference arithmetic in any supported family: bookkeeping, training-time
// dropout and initialisation, and the generation settings that transformers 4 could store in config.json
// (transformers 5 drops them; generation_config.json is where lal reads generation defaults). The one list.
const std::set<std::string> kIgnoredConfigKeys = {"_name_or_path",
                                                  "name_or_path",
                                                  "architectures",
                                                  "transformers_version",
                                                  "auto_map",
                                                  "model_type",
                                                  "initializer_range",
                                                  "use_cache",
                                                  "attention_dropout",
                                                  "hidden_dropout",
                                                  "embd_pdrop",
                                                  "resid_pdrop",
                                                  "classifier_dropout",
                                                  "is_decoder",
                                                  "is_encoder_decoder",
                                                  "add_cross_attention",
                                                  "tie_encoder_decoder",
                                                  "output_attentions",
                                                  "output_hidden_states",
                                                  "return_dict",
                                                  "use_return_dict",
                                                  "torchscript",
                                                  "pruned_heads",
                                                  "chunk_size_feed_forward",
                                                  "cross_attention_hidden_size",
                                                  "id2label",
                                                  "label2id",
                                                  "num_labels",
                                                  "problem_type",
                                                  "finetuning_task",
                                                  "task_specific_params",
                                                  "tokenizer_class",
                                                  "prefix",
                                                  "sep_token_id",
                                                  "decoder_start_token_id",
                                                  "tf_legacy_loss",
                                                  "use_bfloat16",
                                                  "_attn_implementation_autoset",
                                                  "attn_implementation",
                                                  "_commit_hash",
                                                  "max_length",
                                                  "min_length",
                                                  "do_sample",
                                                  "early_stopping",
                                                  "num_beams",
                                                  "num_beam_groups",
                                                  "diversity_penalty",
                                                  "temperature",
                                                  "top_k",
                                                  "top_p",
                                                  "typical_p",
                                                  "repetition_penalty",
                                                  "length_penalty",
                                                  "no_repeat_ngram_size",
                                                  "encoder_no_repeat_ngram_size",
                                                  "bad_words_ids",
                                                  "num_return_sequences",
                                                  "output_scores",
                                                  "return_dict_in_generate",
                                                  "forced_bos_token_id",
                                                  "forced_eos_token_id",
                                                  "remove_invalid_values",
                                                  "exponential_decay_length_penalty",
                                                  "suppress_tokens",
                                                  "begin_suppress_tokens",
                                                  "transformers.js_config"};

// generation_config.json keys that lal does not need: bookkeeping and settings for features outside greedy/sampled
// decoding of one sequence, whose defaults are what lal does. `max_length` is transformers' total-length cap; lal's
// length limit is max_new_tokens (command line or generation_config.json's max_new_tokens).
const std::set<std::string> kIgnoredGenerationKeys = {"transformers_version",
                                                      "_from_model_config",
                                                      "_commit_hash",
                                                      "max_length",
                                                      "use_cache",
                                                      "output_attentions",
                                                      "output_hidden_states",
                                                      "output_scores",
                                                      "output_logits",
                                                      "return_dict_in_generate",
                                                      "num_return_sequences",
                                                      "length_penalty",
                                                      "early_stopping",
                                                      "cache_implementation",
                                                      "trust_remote_code",
                                                      "decoder_start_token_id",
                                                      "min_length",
                                                      "remove_invalid_values",
                                                      "renormalize_logits",
                                                      "low_memory"};

/// Reads keys of one JSON object, remembering which it read (for the unknown-key report); every refusal names the
/// file and the key.
struct Reader {
  const json& j;
  std::string source;  ///< file (and, for nested objects, the parent key) for messages
  std::set<std::string>* used = nullptr;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(source + ": key \"" + key + "\": " + what);
  }
  bool has(const std::string& key) const {
    if (used) used->insert(key);
    return j.contains(key) && !j[key].is_null();
  }
  std::int64_t integer(const std::string& key, std::int64_t max = std::int64_t{1} << 40) const {
    if (!has(key)) fail(key, "missing (required)");
    if (!j[key].is_number_integer()) fail(key, "expected an integer, got " + j[key].dump());
    const auto v = j[key].get<std::int64_t>();
    if (v <= 0) fail(key, "must be positive, got " + std::to_string(v));
    if (v > max) fail(key, std::to_string(v) + " is out of range (at most " + std::to_string(max) + ")");
    return v;
  }
  std::int64_t integer(const std::string& key, std::int64_t def, std::int64_t max) const {
    return has(key) ? integer(key, max) : def;
  }
  std::int64_t count(const std::string& key, std::int64_t def) const {  // >= 0
    if (!has(key)) return def;
    if (!j[key].is_number_integer() || j[key].get<std::int64_t>() < 0)
      fail(key, "expected a non-negative integer, got " + j[key].dump());
    return j[key].get<std::int64_t>();
  }
  double number(const std::string& key, double def) const {
    if (!has(key)) return def;
    if (!j[key].is_number()) fail(key, "expected a number, got " + j[key].dump());
    const double v = j[key].get<double>();
    if (!std::isfinite(v)) fail(key, "must be finite, got " + j[key].dump());
    return v;
  }
  double positive(const std::string& key, double def) const {
    const double v = number(key, def);
    if (!(v > 0)) fail(key, "must be > 0, got " + j[key].dump());
    return v;
  }
  double required_positive(const std::string& key) const {
    if (!has(key)) fail(key, "missing (required for this rope type)");
    return positive(key, 0);
  }
  double probability(const std::string& key, double def) const {
    const double v = number(key, def);
    if (v < 0 || v > 1) fail(key, "must be in [0, 1], got " + j[key].dump());
    return v;
  }
  bool boolean(const std::string& key, bool def) const {
    if (!has(key)) return def;
    if (!j[key].is_boolean()) fail(key, "expected true/false, got " + j[key].dump());
    return j[key].get<bool>();
  }
  std::string string(const std::string& key, const std::string& def) const {
    if (!has(key)) return def;
    if (!j[key].is_string()) fail(key, "expected a string, got " + j[key].dump());
    return j[key].get<std::string>();
  }
  std::vector<std::int64_t> ids(const std::string& key) const {
    std::vector<std::int64_t> out;
    if (!has(key)) return out;
    if (j[key].is_number_integer()) {
      out = {j[key].get<std::int64_t>()};
    } else {
      if (!j[key].is_array()) fail(key, "expected a token id or a list of ids, got " + j[key].dump());
      for (const auto& v : j[key]) {
        if (!v.is_number_integer()) fail(key, "expected integer token ids, got " + j[key].dump());
        out.push_back(v.get<std::int64_t>());
      }
    }
    for (auto id : out)
      if (id < 0) fail(key, "token ids must be >= 0, got " + j[key].dump());
    return out;
  }
  std::int64_t id(const std::string& key) const {
    const auto v = ids(key);
    if (v.size() > 1) fail(key, "expected one token id, got " + j[key].dump());
    return v.empty() ? -1 : v[0];
  }
  std::vector<double> numbers(const std::string& key) const {
    if (!has(key)) fail(key, "missing (required for this rope type)");
    if (!j[key].is_array()) fail(key, "expected a list of numbers, got " + j[key].dump());
    std::vector<double> out;
    for (const auto& v : j[key]) {
      if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() <= 0)
        fail(key, "expected positive finite numbers, got " + v.dump());
      out.push_back(v.get<double>());
    }
    return out;
  }
  /// Keys present in the object that were not read and are not in `ignored`, as "source: key".
  void report_unknown(const std::set<std::string>& ignored, std::vector<std::string>& into) const {
    for (auto it = j.begin(); it != j.end(); ++it)
      if (!used->count(it.key()) && !ignored.count(it.key())) into.push_back(source + ": " + it.key());
  }
};

json parse_text(const std::string& text, const std::string& source) {
  try {
    return checks::parse_json_limited(text, source);  // bounded nesting (LAL_MAX_JSON_DEPTH)
  } catch (const checks::InputLimitError& e) {
    throw ConfigError(e.what());
  } catch (const json::parse_error& e) {
    throw ConfigError(source + ": not valid JSON (at byte " + std::to_string(e.byte) + "): " + e.what());
  } catch (const json::exception& e) {  // e.g. a number that overflows a double
    throw ConfigError(source + ": not valid JSON: " + e.what());
  }
}

json parse_file(const std::string& path) {
  std::string text;
  try {
    text = checks::read_file_limited(path, checks::limits::model_config_file);  // /dev/zero fails fast
  } catch (const std::runtime_error& e) {
    throw ConfigError(e.what());
  }
  return parse_text(text, path);
}

void add_ids(std::vector<std::int64_t>& into, const std::vector<std::int64_t>& ids) {
  for (auto id : ids) {
    bool seen = false;
    for (auto e : into) seen = seen || e == id;
    if (!seen) into.push_back(id);
  }
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& e : v) s += (s.empty() ? "" : ", ") + e;
  return s;
}

/// transformers' yarn get_mscale.
double yarn_mscale(double scale, double mscale) { return scale <= 1 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0; }

/// The rotary embedding of config.json `j`, from transformers 5's `rope_parameters` or transformers 4's `rope_theta`
/// / `rope_scaling` / `rotary_emb_base` / `rotary_pct` / `partial_rotary_factor`, resolved as transformers 5's
/// convert_rope_params_to_dict + standardize_rope_params do. Sets c.rope and c.rotary_dim.
void read_rope(const Reader& r, ModelConfig& c, const std::vector<std::string>& layer_types) {
  const json& j = r.j;
  // transformers: `rope_scaling or rope_parameters` — the legacy key wins when both are given.
  std::string dict_key;
  const bool legacy = r.has("rope_scaling") && !j["rope_scaling"].empty();
  const bool current = r.has("rope_parameters") && !j["rope_parameters"].empty();
  if (legacy)
    dict_key = "rope_scaling";
  else if (current)
    dict_key = "rope_parameters";
  static const json kEmpty = json::object();
  const json& d = dict_key.empty() ? kEmpty : j[dict_key];
  if (!d.is_object()) r.fail(dict_key, "expected an object or null, got " + d.dump());
  std::set<std::string> d_used;
  const Reader p{d, r.source + " (" + dict_key + ")", &d_used};
  for (const auto& lt : layer_types)
    if (d.contains(lt))
      r.fail(dict_key, "per-layer-type rotary parameters (\"" + lt +
                           "\": ...) are not supported; lal implements one rotary embedding for all layers");

  RopeConfig& rope = c.rope;
  const bool neox = c.family == Family::GptNeoX;
  // theta
  if (p.has("rope_theta")) {
    rope.theta = p.positive("rope_theta", 0);
  } else if (neox && r.has("rotary_emb_base")) {
    rope.theta = r.positive("rotary_emb_base", 0);
    if (r.has("rope_theta") && r.number("rope_theta", 0) != rope.theta)
      r.fail("rope_theta", r.j["rope_theta"].dump() + " disagrees with \"rotary_emb_base\" " +
                               r.j["rotary_emb_base"].dump() + "; give one of them");
  } else {
    rope.theta = r.positive("rope_theta", 10000.0);
  }
  // rotary fraction
  double fraction = 1.0;
  std::string fraction_key = "partial_rotary_factor";
  if (p.has("partial_rotary_factor")) {
    fraction = p.number("partial_rotary_factor", 1.0);
    fraction_key = dict_key + ".partial_rotary_factor";
    if (r.has("partial_rotary_factor") && r.number("partial_rotary_factor", 1.0) != fraction)
      r.fail("partial_rotary_factor", r.j["partial_rotary_factor"].dump() + " disagrees with " + fraction_key + " " +
                                          d["partial_rotary_factor"].dump());
  } else if (neox && r.has("rotary_pct")) {
    fraction = r.number("rotary_pct", 0.25);
    fraction_key = "rotary_pct";
  } else {
    fraction = r.number("partial_rotary_factor", neox ? 0.25 : 1.0);
    if (neox && !r.has("partial_rotary_factor")) fraction_key = "rotary_pct";  // its default, 0.25
  }
  if (!(fraction > 0.0 && fraction <= 1.0)) r.fail(fraction_key, "must be in (0, 1], got " + std::to_string(fraction));
  if (fraction != 1.0 && (c.family == Family::Llama || c.family == Family::Qwen2))
    r.fail(fraction_key, std::to_string(fraction) + ": partial rotary embeddings are not part of the " + c.model_type +
                             " architecture (supported: 1.0; phi3 and gpt_neox take a fraction)");
  c.rotary_dim = static_cast<std::int64_t>(static_cast<double>(c.head_dim) * fraction);
  if (c.rotary_dim % 2 != 0 || c.rotary_dim == 0)
    r.fail(fraction_key, "gives an odd or zero rotary dimension " + std::to_string(c.rotary_dim) + " (head_dim " +
                             std::to_string(c.head_dim) + ")");

  // type
  std::string type = p.has("rope_type") ? p.string("rope_type", "default") : p.string("type", "default");
  if (c.family == Family::Phi3 && (type == "su" || type == "yarn")) type = "longrope";  // transformers' phi3 BC
  static const std::vector<std::string> kTypes = {"default", "linear", "dynamic", "llama3", "yarn", "longrope"};
  const std::vector<std::string> allowed =
      c.family == Family::Phi3 ? std::vector<std::string>{"default", "longrope"} : kTypes;
  bool ok = false;
  for (const auto& a : allowed) ok = ok || a == type;
  if (!ok)
    r.fail(dict_key + ".rope_type",
           "\"" + type + "\" is not supported for " + c.model_type + " (supported: " + join(allowed) + ")");
  rope.type = type;

  auto original_max = [&]() -> std::int64_t {
    // Phi3 keeps the pretraining length at the top level, and transformers gives that (or its class default, 4096)
    // priority over rope_parameters' copy.
    if (c.family == Family::Phi3) {
      p.integer("original_max_position_embeddings", 1, 1ll << 31);  // checked, then overridden as in transformers
      return r.integer("original_max_position_embeddings", 4096, 1ll << 31);
    }
    return p.integer("original_max_position_embeddings", c.max_position_embeddings, 1ll << 31);
  };
  const std::string where = dict_key.empty() ? "rope_parameters" : dict_key;
  if (type == "linear" || type == "dynamic") {
    rope.factor = p.required_positive("factor");
  } else if (type == "llama3") {
    rope.factor = p.required_positive("factor");
    rope.low_freq_factor = p.required_positive("low_freq_factor");
    rope.high_freq_factor = p.required_positive("high_freq_factor");
    if (!(rope.high_freq_factor > rope.low_freq_factor))
      p.fail("high_freq_factor", "must be greater than low_freq_factor " + std::to_string(rope.low_freq_factor));
    rope.original_max_position_embeddings = original_max();
  } else if (type == "yarn") {
    rope.original_max_position_embeddings = original_max();
    rope.factor = p.has("factor") ? p.positive("factor", 1.0)
                                  : static_cast<double>(c.max_position_embeddings) /
                                        static_cast<double>(rope.original_max_position_embeddings);
    const double mscale = p.number("mscale", 0), mscale_all_dim = p.number("mscale_all_dim", 0);
    if (p.has("attention_factor"))
      rope.attention_factor = p.positive("attention_factor", 1.0);
    else if (mscale != 0 && mscale_all_dim != 0)
      rope.attention_factor = yarn_mscale(rope.factor, mscale) / yarn_mscale(rope.factor, mscale_all_dim);
    else
      rope.attention_factor = yarn_mscale(rope.factor, 1.0);
    // transformers: `get("beta_fast") or 32` — 0 and null both mean the default.
    rope.beta_fast = p.number("beta_fast", 0) != 0 ? p.number("beta_fast", 0) : 32.0;
    rope.beta_slow = p.number("beta_slow", 0) != 0 ? p.number("beta_slow", 0) : 1.0;
    if (rope.beta_fast <= 0 || rope.beta_slow <= 0) p.fail("beta_fast", "beta_fast and beta_slow must be > 0");
    rope.truncate = p.boolean("truncate", true);
  } else if (type == "longrope") {
    rope.original_max_position_embeddings = original_max();
    rope.short_factor = p.numbers("short_factor");
    rope.long_factor = p.numbers("long_factor");
    const auto half = static_cast<std::size_t>(c.rotary_dim / 2);
    if (rope.short_factor.size() != half)
      p.fail("short_factor", "has " + std::to_string(rope.short_factor.size()) + " entries; the rotary dimension " +
                                 std::to_string(c.rotary_dim) + " needs " + std::to_string(half));
    if (rope.long_factor.size() != half)
      p.fail("long_factor", "has " + std::to_string(rope.long_factor.size()) + " entries; the rotary dimension " +
                                std::to_string(c.rotary_dim) + " needs " + std::to_string(half));
    rope.factor = p.has("factor") ? p.positive("factor", 1.0)
                                  : static_cast<double>(c.max_position_embeddings) /
                                        static_cast<double>(rope.original_max_position_embeddings);
    if (p.has("attention_factor"))
      rope.attention_factor = p.positive("attention_factor", 1.0);
    else if (rope.factor <= 1.0)
      rope.attention_factor = 1.0;
    else
      rope.attention_factor =
          std::sqrt(1 + std::log(rope.factor) / std::log(static_cast<double>(rope.original_max_position_embeddings)));
  }
  // Anything else in the rotary object changes the embedding in a way lal does not implement.
  static const std::set<std::string> kRopeBookkeeping = {"rope_type", "type"};
  for (auto it = d.begin(); it != d.end(); ++it)
    if (!d_used.count(it.key()) && !kRopeBookkeeping.count(it.key()))
      r.fail(where + "." + it.key(), it.value().dump() + " is not used by rope_type \"" + type +
                                         "\" as lal implements it; refusing rather than ignoring it");
}

/// Which layers use a sliding window, and its size (0: none), as transformers' configuration classes decide.
std::int64_t read_sliding_window(const Reader& r, const ModelConfig& c, std::vector<std::string>& layer_types) {
  if (r.has("layer_types")) {
    const json& lt = r.j["layer_types"];
    if (!lt.is_array() || static_cast<std::int64_t>(lt.size()) != c.num_layers)
      r.fail("layer_types", "expected a list of " + std::to_string(c.num_layers) + " layer types, got " + lt.dump());
    for (const auto& t : lt) {
      if (!t.is_string() || (t != "full_attention" && t != "sliding_attention"))
        r.fail("layer_types", t.dump() + " is not supported (supported: \"full_attention\", \"sliding_attention\")");
      layer_types.push_back(t.get<std::string>());
    }
  }
  auto any_sliding = [&] {
    for (const auto& t : layer_types)
      if (t == "sliding_attention") return true;
    return false;
  };
  switch (c.family) {
    case Family::Qwen2: {
      const bool use = r.boolean("use_sliding_window", false);
      const std::int64_t window = r.has("sliding_window") ? r.integer("sliding_window") : (use ? 4096 : 0);
      const std::int64_t first_sliding = r.count("max_window_layers", 28);
      if (!use) return 0;  // transformers: sliding_window = None unless use_sliding_window
      if (window == 0) return 0;
      if (layer_types.empty())
        for (std::int64_t i = 0; i < c.num_layers; ++i)
          layer_types.push_back(i >= first_sliding ? "sliding_attention" : "full_attention");
      return any_sliding() ? window : 0;
    }
    case Family::Phi3:
      if (!layer_types.empty() && any_sliding()) r.fail("layer_types", "phi3 does not take per-layer attention types");
      return r.has("sliding_window") ? r.integer("sliding_window") : 0;
    case Family::Llama:
    case Family::GptNeoX:
      if (any_sliding())
        r.fail("layer_types", "\"sliding_attention\" is not part of the " + c.model_type + " architecture");
      if (r.has("sliding_window") || r.has("use_sliding_window"))
        r.fail(r.has("sliding_window") ? "sliding_window" : "use_sliding_window",
               "is not part of the " + c.model_type + " architecture");
      return 0;
  }
  return 0;
}

ModelConfig parse(const json& j, const std::string& source) {
  if (!j.is_object()) throw ConfigError(source + ": top level is not a JSON object");
  std::set<std::string> used;
  const Reader r{j, source, &used};
  ModelConfig c;
  c.source = source;
  c.model_type = r.string("model_type", "");
  if (c.model_type == "llama")
    c.family = Family::Llama;
  else if (c.model_type == "qwen2")
    c.family = Family::Qwen2;
  else if (c.model_type == "phi3")
    c.family = Family::Phi3;
  else if (c.model_type == "gpt_neox")
    c.family = Family::GptNeoX;
  else
    r.fail("model_type", c.model_type.empty() ? "missing"
                                              : "unsupported architecture \"" + c.model_type +
                                                    "\" (supported: qwen2, llama, phi3, gpt_neox)");
  if (r.has("quantization_config")) {
    const json& q = j["quantization_config"];
    r.fail("quantization_config",
           "quantized checkpoints (quant_method " +
               (q.is_object() && q.contains("quant_method") ? q["quant_method"].dump() : q.dump()) +
               ") are not supported: lal reads F32/F16/BF16 weights (lal's own int8/int4 "
               "weights: --quantize)");
  }

  constexpr std::int64_t kMaxDim = std::int64_t{1} << 20, kMaxVocab = std::int64_t{1} << 24;
  c.vocab_size = r.integer("vocab_size", kMaxVocab);
  c.hidden_size = r.integer("hidden_size", kMaxDim);
  c.intermediate_size = r.integer("intermediate_size", kMaxDim * 4);
  c.num_layers = r.integer("num_hidden_layers", 1 << 12);
  c.num_heads = r.integer("num_attention_heads", 1 << 12);
  c.num_kv_heads = c.family == Family::GptNeoX ? c.num_heads : r.integer("num_key_value_heads", c.num_heads, 1 << 12);
  if (c.num_heads % c.num_kv_heads != 0)
    r.fail("num_key_value_heads",
           std::to_string(c.num_kv_heads) + " does not divide num_attention_heads " + std::to_string(c.num_heads));
  if (c.family != Family::GptNeoX && r.has("head_dim")) {
    c.head_dim = r.integer("head_dim", 1 << 14);
  } else {
    if (c.hidden_size % c.num_heads != 0)
      r.fail("num_attention_heads",
             std::to_string(c.num_heads) + " does not divide hidden_size " + std::to_string(c.hidden_size));
    c.head_dim = c.hidden_size / c.num_heads;
  }
  c.max_position_embeddings = r.integer("max_position_embeddings", 2048, std::int64_t{1} << 31);
  const std::string dtype_key = r.has("dtype") ? "dtype" : "torch_dtype";
  c.torch_dtype = r.string(dtype_key, "");
  if (r.has("dtype") && r.has("torch_dtype") && r.string("torch_dtype", "") != c.torch_dtype)
    r.fail("torch_dtype", "\"" + r.string("torch_dtype", "") + "\" disagrees with \"dtype\" \"" + c.torch_dtype + "\"");
  static const std::set<std::string> kDtypes = {"", "float32", "float", "float16", "half", "bfloat16", "auto"};
  if (!kDtypes.count(c.torch_dtype))
    r.fail(dtype_key, "\"" + c.torch_dtype + "\" is not supported (float32, float16, bfloat16)");
  c.eos_token_ids = r.ids("eos_token_id");
  c.bos_token_id = r.id("bos_token_id");
  c.pad_token_id = r.id("pad_token_id");

  switch (c.family) {
    case Family::Llama:
      c.norm_eps = r.positive("rms_norm_eps", 1e-6);
      c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
      c.mlp_bias = r.boolean("mlp_bias", false);
      c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
      c.hidden_act = r.string("hidden_act", "silu");
      r.integer("pretraining_tp", 1, 1 << 12);  // transformers 4 split the matmuls by it: the same products
      break;
    case Family::Qwen2:
      c.norm_eps = r.positive("rms_norm_eps", 1e-6);
      c.qkv_bias = true;
      c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
      c.hidden_act = r.string("hidden_act", "silu");
      break;
    case Family::Phi3:
      c.norm_eps = r.positive("rms_norm_eps", 1e-5);
      c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
      c.hidden_act = r.string("hidden_act", "silu");
      r.integer("original_max_position_embeddings", 4096, 1ll << 31);  // used by longrope (read_rope)
      if (r.boolean("attention_bias", false))                          // Phi-3 configs of transformers 4 carry `false`
        r.fail("attention_bias", "true: phi3 has no attention biases (supported: false)");
      break;
    case Family::GptNeoX:
      c.norm_eps = r.positive("layer_norm_eps", 1e-5);
      c.qkv_bias = c.o_bias = r.boolean("attention_bias", true);
      c.mlp_bias = true;
      c.parallel_residual = r.boolean("use_parallel_residual", true);
      c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
      c.hidden_act = r.string("hidden_act", "gelu");
      break;
  }
  static const char* kActs[] = {"silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu"};
  bool act_ok = false;
  for (const char* a : kActs) act_ok = act_ok || c.hidden_act == a;
  if (!act_ok)
    r.fail("hidden_act", "unsupported activation \"" + c.hidden_act +
                             "\" (supported: silu, swish, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu)");

  std::vector<std::string> layer_types;
  c.sliding_window = read_sliding_window(r, c, layer_types);
  read_rope(r, c, {"full_attention", "sliding_attention"});
  r.report_unknown(kIgnoredConfigKeys, c.unknown_keys);
  return c;
}

}  // namespace

ModelConfig ModelConfig::from_json_text(const std::string& text, const std::string& source) {
  return parse(parse_text(text, source), source);
}

void ModelConfig::apply_generation_config(const std::string& text, const std::string& source) {
  const json g = parse_text(text, source);
  if (!g.is_object()) throw ConfigError(source + ": top level is not a JSON object");
  std::set<std::string> used;
  const Reader r{g, source, &used};
  add_ids(eos_token_ids, r.ids("eos_token_id"));
  const auto bos = r.id("bos_token_id"), pad = r.id("pad_token_id");
  if (bos_token_id < 0) bos_token_id = bos;
  if (pad_token_id < 0) pad_token_id = pad;
  GenerationDefaults& d = generation;
  d.from_file = true;
  d.do_sample = r.boolean("do_sample", false);
  d.temperature = r.number("temperature", 1.0);
  if (d.temperature < 0) r.fail("temperature", "must be >= 0, got " + g["temperature"].dump());
  d.top_k = r.count("top_k", 50);
  d.top_p = r.probability("top_p", 1.0);
  d.min_p = r.probability("min_p", 0.0);
  d.repetition_penalty = r.positive("repetition_penalty", 1.0);
  d.max_new_tokens = r.count("max_new_tokens", 0);
  d.min_new_tokens = r.count("min_new_tokens", 0);
  // Settings that change what transformers generates and that lal does not implement: refuse unless neutral.
  if (r.integer("num_beams", 1, 1 << 16) != 1)
    r.fail("num_beams", g["num_beams"].dump() + ": beam search is not implemented (supported: 1)");
  if (r.integer("num_beam_groups", 1, 1 << 16) != 1)
    r.fail("num_beam_groups", g["num_beam_groups"].dump() + ": group beam search is not implemented (supported: 1)");
  if (r.probability("typical_p", 1.0) != 1.0)
    r.fail("typical_p", g["typical_p"].dump() + ": typical sampling is not implemented (supported: 1.0)");
  if (r.number("epsilon_cutoff", 0.0) != 0.0 || r.number("eta_cutoff", 0.0) != 0.0)
    r.fail(r.has("epsilon_cutoff") ? "epsilon_cutoff" : "eta_cutoff", "truncation sampling is not implemented");
  if (r.count("no_repeat_ngram_size", 0) != 0)
    r.fail("no_repeat_ngram_size", g["no_repeat_ngram_size"].dump() + ": not implemented (supported: 0)");
  if (r.number("diversity_penalty", 0.0) != 0.0) r.fail("diversity_penalty", "not implemented (supported: 0)");
  if (r.number("encoder_repetition_penalty", 1.0) != 1.0)
    r.fail("encoder_repetition_penalty", "not implemented (supported: 1.0)");
  for (const char* key : {"bad_words_ids", "sequence_bias", "suppress_tokens", "begin_suppress_tokens",
                          "forced_bos_token_id", "forced_eos_token_id", "forced_decoder_ids", "guidance_scale",
                          "watermarking_config", "exponential_decay_length_penalty", "stop_strings", "penalty_alpha",
                          "prompt_lookup_num_tokens", "dola_layers"}) {
    if (r.has(key)) r.fail(key, g[key].dump() + " is not implemented by lal's generation; remove it to load");
  }
  r.report_unknown(kIgnoredGenerationKeys, unknown_keys);
}

ModelConfig ModelConfig::from_dir(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(path)) throw ConfigError(path + ": not found (is " + dir + " a Hugging Face model directory?)");
  ModelConfig c = parse(parse_file(path), path);
  const std::string gen = (fs::path(dir) / "generation_config.json").string();
  if (fs::exists(gen)) c.apply_generation_config(parse_file(gen).dump(), gen);
  return c;
}

}  // namespace lal::lm
