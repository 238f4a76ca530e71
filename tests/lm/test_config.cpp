// config.json in the transformers 4 and 5 dialects and generation_config.json: what is read, the defaults of each
// family, the real files transformers writes (tests/lm/hf_configs), and one test per refusal, each naming the file,
// the key and the value.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "lal/lm/model_config.hpp"

using namespace lal::lm;
namespace fs = std::filesystem;

namespace {

const std::string kSizes =
    R"("vocab_size": 10, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4)";

ModelConfig parse(const std::string& model_type, const std::string& extra = "") {
  return ModelConfig::from_json_text("{" + kSizes + R"(, "model_type": ")" + model_type + "\"" + extra + "}",
                                     "/m/config.json");
}

std::string refusal(const std::string& model_type, const std::string& extra) {
  try {
    parse(model_type, extra);
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("not refused: " << model_type << " " << extra);
  return {};
}

std::string generation_refusal(const std::string& text) {
  ModelConfig c = parse("llama");
  try {
    c.apply_generation_config(text, "/m/generation_config.json");
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("not refused: " << text);
  return {};
}

/// The refusal names the file and the key, and says something about the value.
void check_refused(const std::string& model_type, const std::string& extra, const std::string& key,
                   const std::string& value_text) {
  CAPTURE(extra);
  const std::string msg = refusal(model_type, extra);
  CHECK_MESSAGE(msg.find("/m/config.json") != std::string::npos, msg);
  CHECK_MESSAGE(msg.find("key \"" + key + "\"") != std::string::npos, msg);
  CHECK_MESSAGE(msg.find(value_text) != std::string::npos, msg);
}

void check_generation_refused(const std::string& text, const std::string& key, const std::string& value_text) {
  CAPTURE(text);
  const std::string msg = generation_refusal(text);
  CHECK_MESSAGE(msg.find("/m/generation_config.json: key \"" + key + "\"") != std::string::npos, msg);
  CHECK_MESSAGE(msg.find(value_text) != std::string::npos, msg);
}

}  // namespace

TEST_CASE("transformers 4 and transformers 5 spellings give the same ModelConfig") {
  const auto v4 = parse("llama", R"(, "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}, "torch_dtype": "bfloat16")");
  const auto v5 = parse("llama", R"(, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
      "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64}, "dtype": "bfloat16")");
  for (const auto* c : {&v4, &v5}) {
    CHECK(c->rope.type == "llama3");
    CHECK(c->rope.theta == 500000.0);
    CHECK(c->rope.factor == 8.0);
    CHECK(c->rope.original_max_position_embeddings == 64);
    CHECK(c->torch_dtype == "bfloat16");
  }
  // gpt_neox: rotary_pct / rotary_emb_base (4) == rope_parameters.partial_rotary_factor / rope_theta (5)
  const auto n4 = parse("gpt_neox", R"(, "rotary_pct": 0.5, "rotary_emb_base": 20000)");
  const auto n5 = parse("gpt_neox", R"(, "rope_parameters": {"rope_type": "default", "rope_theta": 20000.0,
      "partial_rotary_factor": 0.5}, "attention_bias": true)");
  CHECK(n4.rotary_dim == 2);
  CHECK(n5.rotary_dim == 2);
  CHECK(n4.rope.theta == 20000.0);
  CHECK(n5.rope.theta == 20000.0);
  CHECK(ModelConfig::from_json_text(R"({"model_type": "gpt_neox", "vocab_size": 10, "hidden_size": 32,
      "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4})",
                                    "/m/config.json")
            .rotary_dim == 2);  // the default rotary_pct, 0.25, of head_dim 8
  // qwen2 in transformers 5: theta inside rope_parameters (lal once read 1e4 here)
  CHECK(parse("qwen2", R"(, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0})").rope.theta == 1e6);
  // the legacy key wins when both are present, as in transformers
  CHECK(parse("llama", R"(, "rope_scaling": {"type": "linear", "factor": 2.0},
      "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0})")
            .rope.type == "linear");
}

