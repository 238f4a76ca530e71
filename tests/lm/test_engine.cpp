// The engine against the independent Python reference (tests/reference/), on the tiny random models that
// make_tiny_models.py writes to $LAL_LM_TINY_MODELS: logits parity, greedy generations, KV-cached decode vs full
// recompute, batched vs one-by-one, bf16 on the CPU, sampling controls, stops, cancellation, errors.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "lal/lm/engine.hpp"
#include "lal/lm/safetensors.hpp"
#include "lal/lm/transformer.hpp"

namespace fs = std::filesystem;
using namespace lal::lm;

namespace {

const char* kModels[] = {"qwen2_tied_gqa",      "llama_llama3_headdim", "llama_bias_linear_sharded",
                         "phi3_partial_rotary", "neox_parallel",        "neox_sequential"};
constexpr int kPrompts = 3;

std::string model_dir(const std::string& name) {
  const char* root = std::getenv("LAL_LM_TINY_MODELS");
  REQUIRE_MESSAGE(root, "set LAL_LM_TINY_MODELS (ctest does; the lm.make_tiny_models test writes them)");
  return (fs::path(root) / name).string();
}

/// expected.safetensors of one model, as torch tensors.
struct Expected {
  SafetensorsFile file;
  explicit Expected(const std::string& dir) : file(SafetensorsFile::open(dir + "/expected.safetensors")) {}
  torch::Tensor get(const std::string& name) const {
    const TensorInfo* t = file.find(name);
    REQUIRE_MESSAGE(t, "expected.safetensors lacks " << name);
    auto type = t->dtype == DType::I64 ? torch::kLong : torch::kFloat32;
    return torch::from_blob(const_cast<std::byte*>(t->data), t->shape, type).clone();
  }
  std::vector<std::int32_t> ids(const std::string& name) const {
    auto t = get(name);
    std::vector<std::int32_t> out;
    for (std::int64_t i = 0; i < t.numel(); ++i) out.push_back(static_cast<std::int32_t>(t[i].item<std::int64_t>()));
    return out;
  }
};

/// LAL_LM_TEST_DEVICE=cuda runs the same checks on a GPU (default: cpu).
std::string test_device() {
  const char* d = std::getenv("LAL_LM_TEST_DEVICE");
  return d && *d ? d : "cpu";
}
torch::Device device() { return torch::Device(test_device()); }

torch::Tensor as_batch(const std::vector<std::int32_t>& ids) {
  return torch::tensor(std::vector<std::int64_t>(ids.begin(), ids.end()), torch::kLong).view({1, -1});
}

double max_abs(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.cpu() - b.cpu()).abs().max().item<double>();
}

std::unique_ptr<Engine> engine_for(const std::string& name, const std::string& dtype = "float32",
                                   const std::string& decode_mode = "auto") {
  ModelOptions o;
  o.decode_mode = decode_mode;
  o.model_path = model_dir(name);
  o.device = test_device();
  o.dtype = dtype;
  return Engine::load(o);
}

GenerateOptions greedy(int n) {
  GenerateOptions g;
  g.sampling.greedy = true;
  g.max_new_tokens = n;
  return g;
}

}  // namespace

TEST_CASE("float32 logits match the reference within 1e-4, for every family") {
  for (const char* name : kModels) {
    CAPTURE(name);
    const auto dir = model_dir(name);
    Expected ex(dir);
    auto model = Transformer::load(dir, device(), torch::kFloat32);
    for (int p = 0; p < kPrompts; ++p) {
      CAPTURE(p);
      auto ids = as_batch(ex.ids("prompt." + std::to_string(p)));
      auto pos = torch::arange(ids.size(1), torch::kLong).view({1, -1});
      auto logits = model->forward(ids, pos, {}, nullptr, false)[0];
      CHECK(max_abs(logits, ex.get("logits." + std::to_string(p))) <= 1e-4);
    }
  }
}

