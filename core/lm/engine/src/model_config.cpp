// config.json → ModelConfig, family by family, with the defaults of each transformers configuration class.
#include "lal/lm/model_config.hpp"

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

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

struct Reader {
  const json& j;
  const std::string& source;

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(source + ": key \"" + key + "\": " + what);
  }
  bool has(const std::string& key) const { return j.contains(key) && !j[key].is_null(); }
  std::int64_t integer(const std::string& key) const {
    if (!has(key)) fail(key, "missing (required)");
    if (!j[key].is_number_integer()) fail(key, "expected an integer, got " + j[key].dump());
    const auto v = j[key].get<std::int64_t>();
    if (v <= 0) fail(key, "must be positive, got " + std::to_string(v));
    return v;
  }
  std::int64_t integer(const std::string& key, std::int64_t def) const { return has(key) ? integer(key) : def; }
  double number(const std::string& key, double def) const {
    if (!has(key)) return def;
    if (!j[key].is_number()) fail(key, "expected a number, got " + j[key].dump());
    return j[key].get<double>();
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
    if (j[key].is_number_integer()) return {j[key].get<std::int64_t>()};
    if (!j[key].is_array()) fail(key, "expected a token id or a list of ids, got " + j[key].dump());
    for (const auto& v : j[key]) {
      if (!v.is_number_integer()) fail(key, "expected integer token ids, got " + j[key].dump());
      out.push_back(v.get<std::int64_t>());
    }
    return out;
  }
};

json parse_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw ConfigError(path + ": not valid JSON (at byte " + std::to_string(e.byte) + "): " + e.what());
  }
}

void add_ids(std::vector<std::int64_t>& into, const std::vector<std::int64_t>& ids) {
  for (auto id : ids) {
    bool seen = false;
    for (auto e : into) seen = seen || e == id;
    if (!seen) into.push_back(id);
  }
}