TEST_CASE("rope types: parameters and attention factors resolved as transformers resolves them") {
  auto y = parse("llama", R"(, "max_position_embeddings": 128, "rope_parameters": {"rope_type": "yarn",
      "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32})");
  CHECK(y.rope.attention_factor == doctest::Approx(0.1 * std::log(4.0) + 1.0));
  CHECK(y.rope.beta_fast == 32.0);
  CHECK(y.rope.beta_slow == 1.0);
  CHECK(y.rope.truncate);
  auto ym = parse("llama", R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "mscale": 2.0,
      "mscale_all_dim": 1.0, "beta_fast": 0})");
  CHECK(ym.rope.attention_factor == doctest::Approx((0.2 * std::log(4.0) + 1.0) / (0.1 * std::log(4.0) + 1.0)));
  CHECK(ym.rope.beta_fast == 32.0);  // `or 32`
  // phi3 longrope: factor from max_position_embeddings / the TOP-LEVEL original_max_position_embeddings
  auto p = parse("phi3", R"(, "max_position_embeddings": 512, "original_max_position_embeddings": 64,
      "rope_scaling": {"type": "su", "short_factor": [1, 1], "long_factor": [2, 3]}, "partial_rotary_factor": 1.0)");
  CHECK(p.rope.type == "longrope");
  CHECK(p.rope.original_max_position_embeddings == 64);
  CHECK(p.rope.attention_factor == doctest::Approx(std::sqrt(1 + std::log(8.0) / std::log(64.0))));
  CHECK(p.rope.long_factor == std::vector<double>{2, 3});
  auto p5 = parse("phi3", R"(, "rope_parameters": {"rope_type": "longrope", "short_factor": [1, 1],
      "long_factor": [2, 3], "original_max_position_embeddings": 16})");
  CHECK(p5.rope.original_max_position_embeddings == 4096);  // transformers' Phi3Config default wins, as there
  auto d = parse("llama", R"(, "rope_scaling": {"type": "dynamic", "factor": 2.0})");
  CHECK(d.rope.depends_on_length());
  CHECK(d.rope.attention_factor == 1.0);
}

TEST_CASE("sliding windows, layer_types, biases, ties, head_dim") {
  CHECK(parse("qwen2", R"(, "sliding_window": 64, "use_sliding_window": false)").sliding_window == 0);
  CHECK(
      parse("qwen2", R"(, "sliding_window": 64, "use_sliding_window": true, "max_window_layers": 1)").sliding_window ==
      64);
  CHECK(
      parse("qwen2", R"(, "sliding_window": 64, "use_sliding_window": true, "max_window_layers": 2)").sliding_window ==
      0);  // no layer at or past max_window_layers
  CHECK(parse("qwen2", R"(, "sliding_window": 64, "use_sliding_window": true,
      "layer_types": ["full_attention", "sliding_attention"])")
            .sliding_window == 64);
  CHECK(parse("qwen2", R"(, "layer_types": ["full_attention", "full_attention"], "sliding_window": null)")
            .sliding_window == 0);
  CHECK(parse("phi3", R"(, "sliding_window": 2047)").sliding_window == 2047);
  const auto l =
      parse("llama", R"(, "attention_bias": true, "mlp_bias": true, "head_dim": 8, "tie_word_embeddings": true)");
  CHECK(l.qkv_bias);
  CHECK(l.o_bias);
  CHECK(l.mlp_bias);
  CHECK(l.head_dim == 8);
  CHECK(l.rotary_dim == 8);
  CHECK(l.tie_word_embeddings);
  CHECK_FALSE(parse("gpt_neox", R"(, "rotary_pct": 0.5, "attention_bias": false)").qkv_bias);
  CHECK_FALSE(parse("gpt_neox", R"(, "rotary_pct": 0.5, "use_parallel_residual": false)").parallel_residual);
}