TEST_CASE("KV-cached prefill + decode equals full recomputation") {
  for (const char* name : kModels) {
    CAPTURE(name);
    const auto dir = model_dir(name);
    Expected ex(dir);
    auto model = Transformer::load(dir, device(), torch::kFloat32);
    auto ids = as_batch(ex.ids("prompt.2"));
    auto full = ex.get("logits.2");
    const auto T = ids.size(1);
    auto cache = KVCache::allocate(model->config(), 1, T, torch::kFloat32, device());
    const std::int64_t split = 5;  // prefill 5 tokens, then chunks of 1, 1, then the rest at once
    auto pos = torch::arange(T, torch::kLong).view({1, -1});
    auto a = model->forward(ids.narrow(1, 0, split), pos.narrow(1, 0, split), {}, &cache, false)[0];
    CHECK(max_abs(a, full.narrow(0, 0, split)) <= 1e-4);
    for (std::int64_t t = split; t < split + 2; ++t) {
      auto step = model->forward(ids.narrow(1, t, 1), pos.narrow(1, t, 1), {}, &cache, true)[0];
      CHECK(max_abs(step, full.narrow(0, t, 1)) <= 1e-4);
    }
    auto rest = model->forward(ids.narrow(1, split + 2, T - split - 2), pos.narrow(1, split + 2, T - split - 2), {},
                               &cache, false)[0];
    CHECK(max_abs(rest, full.narrow(0, split + 2, T - split - 2)) <= 1e-4);
    CHECK(cache.length == T);
  }
}

TEST_CASE("greedy generation equals the reference's, stop token included") {
  for (const char* name : kModels) {
    CAPTURE(name);
    const auto dir = model_dir(name);
    Expected ex(dir);
    auto engine = engine_for(name);
    for (int p = 0; p < kPrompts; ++p) {
      CAPTURE(p);
      const auto want = ex.ids("greedy." + std::to_string(p));
      auto out = engine->generate({ex.ids("prompt." + std::to_string(p))}, greedy(10));
      CHECK(out[0].ids == want);
      CHECK(out[0].finish_reason == (want.size() < 10 ? "stop" : "length"));
    }
  }
}

TEST_CASE("a batch with left padding equals one-by-one generation") {
  for (const char* name : kModels) {
    CAPTURE(name);
    const auto dir = model_dir(name);
    Expected ex(dir);
    auto engine = engine_for(name);
    std::vector<std::vector<std::int32_t>> prompts;
    for (int p = 0; p < kPrompts; ++p) prompts.push_back(ex.ids("prompt." + std::to_string(p)));
    prompts.push_back(prompts[0]);  // duplicates must not interfere
    auto opts = greedy(10);
    opts.stop_at_eos = false;  // keep every row running so padding and finished rows are exercised
    GenerateStats stats;
    auto batch = engine->generate(prompts, opts, {}, {}, &stats);
    CHECK(stats.batch == 4);
    for (std::size_t p = 0; p < prompts.size(); ++p) {
      CAPTURE(p);
      auto single = engine->generate({prompts[p]}, opts);
      CHECK(batch[p].ids == single[0].ids);
      for (std::size_t i = 0; i < std::min(batch[p].logprobs.size(), single[0].logprobs.size()); ++i)
        CHECK(std::abs(batch[p].logprobs[i] - single[0].logprobs[i]) <= 1e-4);
    }
  }
}

TEST_CASE("static-shape decode (what a CUDA graph captures) equals dynamic decode") {
  for (const char* name : kModels) {
    CAPTURE(name);
    Expected ex(model_dir(name));
    std::vector<std::vector<std::int32_t>> prompts;
    for (int p = 0; p < kPrompts; ++p) prompts.push_back(ex.ids("prompt." + std::to_string(p)));
    auto opts = greedy(10);
    opts.stop_at_eos = false;
    auto dynamic = engine_for(name, "float32", "dynamic")->generate(prompts, opts);
    for (const char* mode : {"static", "auto"}) {  // auto = CUDA graphs on a GPU
      CAPTURE(mode);
      auto engine = engine_for(name, "float32", mode);
      for (int run = 0; run < 2; ++run) {  // the second run reuses the buffers (and graph)
        auto out = engine->generate(prompts, opts);
        for (std::size_t p = 0; p < prompts.size(); ++p) {
          CHECK(out[p].ids == dynamic[p].ids);
          for (std::size_t i = 0; i < out[p].logprobs.size(); ++i)
            CHECK(std::abs(out[p].logprobs[i] - dynamic[p].logprobs[i]) <= 1e-4);
        }
      }
      auto single = engine->generate({prompts[1]}, opts);  // other shape: new buffers
      CHECK(single[0].ids == dynamic[1].ids);
    }
  }
}

