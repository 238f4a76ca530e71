// The engine against the independent Python reference (tests/reference/), on the tiny random models that
// make_tiny_models.py writes to $LAL_LM_TINY_MODELS: logits parity, greedy generations, KV-cached decode vs full
// recompute, batched vs one-by-one, bf16 on the CPU, sampling controls, stops, cancellation, errors.
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "lal/lm/engine.hpp"
#include "lal/lm/safetensors.hpp"
#include "lal/lm/sampling.hpp"
#include "lal/lm/transformer.hpp"

// After LibTorch: its logging header (glog) defines CHECK too, and the last definition wins; ours must be doctest's.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

using namespace lal::lm;

namespace {

const char* kModels[] = {"qwen2_tied_gqa",      "llama_llama3_headdim", "llama_bias_linear_sharded",
                         "phi3_partial_rotary", "neox_parallel",        "neox_sequential"};
constexpr int kPrompts = 3;
// make_tiny_models.py's models from tests/lm/hf_configs: config.json as transformers 4 and 5 write them (prompt 3 is
// a long one, past the dynamic/longrope switch points).
const char* kHfModels[] = {"hf4_llama2_dynamic",     "hf4_llama31_llama3", "hf4_llama_yarn_attention_factor",
                           "hf4_phi3_128k_longrope", "hf4_pythia",         "hf4_qwen25",
                           "hf5_llama_dynamic",      "hf5_llama_linear",   "hf5_llama_llama3",
                           "hf5_llama_mha_sharded",  "hf5_llama_yarn",     "hf5_neox_parallel",
                           "hf5_neox_sequential",    "hf5_phi3",           "hf5_phi3_longrope",
                           "hf5_qwen2_bf16",         "hf5_qwen2_tied",     "hf5_qwen2_untied"};

std::string model_dir(const std::string& name) {
  const char* root = std::getenv("LAL_LM_TINY_MODELS");
  REQUIRE_MESSAGE(root, "set LAL_LM_TINY_MODELS (ctest does; the lm.make_tiny_models test writes them)");
  return std::string(root) + "/" + name;
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

/// float32 logits of prompts [0, prompts) of model `name`, one forward each, against the reference: ≤ 1e-4.
void check_logits(const std::string& name, int prompts) {
  const auto dir = model_dir(name);
  Expected ex(dir);
  auto model = Transformer::load(dir, device(), torch::kFloat32);
  for (int p = 0; p < prompts; ++p) {
    CAPTURE(p);
    auto ids = as_batch(ex.ids("prompt." + std::to_string(p)));
    auto pos = torch::arange(ids.size(1), torch::kLong).view({1, -1});
    auto logits = model->forward(ids, pos, {}, nullptr, false)[0];
    CHECK(max_abs(logits, ex.get("logits." + std::to_string(p))) <= 1e-4);
  }
}

}  // namespace

TEST_CASE("float32 logits match the reference within 1e-4, for every family") {
  for (const char* name : kModels) {
    CAPTURE(name);
    check_logits(name, kPrompts);
  }
}

TEST_CASE("config.json in the transformers 4 and 5 dialects: logits and greedy ids match the reference") {
  for (const char* name : kHfModels) {
    CAPTURE(name);
    check_logits(name, kPrompts + 1);  // + the long prompt
    Expected ex(model_dir(name));
    auto engine = engine_for(name);
    for (int p = 0; p < kPrompts; ++p) {
      CAPTURE(p);
      auto out = engine->generate({ex.ids("prompt." + std::to_string(p))}, greedy(10));
      CHECK(out[0].ids == ex.ids("greedy." + std::to_string(p)));
    }
  }
}

TEST_CASE("the trainable decoder (core/train's student) runs every family: reference logits, gradients, names") {
  std::vector<std::string> names(std::begin(kModels), std::end(kModels));
  names.insert(names.end(), std::begin(kHfModels), std::end(kHfModels));
  for (const auto& name : names) {
    CAPTURE(name);
    const auto dir = model_dir(name);
    Expected ex(dir);
    ParameterOptions trainable;
    trainable.trainable = true;
    auto model = Transformer::load(dir, device(), torch::kFloat32, {}, trainable);
    const auto ckpt = Checkpoint::open_dir(dir);
    std::int64_t count = 0;
    for (const auto& [tensor, param] : model->named_parameters()) {
      CAPTURE(tensor);
      const TensorInfo* info = ckpt.find(tensor);
      REQUIRE(info);
      CHECK(info->shape == param.sizes().vec());
      CHECK(param.requires_grad());
      CHECK((param.scalar_type() == torch::kFloat32));
      count += param.numel();
    }
    CHECK(count == model->parameter_count());
    for (int p = 0; p < kPrompts; ++p) {
      CAPTURE(p);
      auto ids = as_batch(ex.ids("prompt." + std::to_string(p)));
      auto logits = model->logits(ids, torch::kFloat32);
      CHECK(max_abs(logits.detach()[0], ex.get("logits." + std::to_string(p))) <= 1e-4);
      if (p == 0) {
        logits.pow(2).mean().backward();
        for (const auto& [tensor, param] : model->named_parameters()) {
          CAPTURE(tensor);
          REQUIRE(param.grad().defined());
          CHECK(param.grad().isfinite().all().item<bool>());
        }
      }
    }
  }
}

TEST_CASE("hidden_states: packed documents equal separate runs, and a layer runner runs every layer once") {
  for (const char* name : kModels) {
    CAPTURE(name);
    auto model = Transformer::load(model_dir(name), device(), torch::kFloat32);
    torch::NoGradGuard no_grad;
    auto a = torch::tensor({3, 14, 15, 92, 65}, torch::kLong).view({1, -1});
    auto b = torch::tensor({35, 89, 79, 32}, torch::kLong).view({1, -1});
    const auto A = a.size(1), B = b.size(1), T = A + B;
    auto positions = torch::cat({torch::arange(A), torch::arange(B)}).view({1, T});
    auto segment = torch::cat({torch::zeros({A}, torch::kLong), torch::ones({B}, torch::kLong)});
    auto mask = (segment.view({T, 1}) == segment.view({1, T})) & torch::ones({T, T}, torch::kBool).tril();
    auto packed = model->hidden_states(torch::cat({a, b}, 1), torch::kFloat32, positions, mask.view({1, 1, T, T}));
    CHECK(max_abs(packed.narrow(1, 0, A), model->hidden_states(a, torch::kFloat32)) <= 1e-5);
    CHECK(max_abs(packed.narrow(1, A, B), model->hidden_states(b, torch::kFloat32)) <= 1e-5);
    int calls = 0;
    LayerRunner counting = [&](const LayerFunction& fn, const torch::Tensor& x) {
      ++calls;
      return fn(x);
    };
    CHECK(max_abs(model->hidden_states(a, torch::kFloat32, {}, {}, counting),
                  model->hidden_states(a, torch::kFloat32)) == 0.0);
    CHECK(calls == model->config().num_layers);
  }
}

TEST_CASE("dynamic NTK and longrope switch tables mid-generation the same way in every decode mode") {
  // 40 prompt tokens + 30 new ones cross max_position_embeddings (dynamic) / original_max_position_embeddings
  // (longrope) = 32 during the prefill of prompt 3; prompt 2 (12 tokens) crosses it during decoding.
  for (const char* name : {"hf5_llama_dynamic", "hf5_phi3_longrope", "hf4_llama2_dynamic", "hf4_phi3_128k_longrope"}) {
    CAPTURE(name);
    Expected ex(model_dir(name));
    for (int p : {2, 3}) {
      CAPTURE(p);
      GenerateOptions g = greedy(30);
      g.min_new_tokens = 30;
      const auto prompt = ex.ids("prompt." + std::to_string(p));
      const auto dynamic = engine_for(name, "float32", "dynamic")->generate({prompt}, g)[0].ids;
      const auto fixed = engine_for(name, "float32", "static")->generate({prompt}, g)[0].ids;
      CHECK(dynamic.size() == 30);
      CHECK(fixed == dynamic);
    }
  }
}

TEST_CASE("sampling settings: the request's, else generation_config.json's as transformers applies them") {
  GenerationDefaults none;  // no generation_config.json: transformers' GenerationConfig defaults
  auto s = resolve_sampling(none, {});
  CHECK(s.greedy);  // do_sample false
  CHECK(s.top_k == 50);
  CHECK(s.repetition_penalty == 1.0f);
  SamplingRequest asks;
  asks.temperature = 0.8f;
  CHECK_FALSE(resolve_sampling(none, asks).greedy);  // giving a sampling setting asks for sampling
  GenerationDefaults qwen;
  qwen.from_file = true;
  qwen.do_sample = true;
  qwen.temperature = 0.7;
  qwen.top_p = 0.8;
  qwen.top_k = 20;
  qwen.repetition_penalty = 1.05;
  s = resolve_sampling(qwen, {});
  CHECK_FALSE(s.greedy);
  CHECK(s.temperature == 0.7f);
  CHECK(s.top_p == 0.8f);
  CHECK(s.top_k == 20);
  CHECK(s.repetition_penalty == 1.05f);
  SamplingRequest user;
  user.greedy = true;
  user.top_k = 0;
  user.seed = 9;
  s = resolve_sampling(qwen, user);
  CHECK(s.greedy);
  CHECK(s.top_k == 0);
  CHECK(s.temperature == 0.7f);
  CHECK(s.seed == 9u);
  SamplingRequest bad;
  bad.top_p = 1.5f;
  CHECK_THROWS_WITH_AS(resolve_sampling(qwen, bad), doctest::Contains("top_p"), std::invalid_argument);
  bad = {};
  bad.temperature = std::nanf("");
  CHECK_THROWS_WITH_AS(resolve_sampling(qwen, bad), doctest::Contains("temperature must be finite"),
                       std::invalid_argument);
}

TEST_CASE("prompt_logits: one forward, float32, what --logits prints") {
  Expected ex(model_dir("hf5_qwen2_tied"));
  auto engine = engine_for("hf5_qwen2_tied");
  const auto logits = engine->prompt_logits(ex.ids("prompt.0"));
  const auto want = ex.get("logits.0");
  REQUIRE(static_cast<std::int64_t>(logits.size()) == want.numel());
  auto got = torch::from_blob(const_cast<float*>(logits.data()), want.sizes(), torch::kFloat32);
  CHECK(max_abs(got, want) <= 1e-4);
  CHECK_THROWS_AS(engine->prompt_logits({}), std::invalid_argument);
  CHECK_THROWS_WITH_AS(engine->prompt_logits({1, 100000}), doctest::Contains("outside the vocabulary"),
                       std::invalid_argument);
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

/// A scratch copy of a tiny model whose config.json a test rewrites. Plain POSIX/stdio file handling on purpose: this
/// binary also links a PyTorch wheel's LibTorch, and std::filesystem / iostream calls on paths made here must not be
/// the reason a test dies (see BENCHMARKS.md, "load errors" on the GPU build).
class ScratchModel {
 public:
  explicit ScratchModel(const std::string& src) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/lal_lm_broken_model.XXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    REQUIRE_MESSAGE(::mkdtemp(buf.data()) != nullptr, "mkdtemp " << pattern << ": " << std::strerror(errno));
    dir_ = buf.data();
    write("model.safetensors", read(src + "/model.safetensors"));
    config_ = read(src + "/config.json");
  }
  ~ScratchModel() {
    for (const char* f : {"model.safetensors", "config.json"}) ::unlink((dir_ + "/" + f).c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& dir() const { return dir_; }
  const std::string& original_config() const { return config_; }
  /// config.json = the original with the first `from` replaced by `to` (which must occur).
  void write_config(const std::string& from = {}, const std::string& to = {}) {
    std::string text = config_;
    if (!from.empty()) {
      const auto at = text.find(from);
      REQUIRE_MESSAGE(at != std::string::npos, "config.json has no " << from);
      text.replace(at, from.size(), to);
    }
    write("config.json", text);
  }

 private:
  static std::string read(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    REQUIRE_MESSAGE(f, "cannot open " << path);
    std::string data;
    char chunk[1 << 16];
    for (std::size_t n; (n = std::fread(chunk, 1, sizeof chunk, f)) > 0;) data.append(chunk, n);
    std::fclose(f);
    return data;
  }
  void write(const std::string& name, const std::string& data) const {
    const std::string path = dir_ + "/" + name;
    std::FILE* f = std::fopen(path.c_str(), "wb");
    REQUIRE_MESSAGE(f, "cannot create " << path);
    const bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
    REQUIRE_MESSAGE((std::fclose(f) == 0 && ok), "cannot write " << path);
  }
  std::string dir_, config_;
};

TEST_CASE("load errors name the file and the key or tensor") {
  ScratchModel m(model_dir("qwen2_tied_gqa"));
  ModelOptions o;
  o.model_path = m.dir();
  o.device = "cpu";

  m.write_config("\"qwen2\"", "\"rwkv\"");
  CHECK_THROWS_WITH(Engine::load(o), doctest::Contains("config.json: key \"model_type\""));

  m.write_config("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
  CHECK_THROWS_WITH(Engine::load(o), doctest::Contains("no tensor named 'model.layers.2.input_layernorm.weight'"));

  m.write_config("\"intermediate_size\": 112", "\"intermediate_size\": 100");
  CHECK_THROWS_WITH(Engine::load(o), doctest::Contains("but config.json implies"));

  m.write_config();
  o.dtype = "int2";
  CHECK_THROWS_WITH(Engine::load(o), doctest::Contains("dtype 'int2'"));
  o.dtype = "float32";
  o.device = "tpu";
  CHECK_THROWS_WITH(Engine::load(o), doctest::Contains("device 'tpu'"));
  o.device = "cpu";
  CHECK(Engine::load(o)->config().num_layers == 2);  // the untouched copy loads
}

TEST_CASE("sampling noise: the tensor hash equals its scalar definition, on the test device") {
  CHECK(splitmix64(0) == 0xe220a8397b1dcdafull);  // the published first output of splitmix64 seeded with 0
  const std::int64_t rows = 3, vocab = 1000;
  for (std::uint64_t seed : {std::uint64_t{0}, std::uint64_t{7}, ~std::uint64_t{0} - 5}) {
    for (std::int64_t column : {0, 1, 4095}) {
      auto opts = torch::TensorOptions().dtype(torch::kLong).device(device());
      auto u = counter_uniform(torch::full({1}, static_cast<std::int64_t>(seed), opts), torch::full({1}, column, opts),
                               rows, vocab)
                   .cpu();
      REQUIRE(u.sizes() == torch::IntArrayRef({rows, vocab}));
      auto a = u.accessor<double, 2>();
      int mismatches = 0;
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t i = 0; i < vocab; ++i)
          mismatches += a[r][i] != counter_uniform_value(seed, column, r, i, vocab);
      CAPTURE(seed);
      CAPTURE(column);
      CHECK(mismatches == 0);
      CHECK(u.min().item<double>() > 0.0);
      CHECK(u.max().item<double>() < 1.0);
      CHECK(std::abs(u.mean().item<double>() - 0.5) < 0.03);
    }
  }
}

TEST_CASE("Gumbel-max sampling draws from softmax(logits / temperature)") {
  // 40000 rows of the same logits: each row gets its own noise, so the rows are 40000 independent draws.
  const std::int64_t rows = 40000;
  auto logits = torch::tensor({2.0f, 1.0f, 0.5f, -1.0f, 3.0f, -20.0f}).to(device());
  SamplingOptions s;
  s.temperature = 1.5f;
  auto opts = torch::TensorOptions().dtype(torch::kLong).device(device());
  auto history = torch::zeros({rows, 1}, opts);
  auto choice = choose_tokens(logits.view({1, -1}).repeat({rows, 1}), /*usable_vocab=*/5, s, history,
                              torch::full({1}, 11, opts), torch::full({1}, 3, opts));
  auto counts = torch::bincount(choice.ids.cpu(), {}, 6).to(torch::kDouble) / rows;
  auto want = torch::softmax(logits.cpu().narrow(0, 0, 5).to(torch::kDouble) / 1.5, 0);
  CAPTURE(counts);
  CHECK(counts[5].item<double>() == 0.0);  // past usable_vocab: never
  for (int i = 0; i < 5; ++i) CHECK(std::abs(counts[i].item<double>() - want[i].item<double>()) < 0.01);
}

TEST_CASE("sampled tokens are the same in every decode mode (the noise is a function of seed and position)") {
  Expected ex(model_dir("llama_llama3_headdim"));
  std::vector<std::vector<std::int32_t>> prompts = {ex.ids("prompt.0"), ex.ids("prompt.2")};
  GenerateOptions s;
  s.max_new_tokens = 12;
  s.stop_at_eos = false;
  s.sampling.temperature = 1.3f;
  s.sampling.top_k = 30;
  s.sampling.top_p = 0.95f;
  s.sampling.repetition_penalty = 1.1f;
  s.sampling.seed = 1234;
  auto dynamic = engine_for("llama_llama3_headdim", "float32", "dynamic")->generate(prompts, s);
  for (const char* mode : {"static", "auto"}) {
    CAPTURE(mode);
    auto engine = engine_for("llama_llama3_headdim", "float32", mode);
    for (int run = 0; run < 2; ++run) {  // the second run replays the graph captured by the first
      auto out = engine->generate(prompts, s);
      for (std::size_t p = 0; p < prompts.size(); ++p) CHECK(out[p].ids == dynamic[p].ids);
    }
    auto other_seed = s;
    other_seed.sampling.seed = 99;  // same graph, new seed: must not replay the old noise
    auto changed = engine->generate(prompts, other_seed);
    CHECK((changed[0].ids != dynamic[0].ids || changed[1].ids != dynamic[1].ids));
    auto greedy_now = greedy(12);  // other processing: the graph is captured again
    greedy_now.stop_at_eos = false;
    auto g = engine->generate(prompts, greedy_now);
    auto g_dynamic = engine_for("llama_llama3_headdim", "float32", "dynamic")->generate(prompts, greedy_now);
    for (std::size_t p = 0; p < prompts.size(); ++p) CHECK(g[p].ids == g_dynamic[p].ids);
  }
}

TEST_CASE("min_new_tokens keeps stop tokens out of the first tokens, in every decode mode") {
  const auto dir = model_dir("qwen2_tied_gqa");
  Expected ex(dir);
  const auto prompt = ex.ids("prompt.0");
  for (const char* mode : {"dynamic", "static"}) {
    CAPTURE(mode);
    auto engine = engine_for("qwen2_tied_gqa", "float32", mode);
    auto g = greedy(6);
    g.stop_at_eos = false;
    const auto free_run = engine->generate({prompt}, g)[0].ids;
    REQUIRE(free_run.size() == 6);
    auto stop = g;
    stop.stop_ids = {free_run[0]};  // greedy would stop at once
    CHECK(engine->generate({prompt}, stop)[0].ids.size() == 1);
    stop.min_new_tokens = 3;
    const auto out = engine->generate({prompt}, stop)[0];
    REQUIRE(out.ids.size() >= 3);
    for (std::size_t i = 0; i < 3; ++i) CHECK(out.ids[i] != free_run[0]);
    // The reported log-probabilities stay those of the raw distribution (≤ 0, finite).
    for (float lp : out.logprobs) CHECK(std::isfinite(lp));
    // After min_new_tokens the stop token may end the sequence again.
    if (out.ids.size() < 6) CHECK(out.ids.back() == free_run[0]);
  }
}

namespace {

/// Sets LAL_CPU_DECODE for its lifetime (the engine reads it per decode step), then unsets it.
struct CpuDecodeMode {
  explicit CpuDecodeMode(const char* mode) { ::setenv("LAL_CPU_DECODE", mode, 1); }
  ~CpuDecodeMode() { ::unsetenv("LAL_CPU_DECODE"); }
};

}  // namespace

TEST_CASE("CPU decode steps: the plain C++ layers equal the LibTorch ops (float32, bfloat16, int8, int4)") {
  if (test_device() != "cpu") return;
  // Every family (gpt_neox keeps the LibTorch ops: both runs then take them), plus yarn's attention factor and
  // longrope's switching tables.
  std::vector<std::string> names(std::begin(kModels), std::end(kModels));
  for (const char* extra : {"hf4_llama_yarn_attention_factor", "hf4_phi3_128k_longrope", "hf5_llama_dynamic"})
    names.emplace_back(extra);
  for (const auto& name : names) {
    CAPTURE(name);
    const auto dir = model_dir(name);
    Expected ex(dir);
    auto ids = as_batch(ex.ids("prompt.2"));
    const auto T = ids.size(1);
    auto pos = torch::arange(T, torch::kLong).view({1, -1});
    constexpr std::int64_t kPrefill = 4;
    // Decode logits of tokens [kPrefill, T) one at a time after a prefill, and the final cache, in `mode`.
    auto decode = [&](const Transformer& m, const char* mode, KVCache& cache) {
      CpuDecodeMode set(mode);
      std::vector<torch::Tensor> steps;
      m.forward(ids.narrow(1, 0, kPrefill), pos.narrow(1, 0, kPrefill), {}, &cache, true);
      for (std::int64_t t = kPrefill; t < T; ++t)
        steps.push_back(m.forward(ids.narrow(1, t, 1), pos.narrow(1, t, 1), {}, &cache, true)[0]);
      return torch::cat(steps);
    };
    torch::Tensor f32_logits;
    for (const char* variant : {"float32", "int8", "int4", "bfloat16"}) {
      CAPTURE(variant);
      const bool bf16 = std::string(variant) == "bfloat16";
      WeightOptions w;
      if (!bf16 && std::string(variant) != "float32") w.quantize = variant, w.quantize_group = 32;
      const auto dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
      auto model = Transformer::load(dir, torch::kCPU, dtype, w);
      auto fused_cache = KVCache::allocate(model->config(), 1, T, dtype, torch::kCPU);
      auto torch_cache = KVCache::allocate(model->config(), 1, T, dtype, torch::kCPU);
      auto fused = decode(*model, "fused", fused_cache);
      auto reference = decode(*model, "torch", torch_cache);
      if (std::string(variant) == "float32") f32_logits = reference;
      CAPTURE(max_abs(fused, reference));
      if (!bf16) {
        // The same products (same kernels); norms, rotary, softmax and SwiGLU as the ops compute them, up to the
        // order inside sums.
        CHECK(max_abs(fused, reference) <= 1e-4);
        for (std::size_t l = 0; l < fused_cache.keys.size(); ++l) {
          CHECK(max_abs(fused_cache.keys[l], torch_cache.keys[l]) <= 1e-5);
          CHECK(max_abs(fused_cache.values[l], torch_cache.values[l]) <= 1e-5);
        }
      } else {
        // float32 activations over bfloat16 weights: no further from float32 than LibTorch's bfloat16 ops (which
        // round every intermediate), up to a bfloat16 step of the logits' scale.
        const double fused_error = max_abs(fused, f32_logits), ops_error = max_abs(reference, f32_logits);
        CAPTURE(fused_error);
        CAPTURE(ops_error);
        CHECK(fused_error <= ops_error + 1e-2);
      }
    }
  }
}

TEST_CASE("CPU decode steps with per-row slots and masks (decode_static) equal the LibTorch ops") {
  if (test_device() != "cpu") return;
  for (const char* name : {"qwen2_tied_gqa", "llama_llama3_headdim", "phi3_partial_rotary"}) {
    CAPTURE(name);
    Expected ex(model_dir(name));
    auto model = Transformer::load(model_dir(name), torch::kCPU, torch::kFloat32);
    const auto tokens = ex.ids("prompt.2");
    constexpr std::int64_t kCapacity = 12, kSteps = 8;
    // Row 0 starts at slot 0, row 1 at slot 3 (slots 0-2 are padding it must not see).
    const std::int64_t start[2] = {0, 3};
    auto run = [&](const char* mode) {
      CpuDecodeMode set(mode);
      auto cache = KVCache::allocate(model->config(), 2, kCapacity, torch::kFloat32, torch::kCPU);
      auto mask = torch::zeros({2, kCapacity}, torch::kBool);
      std::vector<torch::Tensor> out;
      for (std::int64_t k = 0; k < kSteps; ++k) {
        auto ids = torch::empty({2, 1}, torch::kLong), positions = torch::empty({2, 1}, torch::kLong);
        auto slot = torch::empty({2}, torch::kLong);
        for (std::int64_t b = 0; b < 2; ++b) {
          const auto s = std::min(start[b] + k, kCapacity - 1);
          ids[b][0] = tokens[static_cast<std::size_t>((k + b) % static_cast<std::int64_t>(tokens.size()))];
          positions[b][0] = s - start[b];
          slot[b] = s;
          mask[b][s] = true;
        }
        out.push_back(model->decode_static(ids, positions, slot, mask, cache));
      }
      return torch::cat(out);
    };
    auto fused = run("fused"), reference = run("torch");
    CHECK(max_abs(fused, reference) <= 1e-4);
  }
}

TEST_CASE("CPU token choice: the one-pass statistics equal LibTorch's log_softmax, entropy and argmax") {
  torch::manual_seed(5);
  const std::int64_t B = 3, V = 5000, usable = 4990;
  auto base = torch::randn({B, V}) * 3;
  base[1][17] = -std::numeric_limits<float>::infinity();
  auto suppress = torch::zeros({1, V});
  suppress[0][base[0].argmax().item<std::int64_t>()] = -std::numeric_limits<float>::infinity();  // row 0's best
  auto history = torch::zeros({B, 4}, torch::kLong);
  history[2][0] = base[2].argmax().item<std::int64_t>();
  auto seed = torch::full({1}, 42, torch::kLong), column = torch::full({1}, 7, torch::kLong);
  SamplingOptions greedy_plain, greedy_penalty, sampled;
  greedy_plain.greedy = greedy_penalty.greedy = true;
  greedy_penalty.repetition_penalty = 1.3f;
  sampled.greedy = false, sampled.temperature = 0.8f, sampled.top_k = 50;
  for (const auto* s : {&greedy_plain, &greedy_penalty, &sampled}) {
    auto fast_logits = base.clone();  // contiguous: the one-pass path
    auto ops_logits = torch::empty({V, B}).t();
    ops_logits.copy_(base);  // not contiguous: LibTorch's ops
    REQUIRE(!ops_logits.is_contiguous());
    auto fast = choose_tokens(fast_logits, usable, *s, history, seed, column, suppress);
    auto ops = choose_tokens(ops_logits, usable, *s, history, seed, column, suppress);
    CHECK(torch::equal(fast.ids, ops.ids));
    CHECK(max_abs(fast.logprob, ops.logprob) <= 1e-5);
    CHECK(max_abs(fast.entropy, ops.entropy) <= 1e-4);
    CHECK(torch::equal(fast_logits, ops_logits.contiguous()));  // padding entries overwritten with -inf in both
  }
  // Per-row settings (the scheduler's choice): greedy rows with nothing else acting take the one-pass argmax.
  RowSampling rows{torch::ones({B}, torch::kBool),
                   torch::ones({B}),
                   torch::zeros({B}, torch::kLong),
                   torch::ones({B}),
                   torch::zeros({B}),
                   torch::ones({B}),
                   torch::zeros({B}, torch::kLong)};
  RowSamplingUse use;
  auto fast_logits = base.clone();
  auto ops_logits = torch::empty({V, B}).t();
  ops_logits.copy_(base);
  auto row_suppress = suppress.expand({B, V}).contiguous();
  auto fast = choose_tokens_rows(fast_logits, usable, rows, use, history, column.expand({B}), row_suppress);
  auto ops = choose_tokens_rows(ops_logits, usable, rows, use, history, column.expand({B}), row_suppress);
  CHECK(torch::equal(fast.ids, ops.ids));
  CHECK(max_abs(fast.logprob, ops.logprob) <= 1e-5);
  CHECK(max_abs(fast.entropy, ops.entropy) <= 1e-4);
}