TEST_CASE("unknown keys are collected, irrelevant ones are not") {
  const auto c = parse("llama", R"(, "initializer_range": 0.02, "architectures": ["LlamaForCausalLM"],
      "use_cache": true, "transformers_version": "5.17.0", "my_new_feature": 3, "attention_dropout": 0.0)");
  REQUIRE(c.unknown_keys.size() == 1);
  CHECK(c.unknown_keys[0] == "/m/config.json: my_new_feature");
  ModelConfig g = parse("llama");
  g.apply_generation_config(
      R"({"transformers_version": "5.17.0", "_from_model_config": true, "cache_implementation": "dynamic",
      "mystery": 1})",
      "/m/generation_config.json");
  REQUIRE(g.unknown_keys.size() == 1);
  CHECK(g.unknown_keys[0] == "/m/generation_config.json: mystery");
}

TEST_CASE("generation_config.json: ids and sampling defaults as transformers applies them") {
  ModelConfig c = parse("llama", R"(, "eos_token_id": 2)");
  CHECK_FALSE(c.generation.from_file);
  CHECK_FALSE(c.generation.do_sample);
  CHECK(c.generation.top_k == 50);
  c.apply_generation_config(R"({"eos_token_id": [2, 7], "bos_token_id": 1, "pad_token_id": 0, "do_sample": true,
      "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05, "max_new_tokens": 300})",
                            "/m/generation_config.json");
  CHECK(c.eos_token_ids == std::vector<std::int64_t>{2, 7});
  CHECK(c.bos_token_id == 1);
  CHECK(c.pad_token_id == 0);
  CHECK(c.generation.from_file);
  CHECK(c.generation.do_sample);
  CHECK(c.generation.temperature == 0.7);
  CHECK(c.generation.top_p == 0.8);
  CHECK(c.generation.top_k == 20);
  CHECK(c.generation.repetition_penalty == 1.05);
  CHECK(c.generation.max_new_tokens == 300);
  ModelConfig d = parse("llama");
  d.apply_generation_config(R"({"do_sample": true, "temperature": 0.6, "top_p": 0.9})", "/m/generation_config.json");
  CHECK(d.generation.top_k == 50);  // transformers' default where the file is silent
  CHECK(d.generation.repetition_penalty == 1.0);
}

TEST_CASE("the config.json files transformers writes (tests/lm/hf_configs) all load") {
  int n = 0;
  for (const char* dialect : {"transformers4", "transformers5"}) {
    for (const auto& e : fs::directory_iterator(fs::path(LAL_HF_CONFIGS_DIR) / dialect)) {
      CAPTURE(e.path().string());
      const auto c = ModelConfig::from_dir(e.path().string());
      std::string unknown;
      for (const auto& k : c.unknown_keys) unknown += k + "; ";
      CHECK_MESSAGE(c.unknown_keys.empty(), unknown);
      ++n;
    }
  }
  CHECK(n >= 18);
  const std::string v5 = std::string(LAL_HF_CONFIGS_DIR) + "/transformers5/";
  CHECK(ModelConfig::from_dir(v5 + "qwen2_tied").rope.theta == 1e6);
  CHECK(ModelConfig::from_dir(v5 + "llama_llama3").rope.type == "llama3");
  CHECK(ModelConfig::from_dir(v5 + "llama_llama3").rope.theta == 5e5);
  CHECK(ModelConfig::from_dir(v5 + "neox_sequential").rotary_dim == 8);  // 0.5 x 16, not the 0.25 default
  CHECK(ModelConfig::from_dir(v5 + "phi3").rope.theta == 2.5e5);
  CHECK(ModelConfig::from_dir(v5 + "phi3_longrope").rotary_dim == 12);
  CHECK(ModelConfig::from_dir(v5 + "qwen2_bf16").torch_dtype == "bfloat16");
  CHECK(ModelConfig::from_dir(v5 + "qwen2_tied").eos_token_ids == std::vector<std::int64_t>{2, 3});
}