TEST_CASE("bfloat16 on the CPU tracks the bfloat16 reference") {
  for (const char* name : kModels) {
    CAPTURE(name);
    const auto dir = model_dir(name);
    Expected ex(dir);
    auto model = Transformer::load(dir, device(), torch::kBFloat16);
    for (int p = 0; p < kPrompts; ++p) {
      auto ids = as_batch(ex.ids("prompt." + std::to_string(p)));
      auto pos = torch::arange(ids.size(1), torch::kLong).view({1, -1});
      auto logits = model->forward(ids, pos, {}, nullptr, false)[0];
      const auto ref32 = ex.get("logits." + std::to_string(p));
      const auto ref16 = ex.get("logits_bf16." + std::to_string(p));
      // bf16 has ~3 significant digits; demand agreement on the scale of the reference's own bf16 error.
      const double budget = std::max(0.05, 2.0 * max_abs(ref16, ref32));
      CAPTURE(max_abs(logits, ref16));
      CHECK(max_abs(logits, ref16) <= budget);
    }
    auto engine = engine_for(name, "bfloat16");
    CHECK(engine->dtype_name() == "bfloat16");
    auto out = engine->generate({ex.ids("prompt.0")}, greedy(4));
    CHECK(!out[0].ids.empty());
  }
}

TEST_CASE("streaming reports the raw distribution's log-probability and entropy") {
  const auto dir = model_dir("qwen2_tied_gqa");
  Expected ex(dir);
  auto engine = engine_for("qwen2_tied_gqa");
  std::vector<TokenStep> steps;
  auto opts = greedy(1);
  opts.sampling.repetition_penalty = 1.3f;  // processing must not leak into the reported logprob
  engine->generate({ex.ids("prompt.0")}, opts, [&](const TokenStep& s) {
    steps.push_back(s);
    return true;
  });
  REQUIRE(steps.size() == 1);
  auto logp = torch::log_softmax(ex.get("logits.0")[-1], -1);  // CPU
  CHECK(std::abs(steps[0].logprob - logp[steps[0].id].item<float>()) < 1e-4);
  const float entropy = -(logp.exp() * logp).sum().item<float>();
  CHECK(std::abs(steps[0].entropy - entropy) < 1e-4);
}

TEST_CASE("repetition penalty follows transformers' formula over the prompt") {
  const auto dir = model_dir("llama_bias_linear_sharded");
  Expected ex(dir);
  auto engine = engine_for("llama_bias_linear_sharded");
  const auto prompt = ex.ids("prompt.2");
  for (float penalty : {1.5f, 3.0f, 0.5f}) {
    auto scores = ex.get("logits.2")[-1].clone();
    for (auto id : prompt) {
      float v = scores[id].item<float>();
      scores[id] = v < 0 ? v * penalty : v / penalty;
    }
    auto opts = greedy(1);
    opts.sampling.repetition_penalty = penalty;
    auto out = engine->generate({prompt}, opts);
    CHECK(out[0].ids[0] == scores.argmax().item<std::int64_t>());
  }
}

TEST_CASE("sampling is reproducible by seed, and top_k=1, min_p=1, tiny top_p reduce to greedy") {
  const auto dir = model_dir("phi3_partial_rotary");
  Expected ex(dir);
  auto engine = engine_for("phi3_partial_rotary");
  const auto prompt = ex.ids("prompt.1");
  GenerateOptions s;
  s.max_new_tokens = 12;
  s.stop_at_eos = false;
  s.sampling.temperature = 1.5f;
  s.sampling.seed = 7;
  auto a = engine->generate({prompt}, s);
  auto b = engine->generate({prompt}, s);
  CHECK(a[0].ids == b[0].ids);
  bool differs = false;
  for (std::uint64_t seed = 8; seed < 12 && !differs; ++seed) {
    s.sampling.seed = seed;
    differs = engine->generate({prompt}, s)[0].ids != a[0].ids;
  }
  CHECK(differs);
  auto g = greedy(12);
  g.stop_at_eos = false;
  const auto want = engine->generate({prompt}, g)[0].ids;
  auto k1 = s;
  k1.sampling.top_k = 1;
  CHECK(engine->generate({prompt}, k1)[0].ids == want);
  auto m1 = s;
  m1.sampling.min_p = 1.0f;
  CHECK(engine->generate({prompt}, m1)[0].ids == want);
  auto p0 = s;
  p0.sampling.top_p = 1e-6f;
  CHECK(engine->generate({prompt}, p0)[0].ids == want);
  auto mixed = s;  // everything at once stays within the vocabulary and reproducible
  mixed.sampling.top_k = 20;
  mixed.sampling.top_p = 0.9f;
  mixed.sampling.min_p = 0.05f;
  mixed.sampling.repetition_penalty = 1.2f;
  auto m = engine->generate({prompt, ex.ids("prompt.0")}, mixed);
  auto again = engine->generate({prompt, ex.ids("prompt.0")}, mixed);
  CHECK(m[0].ids == again[0].ids);
  CHECK(m[1].ids == again[1].ids);
}