ModelConfig parse(const json& j, const std::string& source) {
  if (!j.is_object()) throw ConfigError(source + ": top level is not a JSON object");
  const Reader r{j, source};
  ModelConfig c;
  c.source = source;
  c.model_type = r.string("model_type", "");
  if (c.model_type == "llama") c.family = Family::Llama;
  else if (c.model_type == "qwen2") c.family = Family::Qwen2;
  else if (c.model_type == "phi3") c.family = Family::Phi3;
  else if (c.model_type == "gpt_neox") c.family = Family::GptNeoX;
  else
    r.fail("model_type", c.model_type.empty() ? "missing" : "unsupported architecture \"" + c.model_type +
                                                   "\" (supported: qwen2, llama, phi3, gpt_neox)");

  c.vocab_size = r.integer("vocab_size");
  c.hidden_size = r.integer("hidden_size");
  c.intermediate_size = r.integer("intermediate_size");
  c.num_layers = r.integer("num_hidden_layers");
  c.num_heads = r.integer("num_attention_heads");
  c.num_kv_heads = c.family == Family::GptNeoX ? c.num_heads : r.integer("num_key_value_heads", c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    r.fail("num_key_value_heads", std::to_string(c.num_kv_heads) + " does not divide num_attention_heads " +
                                      std::to_string(c.num_heads));
  if (c.family != Family::GptNeoX && r.has("head_dim")) {
    c.head_dim = r.integer("head_dim");
  } else {
    if (c.hidden_size % c.num_heads != 0)
      r.fail("num_attention_heads", "does not divide hidden_size " + std::to_string(c.hidden_size));
    c.head_dim = c.hidden_size / c.num_heads;
  }
  c.max_position_embeddings = r.integer("max_position_embeddings", 2048);
  c.torch_dtype = r.has("torch_dtype") ? r.string("torch_dtype", "") : r.string("dtype", "");
  c.eos_token_ids = r.ids("eos_token_id");
  if (r.has("bos_token_id")) c.bos_token_id = r.ids("bos_token_id").empty() ? -1 : r.ids("bos_token_id")[0];
  if (r.has("pad_token_id")) c.pad_token_id = r.ids("pad_token_id").empty() ? -1 : r.ids("pad_token_id")[0];

  double rotary_fraction = 1.0;
  switch (c.family) {
    case Family::Llama:
      c.rope_theta = r.number("rope_theta", 10000.0);
      c.norm_eps = r.number("rms_norm_eps", 1e-6);
      c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
      c.mlp_bias = r.boolean("mlp_bias", false);
      c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
      c.hidden_act = r.string("hidden_act", "silu");
      break;
    case Family::Qwen2:
      c.rope_theta = r.number("rope_theta", 10000.0);
      c.norm_eps = r.number("rms_norm_eps", 1e-6);
      c.qkv_bias = true;
      c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
      c.hidden_act = r.string("hidden_act", "silu");
      if (r.boolean("use_sliding_window", false)) c.sliding_window = r.integer("sliding_window", 4096);
      break;
    case Family::Phi3:
      c.rope_theta = r.number("rope_theta", 10000.0);
      c.norm_eps = r.number("rms_norm_eps", 1e-5);
      c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
      c.hidden_act = r.string("hidden_act", "silu");
      rotary_fraction = r.number("partial_rotary_factor", 1.0);
      if (r.has("sliding_window")) c.sliding_window = r.integer("sliding_window");
      break;
    case Family::GptNeoX:
      c.rope_theta = r.has("rope_theta") ? r.number("rope_theta", 10000.0) : r.number("rotary_emb_base", 10000.0);
      c.norm_eps = r.number("layer_norm_eps", 1e-5);
      c.qkv_bias = c.o_bias = r.boolean("attention_bias", true);
      c.mlp_bias = true;
      c.parallel_residual = r.boolean("use_parallel_residual", true);
      c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
      c.hidden_act = r.string("hidden_act", "gelu");
      rotary_fraction = r.number("rotary_pct", 0.25);
      break;
  }
  if (!(rotary_fraction > 0.0 && rotary_fraction <= 1.0))
    r.fail(c.family == Family::GptNeoX ? "rotary_pct" : "partial_rotary_factor", "must be in (0, 1]");
  c.rotary_dim = static_cast<std::int64_t>(static_cast<double>(c.head_dim) * rotary_fraction);
  if (c.rotary_dim % 2 != 0 || c.rotary_dim == 0)
    r.fail(c.family == Family::GptNeoX ? "rotary_pct" : "partial_rotary_factor",
           "gives an odd or zero rotary dimension " + std::to_string(c.rotary_dim));

  static const char* kActs[] = {"silu", "swish", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu"};
  bool act_ok = false;
  for (const char* a : kActs) act_ok = act_ok || c.hidden_act == a;
  if (!act_ok) r.fail("hidden_act", "unsupported activation \"" + c.hidden_act + "\"");

  if (r.has("rope_scaling")) {
    const json& s = j["rope_scaling"];
    if (!s.is_object()) r.fail("rope_scaling", "expected an object or null");
    const Reader rs{s, source};
    std::string type = s.contains("rope_type") ? rs.string("rope_type", "") : rs.string("type", "");
    if (type == "default" || type.empty()) type.clear();
    else if (type == "linear") c.rope_scaling.factor = rs.number("factor", 1.0);
    else if (type == "llama3") {
      c.rope_scaling.factor = rs.number("factor", 8.0);
      c.rope_scaling.low_freq_factor = rs.number("low_freq_factor", 1.0);
      c.rope_scaling.high_freq_factor = rs.number("high_freq_factor", 4.0);
      c.rope_scaling.original_max_position_embeddings = rs.integer("original_max_position_embeddings", 8192);
    } else
      r.fail("rope_scaling", "type \"" + type + "\" is not supported (supported: linear, llama3)");
    c.rope_scaling.type = type;
  }
  if (r.has("pretraining_tp") && r.integer("pretraining_tp") != 1) {
    // Mathematically identical to tp=1 (transformers only splits the matmuls); nothing to do.
  }
  return c;
}

}  // namespace

ModelConfig ModelConfig::from_json_text(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw ConfigError(source + ": not valid JSON (at byte " + std::to_string(e.byte) + "): " + e.what());
  }
  return parse(j, source);
}

ModelConfig ModelConfig::from_dir(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(path)) throw ConfigError(path + ": not found (is " + dir + " a Hugging Face model directory?)");
  ModelConfig c = parse(parse_file(path), path);
  const std::string gen = (fs::path(dir) / "generation_config.json").string();
  if (fs::exists(gen)) {
    const json g = parse_file(gen);
    if (g.is_object()) {
      const Reader r{g, gen};
      add_ids(c.eos_token_ids, r.ids("eos_token_id"));
      if (c.bos_token_id < 0 && r.has("bos_token_id") && !r.ids("bos_token_id").empty())
        c.bos_token_id = r.ids("bos_token_id")[0];
      if (c.pad_token_id < 0 && r.has("pad_token_id") && !r.ids("pad_token_id").empty())
        c.pad_token_id = r.ids("pad_token_id")[0];
    }
  }
  return c;
}

}  // namespace lal::lm