TEST_CASE("refused: architecture, quantization and sizes") {
  check_refused("mamba", "", "model_type", "unsupported architecture \"mamba\"");
  check_refused("llama", R"(, "quantization_config": {"quant_method": "gptq", "bits": 4})", "quantization_config",
                "\"gptq\"");
  check_refused("llama", R"(, "vocab_size": 0)", "vocab_size", "must be positive, got 0");
  check_refused("llama", R"(, "vocab_size": 10.5)", "vocab_size", "expected an integer, got 10.5");
  check_refused("llama", R"(, "hidden_size": 99999999999)", "hidden_size", "out of range");
  check_refused("llama", R"(, "intermediate_size": -4)", "intermediate_size", "must be positive, got -4");
  check_refused("llama", R"(, "num_hidden_layers": 0)", "num_hidden_layers", "must be positive");
  check_refused("llama", R"(, "num_attention_heads": 3)", "num_attention_heads", "3 does not divide hidden_size 16");
  check_refused("llama", R"(, "num_key_value_heads": 3)", "num_key_value_heads", "3 does not divide");
  check_refused("llama", R"(, "head_dim": 0)", "head_dim", "must be positive");
  check_refused("llama", R"(, "max_position_embeddings": 0)", "max_position_embeddings", "must be positive");
  check_refused("llama", R"(, "pretraining_tp": 0)", "pretraining_tp", "must be positive");
}

TEST_CASE("refused: dtype, token ids, norms, activation") {
  check_refused("llama", R"(, "dtype": "float8_e4m3fn")", "dtype", "\"float8_e4m3fn\" is not supported");
  check_refused("llama", R"(, "torch_dtype": "int8")", "torch_dtype", "\"int8\" is not supported");
  check_refused("llama", R"(, "dtype": "bfloat16", "torch_dtype": "float16")", "torch_dtype", "disagrees");
  check_refused("llama", R"(, "eos_token_id": [2, -1])", "eos_token_id", "must be >= 0");
  check_refused("llama", R"(, "eos_token_id": "</s>")", "eos_token_id", "expected a token id");
  check_refused("llama", R"(, "bos_token_id": [1, 2])", "bos_token_id", "expected one token id");
  check_refused("llama", R"(, "rms_norm_eps": 0)", "rms_norm_eps", "must be > 0");
  check_refused("llama", R"(, "rms_norm_eps": -1e-6)", "rms_norm_eps", "must be > 0");
  CHECK_THROWS_WITH_AS(parse("llama", R"(, "rms_norm_eps": 1e999)"),
                       doctest::Contains("number overflow parsing '1e999'"),  // a parse error naming the number
                       ConfigError);
  check_refused("gpt_neox", R"(, "layer_norm_eps": 0.0)", "layer_norm_eps", "must be > 0");
  check_refused("llama", R"(, "rms_norm_eps": "1e-6")", "rms_norm_eps", "expected a number");
  check_refused("llama", R"(, "hidden_act": "swiglu9")", "hidden_act", "unsupported activation \"swiglu9\"");
  check_refused("llama", R"(, "attention_bias": "yes")", "attention_bias", "expected true/false");
  check_refused("phi3", R"(, "attention_bias": true)", "attention_bias", "phi3 has no attention biases");
}

TEST_CASE("refused: sliding windows and layer types lal does not run") {
  check_refused("qwen2", R"(, "layer_types": ["full_attention", "chunked_attention"])", "layer_types",
                "\"chunked_attention\" is not supported");
  check_refused("qwen2", R"(, "layer_types": ["full_attention"])", "layer_types", "expected a list of 2");
  check_refused("phi3", R"(, "layer_types": ["sliding_attention", "full_attention"])", "layer_types",
                "per-layer attention types");
  check_refused("llama", R"(, "layer_types": ["sliding_attention", "full_attention"])", "layer_types",
                "not part of the llama architecture");
  check_refused("llama", R"(, "sliding_window": 4096)", "sliding_window", "not part of the llama architecture");
  check_refused("qwen2", R"(, "use_sliding_window": true, "sliding_window": 0)", "sliding_window", "must be positive");
}

