#include "lal/train/student_config.hpp"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "lal/train/files.hpp"

namespace lal::train {

using lal::lm::Family;
using lal::lm::ModelConfig;

namespace {
ModelConfig make(Family f, std::int64_t E, std::int64_t I, std::int64_t L, std::int64_t H, std::int64_t KV,
                 double theta, bool tie, std::int64_t max_pos) {
  ModelConfig c;
  c.family = f;
  c.model_type = f == Family::Qwen2 ? "qwen2" : "llama";
  c.hidden_size = E, c.intermediate_size = I, c.num_layers = L, c.num_heads = H, c.num_kv_heads = KV;
  c.head_dim = E / H, c.rotary_dim = E / H;
  c.rope.theta = theta, c.norm_eps = 1e-6, c.tie_word_embeddings = tie, c.max_position_embeddings = max_pos;
  c.qkv_bias = f == Family::Qwen2;
  c.hidden_act = "silu";
  return c;
}
}  // namespace

std::vector<std::string> student_presets() {
  return {"half-teacher", "tiny", "demo", "qwen2.5-0.5b", "qwen2.5-1.5b", "llama-1b"};
}

ModelConfig student_config(const std::string& spec, const ModelConfig* teacher, std::int64_t vocab_size,
                           bool* prefers_teacher_init) {
  ModelConfig c;
  bool teacher_init = false;
  if (spec == "half-teacher") {
    if (!teacher) throw std::runtime_error("--student_config half-teacher needs a teacher; pick a preset or a file");
    if (teacher->family != Family::Qwen2 && teacher->family != Family::Llama)
      throw std::runtime_error("--student_config half-teacher: the teacher is " + teacher->model_type +
                               "; a student must be qwen2 or llama: give a preset or a config.json");
    c = *teacher;
    c.num_layers = std::max<std::int64_t>(1, teacher->num_layers / 2);
    c.sliding_window = 0;
    teacher_init = true;
  } else if (spec == "tiny") {
    c = make(Family::Qwen2, 64, 176, 2, 4, 2, 1e6, true, 4096);
  } else if (spec == "demo") {
    c = make(Family::Qwen2, 128, 384, 4, 4, 2, 1e6, true, 4096);
  } else if (spec == "qwen2.5-0.5b") {
    c = make(Family::Qwen2, 896, 4864, 24, 14, 2, 1e6, true, 32768);
  } else if (spec == "qwen2.5-1.5b") {
    c = make(Family::Qwen2, 1536, 8960, 28, 12, 2, 1e6, true, 32768);
  } else if (spec == "llama-1b") {
    c = make(Family::Llama, 2048, 8192, 16, 32, 8, 500000.0, true, 131072);
  } else if (std::filesystem::is_regular_file(spec) ||
             std::filesystem::is_regular_file(std::filesystem::path(spec) / "config.json")) {
    const std::string path =
        std::filesystem::is_directory(spec) ? (std::filesystem::path(spec) / "config.json").string() : spec;
    c = ModelConfig::from_json_text(read_file(path), path);
    if (c.family != Family::Qwen2 && c.family != Family::Llama)
      throw std::runtime_error(path + ": \"model_type\": a student must be qwen2 or llama, not " + c.model_type);
  } else {
    std::string names;
    for (const auto& p : student_presets()) names += (names.empty() ? "" : ", ") + p;
    throw std::runtime_error("--student_config: '" + spec + "' is neither a file nor a preset (" + names + ")");
  }
  if (vocab_size > 0) c.vocab_size = vocab_size;
  if (c.vocab_size <= 0) throw std::runtime_error("--student_config " + spec + ": no vocabulary size");
  if (c.family == Family::Qwen2 && c.head_dim * c.num_heads != c.hidden_size)
    throw std::runtime_error("--student_config " + spec + ": a qwen2 student needs head_dim x heads == hidden_size");
  if (c.rope.type != "default" && c.rope.type != "linear" && c.rope.type != "llama3")
    throw std::runtime_error("--student_config " + spec + ": rope type \"" + c.rope.type +
                             "\" is not supported for a student (default, linear, llama3)");
  c.source = spec;
  if (prefers_teacher_init) *prefers_teacher_init = teacher_init;
  return c;
}

std::vector<std::int64_t> teacher_layer_subset(std::int64_t teacher_layers, std::int64_t student_layers) {
  if (student_layers > teacher_layers)
    throw std::runtime_error("the student has " + std::to_string(student_layers) + " layers but the teacher only " +
                             std::to_string(teacher_layers) + ": cannot initialise from teacher layers");
  std::vector<std::int64_t> out;
  for (std::int64_t i = 0; i < student_layers; ++i)
    out.push_back(student_layers == 1 ? 0
                                      : (i * (teacher_layers - 1) + (student_layers - 1) / 2) / (student_layers - 1));
  return out;
}

std::string hf_config_json(const ModelConfig& c, const std::string& torch_dtype) {
  nlohmann::ordered_json j;
  const bool qwen = c.family == Family::Qwen2;
  j["architectures"] = {qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = qwen ? "qwen2" : "llama";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_attention_heads"] = c.num_heads;
  j["num_key_value_heads"] = c.num_kv_heads;
  if (!qwen) j["head_dim"] = c.head_dim;
  j["hidden_act"] = c.hidden_act;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.norm_eps;
  j["rope_theta"] = c.rope.theta;
  if (c.rope.type == "default") {
    j["rope_scaling"] = nullptr;
  } else if (c.rope.type == "linear") {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope.factor}};
  } else {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", c.rope.factor},
                         {"low_freq_factor", c.rope.low_freq_factor},
                         {"high_freq_factor", c.rope.high_freq_factor},
                         {"original_max_position_embeddings", c.rope.original_max_position_embeddings}};
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (!qwen) {
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  } else {
    j["use_sliding_window"] = false;
    j["sliding_window"] = c.max_position_embeddings;
    j["max_window_layers"] = c.num_layers;
  }
  j["attention_dropout"] = 0.0;
  j["initializer_range"] = 0.02;
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1)
    j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty())
    j["eos_token_id"] = c.eos_token_ids;
  if (c.pad_token_id >= 0) j["pad_token_id"] = c.pad_token_id;
  j["torch_dtype"] = torch_dtype;
  j["use_cache"] = true;
  j["transformers_version"] = "4.45.0";
  return j.dump(2) + "\n";
}

std::int64_t parameter_count(const ModelConfig& c) {
  const auto E = c.hidden_size, I = c.intermediate_size, H = c.num_heads, KV = c.num_kv_heads, D = c.head_dim;
  std::int64_t layer = E * H * D + 2 * E * KV * D + H * D * E + 3 * E * I + 2 * E;
  if (c.qkv_bias) layer += H * D + 2 * KV * D;
  return c.vocab_size * E * (c.tie_word_embeddings ? 1 : 2) + c.num_layers * layer + E;
}

}  // namespace lal::train