TEST_CASE("stop ids, callback stop and cancellation") {
  const auto dir = model_dir("neox_parallel");
  Expected ex(dir);
  auto engine = engine_for("neox_parallel");
  const auto prompt = ex.ids("prompt.0");
  auto g = greedy(8);
  g.stop_at_eos = false;
  const auto free_run = engine->generate({prompt}, g)[0].ids;
  REQUIRE(free_run.size() == 8);
  auto stop = g;
  stop.stop_ids = {free_run[2]};
  auto out = engine->generate({prompt}, stop)[0];
  CHECK(out.finish_reason == "stop");
  CHECK(out.ids.back() == free_run[2]);
  CHECK(out.ids.size() <= 3);

  int seen = 0;
  out = engine->generate({prompt}, g, [&](const TokenStep&) { return ++seen < 2; })[0];
  CHECK(out.ids.size() == 2);
  CHECK(out.finish_reason == "stop");

  int polls = 0;
  out = engine->generate({prompt}, g, {}, [&] { return ++polls > 3; })[0];
  CHECK(out.ids.size() == 3);
  CHECK(out.finish_reason == "cancelled");

  CHECK(engine->generate({prompt}, greedy(0))[0].ids.empty());
  CHECK_THROWS_AS(engine->generate({{}}, g), std::invalid_argument);
  CHECK_THROWS_WITH_AS(engine->generate({{1, 500}}, g), doctest::Contains("token id 500"), std::invalid_argument);
}

TEST_CASE("load errors name the file and the key or tensor") {
  const auto src = model_dir("qwen2_tied_gqa");
  const auto dir = fs::temp_directory_path() / "lal_lm_broken_model";
  fs::remove_all(dir);
  fs::create_directories(dir);
  {  // plain stream copy (fs::copy crashed in a binary linked with a PyTorch wheel's LibTorch; cause not established)
    std::ifstream from(src + "/model.safetensors", std::ios::binary);
    std::ofstream to(dir / "model.safetensors", std::ios::binary);
    to << from.rdbuf();
  }
  std::ifstream in(src + "/config.json");
  std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write_config = [&](const std::string& text) { std::ofstream(dir / "config.json") << text; };
  // (plain find/replace: std::regex crashes when linked with some PyTorch-wheel LibTorch builds)
  auto replaced = [&](const std::string& from, const std::string& to) {
    std::string s = config;
    const auto at = s.find(from);
    REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
  };

  write_config(replaced("\"qwen2\"", "\"rwkv\""));
  ModelOptions o;
  o.model_path = dir.string();
  o.device = "cpu";
  CHECK_THROWS_WITH(Engine::load(o), doctest::Contains("config.json: key \"model_type\""));

  write_config(replaced("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"));
  CHECK_THROWS_WITH(Engine::load(o), doctest::Contains("no tensor named 'model.layers.2.input_layernorm.weight'"));

  write_config(replaced("\"intermediate_size\": 112", "\"intermediate_size\": 100"));
  CHECK_THROWS_WITH(Engine::load(o), doctest::Contains("but config.json implies"));

  write_config(config);
  o.dtype = "int8";
  CHECK_THROWS_WITH(Engine::load(o), doctest::Contains("dtype 'int8'"));
  o.dtype = "float32";
  o.device = "tpu";
  CHECK_THROWS_WITH(Engine::load(o), doctest::Contains("device 'tpu'"));
  fs::remove_all(dir);
}