TEST_CASE("refused: rotary embeddings lal does not implement, or out of range") {
  check_refused("llama", R"(, "rope_parameters": {"rope_type": "proportional", "rope_theta": 1e4})",
                "rope_parameters.rope_type",
                "\"proportional\" is not supported for llama (supported: default, linear, "
                "dynamic, llama3, yarn, longrope)");
  check_refused("phi3", R"(, "rope_scaling": {"type": "linear", "factor": 2})", "rope_scaling.rope_type",
                "(supported: default, longrope)");
  check_refused("llama", R"(, "rope_scaling": [1, 2])", "rope_scaling", "expected an object");
  check_refused("llama", R"(, "rope_parameters": {"full_attention": {"rope_type": "default"}})", "rope_parameters",
                "per-layer-type rotary parameters");
  check_refused("llama", R"(, "rope_theta": 0)", "rope_theta", "must be > 0");
  check_refused("llama", R"(, "rope_parameters": {"rope_type": "default", "rope_theta": -5})", "rope_theta",
                "must be > 0");
  check_refused("gpt_neox", R"(, "rotary_emb_base": 10000, "rope_theta": 500)", "rope_theta", "disagrees");
  check_refused("phi3", R"(, "partial_rotary_factor": 1.5)", "partial_rotary_factor", "must be in (0, 1]");
  check_refused("gpt_neox", R"(, "rotary_pct": 0)", "rotary_pct", "must be in (0, 1]");
  check_refused("llama", R"(, "partial_rotary_factor": 0.5)", "partial_rotary_factor",
                "not part of the llama architecture");
  check_refused("gpt_neox", "", "rotary_pct", "odd or zero rotary dimension 1");
  check_refused("llama", R"(, "rope_scaling": {"type": "linear"})", "factor", "missing");
  check_refused("llama", R"(, "rope_scaling": {"type": "dynamic", "factor": 0})", "factor", "must be > 0");
  check_refused("llama", R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4,
      "high_freq_factor": 1})",
                "high_freq_factor", "must be greater than low_freq_factor");
  check_refused("llama", R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8, "high_freq_factor": 4})",
                "low_freq_factor", "missing");
  check_refused("phi3", R"(, "rope_scaling": {"type": "longrope", "short_factor": [1], "long_factor": [1, 2]})",
                "short_factor", "needs 2");
  check_refused("phi3", R"(, "rope_scaling": {"type": "longrope", "short_factor": [1, 0], "long_factor": [1, 2]})",
                "short_factor", "positive finite numbers");
  check_refused("llama", R"(, "rope_scaling": {"type": "linear", "factor": 2, "low_freq_factor": 1})",
                "rope_scaling.low_freq_factor", "not used by rope_type \"linear\"");
  check_refused("llama", R"(, "rope_scaling": {"type": "yarn", "factor": 2, "beta_fast": -1})", "beta_fast",
                "must be > 0");
}

TEST_CASE("refused: generation_config.json values out of range or not implemented") {
  check_generation_refused(R"({"temperature": -0.5})", "temperature", "must be >= 0");
  check_generation_refused(R"({"top_p": 1.5})", "top_p", "must be in [0, 1]");
  check_generation_refused(R"({"min_p": -0.1})", "min_p", "must be in [0, 1]");
  check_generation_refused(R"({"top_k": -1})", "top_k", "expected a non-negative integer");
  check_generation_refused(R"({"repetition_penalty": 0})", "repetition_penalty", "must be > 0");
  check_generation_refused(R"({"do_sample": "yes"})", "do_sample", "expected true/false");
  check_generation_refused(R"({"eos_token_id": [1, -2]})", "eos_token_id", "must be >= 0");
  check_generation_refused(R"({"max_new_tokens": -5})", "max_new_tokens", "non-negative");
  check_generation_refused(R"({"num_beams": 4})", "num_beams", "beam search is not implemented");
  check_generation_refused(R"({"typical_p": 0.9})", "typical_p", "typical sampling is not implemented");
  check_generation_refused(R"({"no_repeat_ngram_size": 3})", "no_repeat_ngram_size", "not implemented");
  check_generation_refused(R"({"suppress_tokens": [5]})", "suppress_tokens", "not implemented");
  check_generation_refused(R"({"bad_words_ids": [[5]]})", "bad_words_ids", "not implemented");
  CHECK_THROWS_WITH_AS(parse("llama").apply_generation_config("[1]", "/m/generation_config.json"),
                       doctest::Contains("/m/generation_config.json: top level is not a JSON object"), ConfigError);
}
