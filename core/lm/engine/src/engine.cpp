// Generation: prefill + KV-cached decode over a left-padded batch, logits processing in transformers' order,
// seeded sampling, stop tokens/strings, streaming; and the SDK LanguageModel service on top.
#include "lal/lm/engine.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>

#include "cpu/cpu_linear.hpp"
#include "cpu/matvec.hpp"
#include "engine_impl.hpp"
#include "lal/lm/model_path.hpp"
#include "lal/lm/sampling.hpp"
#include "lal/lm/torch_language_model.hpp"
#include "lal/lm/transformer.hpp"
#if defined(LAL_LM_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif
#if LAL_LM_HAVE_TOKENIZER
#include <filesystem>

#include "lal/lm/chat_template.hpp"
#include "lal/lm/tokenizer.hpp"
#endif

namespace lal::lm {

namespace {

/// Group size of `--dtype int8|int4` (the block size of llama.cpp's Q8_0 and Q4_0).
constexpr std::int64_t kQuantizedDtypeGroup = 32;

torch::Device parse_device(const std::string& s) {
  if (s == "auto") return detail::cuda_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (s == "cpu") return torch::kCPU;
  if (s == "cuda" || s.rfind("cuda:", 0) == 0) {
    if (!detail::cuda_available())
      throw std::runtime_error("device '" + s +
                               "': CUDA is not available (this LibTorch " TORCH_VERSION
                               " has no CUDA support or no GPU is visible); use --device cpu");
    return s == "cuda" ? torch::Device(torch::kCUDA, 0) : torch::Device(s);
  }
  throw std::invalid_argument("device '" + s + "': expected auto, cpu, cuda or cuda:N");
}

/// `--dtype auto` on the CPU: the fastest dtype that uses the checkpoint's weights exactly as stored (the documented
/// tolerance: only activations round, never weights; README "CPU"). bfloat16 for a bfloat16 checkpoint where the
/// CPU has AVX-512 (oneDNN's bfloat16 products and the decode kernels: about twice float32's speed, half the
/// memory), else float32. int8/int4 change the weights: only on request.
torch::ScalarType auto_cpu_dtype(const ModelConfig& config, std::string& why) {
  const bool bf16_checkpoint = config.torch_dtype == "bfloat16";
  const bool avx512 = cpu::detected_isa() == cpu::Isa::Avx512;
  if (bf16_checkpoint && avx512) {
    why = "auto on the CPU: bfloat16 (the checkpoint's dtype; AVX-512 present)";
    return torch::kBFloat16;
  }
  why = bf16_checkpoint ? "auto on the CPU: float32 (bfloat16 checkpoint, but no AVX-512 for fast bfloat16)"
                        : "auto on the CPU: float32 (the checkpoint is " +
                              (config.torch_dtype.empty() ? std::string("of unstated dtype") : config.torch_dtype) +
                              "; bfloat16 would round its weights)";
  return torch::kFloat32;
}

torch::ScalarType parse_dtype(const std::string& s, const torch::Device& device, const ModelConfig& config,
                              std::string& why) {
  if (s == "auto") {
    if (!device.is_cuda()) return auto_cpu_dtype(config, why);
    return config.torch_dtype == "float16" ? torch::kFloat16 : torch::kBFloat16;
  }
  if (s == "float32" || s == "fp32") return torch::kFloat32;
  if (s == "bfloat16" || s == "bf16") return torch::kBFloat16;
  if (s == "float16" || s == "fp16") {
    if (!device.is_cuda())
      throw std::invalid_argument("dtype float16 is not supported on the CPU; use bfloat16 or float32");
    return torch::kFloat16;
  }
  throw std::invalid_argument("dtype '" + s + "': expected auto, float32, bfloat16, float16, int8 or int4");
}

std::string scalar_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kFloat16: return "float16";
    default: return "?";
  }
}

std::int64_t peak_rss_bytes() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return static_cast<std::int64_t>(ru.ru_maxrss) * 1024;
}

/// The graph bakes these in; the seed it reads from a tensor.
bool same_processing(const SamplingOptions& a, const SamplingOptions& b) {
  return a.greedy == b.greedy && a.temperature == b.temperature && a.top_k == b.top_k && a.top_p == b.top_p &&
         a.min_p == b.min_p && a.repetition_penalty == b.repetition_penalty;
}

}  // namespace

/// The device-side state of a decode loop: what the next step reads, and what choosing a token advances. One
/// decode step = forward of `ids` (one token per row, at cache slot `slot`) -> choose the next token at column
/// slot + 1 -> write it to `ids`, `history` and `valid`, advance `positions` and `slot`. No host value is involved,
/// so the whole step is one CUDA graph, and token t+1 can be computed before the host has looked at token t.
/// Kept across generate() calls of the same batch size and capacity (with the graph, which is reused while the
/// sampling settings it baked in stay the same; the seed is a tensor it reads).
struct DecodeLoop {
  std::int64_t batch = 0, capacity = 0;
  KVCache cache;
  torch::Tensor ids, positions;  // int64 [B, 1]: the last chosen token and its rotary position
  torch::Tensor slot;            // int64 [1]: its column = its cache slot
  torch::Tensor valid;           // bool [B, capacity]: real (non-padding) tokens
  torch::Tensor history;         // int64 [B, capacity]: every row's ids; unfilled columns repeat the first id
  torch::Tensor seed;            // int64 [1]: the sampling seed's bits
  torch::Tensor suppress;        // float32 [1, V]: -inf on tokens that may not be chosen yet (min_new_tokens)
  detail::DecodeGraph graph;
  SamplingOptions graph_sampling;  // the processing the graph has baked in
  bool fused_kernels = false;      // the token choice by the CUDA token-statistics kernel (as the model's kernels)

  DecodeLoop(const ModelConfig& cfg, std::int64_t b, std::int64_t cap, torch::ScalarType dtype, torch::Device device)
      : batch(b), capacity(cap), cache(KVCache::allocate(cfg, b, cap, dtype, device)) {
    const auto lopts = torch::TensorOptions().dtype(torch::kLong).device(device);
    ids = torch::zeros({b, 1}, lopts);
    positions = torch::zeros({b, 1}, lopts);
    slot = torch::zeros({1}, lopts);
    valid = torch::zeros({b, cap}, lopts.dtype(torch::kBool));
    history = torch::zeros({b, cap}, lopts);
    seed = torch::zeros({1}, lopts);
    suppress = torch::zeros({1, cfg.vocab_size}, lopts.dtype(torch::kFloat32));
  }

  /// Choose the token at column slot + 1 from `logits` [B, V] and advance; returns [3, B] float64 (id, logprob,
  /// entropy), the one tensor the host reads per step.
  torch::Tensor choose_and_advance(const torch::Tensor& logits, std::int64_t usable, const SamplingOptions& s) {
    slot.add_(1);
    auto choice = choose_tokens(logits, usable, s, history, seed, slot, suppress, fused_kernels);
    auto next = choice.ids.view({batch, 1});
    history.index_copy_(1, slot, next);
    valid.index_fill_(1, slot, true);
    ids.copy_(next);
    positions.add_(1);
    return torch::stack(
        {choice.ids.to(torch::kFloat64), choice.logprob.to(torch::kFloat64), choice.entropy.to(torch::kFloat64)});
  }
};

void Engine::Impl::check_request(const std::vector<std::vector<std::int32_t>>& prompts,
                                 const GenerateOptions& options) const {
  const auto vocab = model->config().vocab_size;
  if (prompts.empty()) throw std::invalid_argument("generate: no prompts");
  if (options.max_new_tokens < 0) throw std::invalid_argument("generate: max_new_tokens must be >= 0");
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) throw std::invalid_argument("generate: prompt " + std::to_string(b) + " is empty");
    for (auto id : prompts[b])
      if (id < 0 || id >= vocab)
        throw std::invalid_argument("generate: prompt " + std::to_string(b) + " has token id " + std::to_string(id) +
                                    " outside the model's vocabulary [0, " + std::to_string(vocab) + ")");
  }
  if (!options.stop_strings.empty() && !tokenizer_or_null())
    throw std::invalid_argument("generate: stop strings need a tokenizer (no tokenizer.json in " + dir + ")");
  const auto& s = options.sampling;
  if (!s.greedy && s.temperature > 0 && (s.top_p <= 0 || s.top_p > 1))
    throw std::invalid_argument("generate: top_p must be in (0, 1]");
  if (s.min_p < 0 || s.min_p > 1) throw std::invalid_argument("generate: min_p must be in [0, 1]");
  if (s.repetition_penalty <= 0) throw std::invalid_argument("generate: repetition_penalty must be > 0");
}

std::set<std::int64_t> Engine::Impl::stop_ids(const GenerateOptions& options) const {
  std::set<std::int64_t> ids(options.stop_ids.begin(), options.stop_ids.end());
  if (options.stop_at_eos) ids.insert(eos_ids.begin(), eos_ids.end());
  return ids;
}

SequenceState::SequenceState(const Tokenizer* tokenizer, const GenerateOptions& options,
                             std::set<std::int64_t> stop_ids)
    : tokenizer_(tokenizer), options_(options), stop_ids_(std::move(stop_ids)) {
#if LAL_LM_HAVE_TOKENIZER
  if (tokenizer_) decoder_.emplace(tokenizer_->stream_decoder(/*skip_special_tokens=*/true));
#endif
}

bool SequenceState::accept(TokenStep& ev) {
  out_.ids.push_back(ev.id);
  out_.logprobs.push_back(ev.logprob);
  out_.entropies.push_back(ev.entropy);
  const bool stop_token = stop_ids_.count(ev.id) > 0;
#if LAL_LM_HAVE_TOKENIZER
  if (decoder_ && !stop_token) ev.text = text_.append(decoder_->push(ev.id), options_.stop_strings);
#endif
  const bool finish = stop_token || text_.hit || static_cast<int>(out_.ids.size()) >= options_.max_new_tokens;
  if (finish && !text_.hit) {
#if LAL_LM_HAVE_TOKENIZER
    if (decoder_) ev.text += text_.append(decoder_->flush(), options_.stop_strings);
#endif
    if (!text_.hit) ev.text += text_.finish();
  }
  out_.finish_reason = (stop_token || text_.hit) ? "stop" : "length";
  return finish;
}

SequenceOutput SequenceState::output() const {
  SequenceOutput o = out_;
  o.text = text_.all.substr(0, text_.emitted);
  return o;
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::load(const ModelOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->dir = resolve_model_path(options.model_path);
  impl->decode_mode = options.decode_mode;
  if (impl->decode_mode != "auto" && impl->decode_mode != "dynamic" && impl->decode_mode != "static" &&
      impl->decode_mode != "graph")
    throw std::invalid_argument("decode mode '" + impl->decode_mode + "': expected auto, dynamic, static or graph");
  const ModelConfig config = ModelConfig::from_dir(impl->dir);
  for (const auto& key : config.unknown_keys)
    spdlog::info("{} (not read by lal; not in its list of keys known to be irrelevant)", key);
  const auto device = parse_device(options.device);
  // --dtype int8|int4: weight-only quantization of every linear weight, lm-head included (int8), in groups of 32
  // (llama.cpp's Q8_0/Q4_0 block: the same weights can be written to GGUF), computed in float32 on the CPU.
  std::string quantize = options.quantize;
  std::int64_t quantize_group = options.quantize_group;
  const bool quantized_dtype = options.dtype == "int8" || options.dtype == "int4";
  if (quantized_dtype) {
    if (quantize != "none" && quantize != options.dtype)
      throw std::invalid_argument("dtype '" + options.dtype + "' and quantize '" + quantize + "': give one of them");
    quantize = options.dtype;
    quantize_group = kQuantizedDtypeGroup;
  }
  std::string dtype_why;
  const auto dtype = parse_dtype(quantized_dtype ? "auto" : options.dtype, device, config, dtype_why);
  if (quantized_dtype)
    dtype_why = options.dtype + ": weights in groups of " + std::to_string(kQuantizedDtypeGroup) + ", lm-head int8, " +
                scalar_name(dtype) + " activations";
  impl->dtype_choice = dtype_why;
  if (device.is_cpu()) spdlog::debug("CPU: {}", cpu::threads_report());
  if (impl->decode_mode == "graph" && !detail::DecodeGraph::supported(device))
    throw std::invalid_argument("decode mode 'graph' needs a CUDA device");
  const bool offload = options.cpu_offload && !device.is_cpu();
  if (offload && impl->decode_mode == "graph")
    throw std::invalid_argument("decode mode 'graph' cannot stream offloaded weights; use static or auto");
  if (offload && impl->decode_mode == "auto") impl->decode_mode = "static";  // weight copies stay out of graphs
  if (options.kernels != "auto" && options.kernels != "fused" && options.kernels != "torch")
    throw std::invalid_argument("kernels '" + options.kernels + "': expected auto, fused or torch");
  WeightOptions weights{quantize, quantize_group, options.cpu_offload, options.allow_nonfinite, quantized_dtype};
  weights.dequantized_cache_bytes = options.dequantized_cache_bytes;
  impl->model = Transformer::load(impl->dir, device, dtype, weights);
  if (options.kernels == "fused" || (options.kernels == "auto" && Transformer::kernels_built() && device.is_cuda()))
    impl->model->set_fused_kernels(true);
  impl->usable_vocab = config.vocab_size;
  impl->eos_ids = config.eos_token_ids;
#if LAL_LM_HAVE_TOKENIZER
  namespace fs = std::filesystem;
  if (options.load_tokenizer && fs::exists(fs::path(impl->dir) / "tokenizer.json")) {
    impl->tokenizer = Tokenizer::from_file((fs::path(impl->dir) / "tokenizer.json").string());
    // Embedding matrices are often padded (Qwen: 152064 rows for 151665 tokens): never sample the padding.
    impl->usable_vocab =
        std::min<std::int64_t>(config.vocab_size, static_cast<std::int64_t>(impl->tokenizer->vocab_size()));
    if (impl->eos_ids.empty() && impl->tokenizer->eos_id()) impl->eos_ids.push_back(*impl->tokenizer->eos_id());
  }
#else
  (void)options.load_tokenizer;
#endif
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const ModelConfig& Engine::config() const { return impl_->model->config(); }
const Tokenizer* Engine::tokenizer() const { return impl_->tokenizer_or_null(); }
std::int64_t Engine::usable_vocab() const { return impl_->usable_vocab; }
const std::string& Engine::model_dir() const { return impl_->dir; }
std::string Engine::device_name() const { return impl_->model->device().str(); }
std::string Engine::dtype_name() const { return scalar_name(impl_->model->dtype()); }
bool Engine::fused_kernels() const { return impl_->model->fused_kernels(); }

std::string profile_operators(const std::function<void()>& work, int top) {
  namespace prof = torch::autograd::profiler;
  struct Totals {
    std::int64_t calls = 0;
    double self_us = 0, total_us = 0;
  };
  std::map<std::string, Totals> by_name;
  double wall_us = 0;
  {
    auto collect = [&](const prof::thread_event_lists& lists) {
      for (const auto& events : lists) {
        struct Open {
          const prof::LegacyEvent* start;
          double children_us;
        };
        std::vector<Open> stack;
        for (const auto& e : events) {
          if (e.kind() == prof::EventKind::PushRange) {
            stack.push_back({&e, 0});
          } else if (e.kind() == prof::EventKind::PopRange && !stack.empty()) {
            const Open open = stack.back();
            stack.pop_back();
            const double us = open.start->cpuElapsedUs(e);
            auto& t = by_name[open.start->name()];
            ++t.calls;
            t.total_us += us;
            t.self_us += us - open.children_us;
            if (!stack.empty()) stack.back().children_us += us;
          }
        }
      }
    };
    prof::TLSLegacyProfilerGuard guard(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU),
                                       collect);
    const auto t0 = std::chrono::steady_clock::now();
    work();
    wall_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  }
  std::vector<std::pair<std::string, Totals>> rows(by_name.begin(), by_name.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.self_us > b.second.self_us; });
  std::string out = "| operator | calls | self ms | inclusive ms | self % of wall |\n| --- | --- | --- | --- | --- |\n";
  char line[256];
  double listed = 0;
  for (int i = 0; i < top && i < static_cast<int>(rows.size()); ++i) {
    const auto& [name, t] = rows[static_cast<std::size_t>(i)];
    listed += t.self_us;
    std::snprintf(line, sizeof line, "| %s | %lld | %.2f | %.2f | %.1f |\n", name.c_str(),
                  static_cast<long long>(t.calls), t.self_us / 1e3, t.total_us / 1e3, 100.0 * t.self_us / wall_us);
    out += line;
  }
  std::snprintf(line, sizeof line, "| (wall time of the profiled work; listed self time %.1f %%) | | %.2f | | |\n",
                100.0 * listed / wall_us, wall_us / 1e3);
  return out + line;
}

void start_trace(bool cuda, const std::string& what) {
  namespace prof = torch::profiler::impl;
  const prof::ProfilerConfig config(prof::ProfilerState::KINETO, /*report_input_shapes=*/true);
  std::set<prof::ActivityType> activities{prof::ActivityType::CPU};
  if (cuda) {
    activities.insert(prof::ActivityType::CUDA);
    detail::synchronize(torch::Device(torch::kCUDA));  // the current device
  }
  try {
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
  } catch (const std::exception& e) {
    throw std::runtime_error(what + ": torch's profiler cannot start in this LibTorch: " + e.what());
  }
}

void stop_trace(bool cuda, const std::string& path) {
  if (cuda) detail::synchronize(torch::Device(torch::kCUDA));  // the current device
  auto result = torch::autograd::profiler::disableProfiler();
  if (result) result->save(path);
}

std::string runtime_report() {
  std::string out = "LibTorch " TORCH_VERSION;
#if defined(LAL_LM_HAVE_CUDA)
  int runtime = 0, driver = 0;
  cudaRuntimeGetVersion(&runtime);
  cudaDriverGetVersion(&driver);
  auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  out += ", CUDA runtime " + version(runtime) + (driver ? ", driver supports CUDA " + version(driver) : "");
  out += Transformer::kernels_built() ? ", fused CUDA kernels built" : ", fused CUDA kernels not built (no nvcc)";
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  if (count == 0) out += "\nno CUDA device visible: --device auto uses the CPU";
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    char mem[32];
    std::snprintf(mem, sizeof mem, "%.1f GiB", static_cast<double>(p.totalGlobalMem) / (1ull << 30));
    out += "\ncuda:" + std::to_string(i) + " " + p.name + " (" + mem + ", compute capability " +
           std::to_string(p.major) + "." + std::to_string(p.minor) + ")" + (i == 0 ? ": --device auto uses it" : "");
  }
#else
  out += " (CPU only: built against a LibTorch without CUDA; see README \"GPU\" for a CUDA build)";
#endif
  return out;
}
std::int64_t Engine::parameter_bytes() const { return impl_->model->parameter_bytes(); }
std::string Engine::describe() const {
  const auto& c = config();
  const auto& w = impl_->model->weight_options();
  std::string storage;
  if (quantize_bits(w.quantize)) storage += ", " + w.quantize + " (group " + std::to_string(w.quantize_group) + ")";
  if (w.cpu_offload)
    storage += impl_->model->offloaded() ? ", layers streamed from pinned host memory"
                                         : ", cpu_offload ignored (weights are in host memory already)";
  if (w.quantize_lm_head) storage += ", lm-head int8";
  if (const auto kept = impl_->model->dequantized_summary(); !kept.empty()) storage += ", " + kept;
  if (fused_kernels()) storage += ", fused CUDA kernels";
  if (!impl_->dtype_choice.empty()) storage += " (" + impl_->dtype_choice + ")";
  return std::string(family_name(c.family)) + " (" + std::to_string(c.num_layers) + " layers, hidden " +
         std::to_string(c.hidden_size) + ") from " + impl_->dir + ", " + device_name() + "/" + dtype_name() + storage;
}
std::int64_t Engine::peak_memory_bytes() const {
  const auto d = impl_->model->device();
  return d.is_cuda() ? detail::cuda_peak_allocated(d) : peak_rss_bytes();
}
void Engine::reset_peak_memory() { detail::cuda_reset_peak(impl_->model->device()); }

double Engine::measure_memory_bandwidth() {
  c10::InferenceMode inference;
  const auto device = impl_->model->device();
  const std::int64_t bytes = device.is_cuda() ? (1ll << 30) : (128ll << 20);
  auto a = torch::empty({bytes / 4}, torch::TensorOptions().dtype(torch::kFloat32).device(device)).fill_(1.0f);
  auto b = torch::empty_like(a);
  b.copy_(a);  // warm up
  detail::synchronize(device);
  const int reps = 10;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) b.copy_(a);
  detail::synchronize(device);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * static_cast<double>(bytes) * reps / s;
}

SamplingOptions resolve_sampling(const GenerationDefaults& d, const SamplingRequest& r) {
  auto finite = [](const char* name, double v) {
    if (!std::isfinite(v)) throw std::invalid_argument(std::string(name) + " must be finite");
    return v;
  };
  SamplingOptions s;
  const bool asks_sampling = r.temperature || r.top_p || r.top_k || r.min_p;
  s.greedy = r.greedy ? *r.greedy : (asks_sampling ? false : !d.do_sample);
  s.temperature = static_cast<float>(finite("temperature", r.temperature ? *r.temperature : d.temperature));
  s.top_p = static_cast<float>(finite("top_p", r.top_p ? *r.top_p : d.top_p));
  s.min_p = static_cast<float>(finite("min_p", r.min_p ? *r.min_p : d.min_p));
  s.repetition_penalty = static_cast<float>(
      finite("repetition_penalty", r.repetition_penalty ? *r.repetition_penalty : d.repetition_penalty));
  s.top_k = r.top_k ? *r.top_k : static_cast<int>(d.top_k);
  s.seed = r.seed;
  if (s.temperature < 0) throw std::invalid_argument("temperature must be >= 0 (0 = greedy)");
  if (s.top_p < 0 || s.top_p > 1) throw std::invalid_argument("top_p must be in [0, 1]");
  if (s.min_p < 0 || s.min_p > 1) throw std::invalid_argument("min_p must be in [0, 1]");
  if (s.top_k < 0) throw std::invalid_argument("top_k must be >= 0 (0 = off)");
  if (s.repetition_penalty <= 0) throw std::invalid_argument("repetition_penalty must be > 0 (1 = off)");
  return s;
}

std::vector<float> Engine::prompt_logits(const std::vector<std::int32_t>& prompt) {
  const Transformer& model = *impl_->model;
  const auto V = model.config().vocab_size;
  if (prompt.empty()) throw std::invalid_argument("prompt_logits: empty prompt");
  for (auto id : prompt)
    if (id < 0 || id >= V)
      throw std::invalid_argument("prompt_logits: token id " + std::to_string(id) + " outside the vocabulary [0, " +
                                  std::to_string(V) + ")");
  c10::InferenceMode inference;
  const auto T = static_cast<std::int64_t>(prompt.size());
  auto ids = torch::tensor(std::vector<std::int64_t>(prompt.begin(), prompt.end()), torch::kLong).view({1, T});
  auto positions = torch::arange(T, torch::kLong).view({1, T});
  auto logits = model.forward(ids, positions, {}, nullptr, false)[0].to(torch::kCPU, torch::kFloat32).contiguous();
  return std::vector<float>(logits.data_ptr<float>(), logits.data_ptr<float>() + logits.numel());
}

std::vector<SequenceOutput> Engine::generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                             const GenerateOptions& options,
                                             const std::function<bool(const TokenStep&)>& on_token,
                                             const std::function<bool()>& cancelled, GenerateStats* stats) {
  const Transformer& model = *impl_->model;
  const ModelConfig& cfg = model.config();
  impl_->check_request(prompts, options);
  const auto& s = options.sampling;

  c10::InferenceMode inference;
  const auto B = static_cast<std::int64_t>(prompts.size());
  std::int64_t L = 0;
  for (const auto& p : prompts) L = std::max<std::int64_t>(L, static_cast<std::int64_t>(p.size()));
  const std::int64_t capacity = L + std::max(options.max_new_tokens, 1);
  const auto device = model.device();

  // Left-padded prompt ids, positions, validity mask; the history (for the repetition penalty) is padded with the
  // row's first token, which is in the prompt anyway, so the padding adds no penalty of its own.
  auto ids = torch::empty({B, L}, torch::kLong);
  auto positions = torch::zeros({B, L}, torch::kLong);
  auto history = torch::empty({B, capacity}, torch::kLong);
  auto valid = torch::zeros({B, capacity}, torch::kBool);
  bool padded = false;
  std::int64_t prompt_tokens = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<std::size_t>(b)];
    const auto n = static_cast<std::int64_t>(p.size());
    const auto pad = L - n;
    padded = padded || pad > 0;
    prompt_tokens += n;
    auto ia = ids.accessor<std::int64_t, 2>();
    auto pa = positions.accessor<std::int64_t, 2>();
    auto ha = history.accessor<std::int64_t, 2>();
    auto va = valid.accessor<bool, 2>();
    for (std::int64_t j = 0; j < capacity; ++j) {
      const auto id = j < pad || j >= L ? p[0] : p[static_cast<std::size_t>(j - pad)];
      ha[b][j] = id;
      if (j >= L) continue;
      ia[b][j] = id;
      pa[b][j] = j < pad ? 0 : j - pad;
      va[b][j] = j >= pad;
    }
  }

  const bool use_graph =
      impl_->decode_mode == "graph" || (impl_->decode_mode == "auto" && detail::DecodeGraph::supported(device));
  const bool use_static = use_graph || impl_->decode_mode == "static";
  std::unique_ptr<DecodeLoop> local_loop;
  DecodeLoop* loop = nullptr;
  if (use_static) {
    auto& kept = impl_->static_loop;
    if (!kept || kept->batch != B || kept->capacity != capacity) {
      kept.reset();  // free the old cache and graph first
      kept = std::make_unique<DecodeLoop>(cfg, B, capacity, model.dtype(), device);
    }
    loop = kept.get();
  } else {
    local_loop = std::make_unique<DecodeLoop>(cfg, B, capacity, model.dtype(), device);
    loop = local_loop.get();
  }
  loop->cache.length = 0;
  loop->valid.copy_(valid);
  loop->history.copy_(history);
  loop->positions.copy_(positions.narrow(1, L - 1, 1));
  loop->slot.fill_(L - 1);
  loop->seed.fill_(static_cast<std::int64_t>(s.seed));  // the uint64's bits
  loop->fused_kernels = model.fused_kernels();
  if (use_graph && loop->graph.captured() && !same_processing(loop->graph_sampling, s)) loop->graph.reset();

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  auto logits = model.forward(ids.to(device), positions.to(device),
                              padded ? loop->valid.narrow(1, 0, L) : torch::Tensor(), &loop->cache,
                              /*last_only=*/true);
  detail::synchronize(device);
  const auto t1 = clock::now();

  const auto usable = impl_->usable_vocab;
  // transformers' Phi3ForCausalLM drops the KV cache at the step where the sequence first grows past longrope's
  // original_max_position_embeddings and recomputes every position with the long factors (prepare_inputs_for_
  // generation); lal does the same, at the same step, in every decode mode.
  const std::int64_t relong_step =
      cfg.family == Family::Phi3 && cfg.rope.type == "longrope" && L <= cfg.rope.original_max_position_embeddings
          ? cfg.rope.original_max_position_embeddings - L
          : -1;
  auto recompute_all = [&, loop](std::int64_t step) -> torch::Tensor {
    const auto S = L + step + 1;
    auto all_positions = torch::zeros({B, S}, torch::kLong);
    auto ap = all_positions.accessor<std::int64_t, 2>();
    for (std::int64_t b = 0; b < B; ++b) {
      const auto pad = L - static_cast<std::int64_t>(prompts[static_cast<std::size_t>(b)].size());
      for (std::int64_t j = pad; j < S; ++j) ap[b][j] = j - pad;
    }
    loop->cache.length = 0;
    auto all_logits = model.forward(loop->history.narrow(1, 0, S), all_positions.to(device),
                                    padded ? loop->valid.narrow(1, 0, S) : torch::Tensor(), &loop->cache,
                                    /*last_only=*/true);
    return loop->choose_and_advance(all_logits.select(1, 0), usable, s);
  };
  auto decode_step = [&, loop](std::int64_t step) -> torch::Tensor {  // computes the token of step + 1
    if (step == relong_step) return recompute_all(step);
    if (!use_static) {
      auto next_logits =
          model.forward(loop->ids, loop->positions, padded ? loop->valid.narrow(1, 0, L + step + 1) : torch::Tensor(),
                        &loop->cache, /*last_only=*/true);
      return loop->choose_and_advance(next_logits.select(1, 0), usable, s);
    }
    auto run = [&, loop] {
      auto step_logits = model.decode_static(loop->ids, loop->positions, loop->slot, loop->valid, loop->cache);
      return loop->choose_and_advance(step_logits.select(1, 0), usable, s);
    };
    if (!use_graph) return run();
    if (!loop->graph.captured()) {
      // Capturing runs the step once for real; undo its advance so that the first replay takes this step.
      auto saved = std::vector<torch::Tensor>{loop->ids.clone(), loop->positions.clone(), loop->slot.clone(),
                                              loop->valid.clone(), loop->history.clone()};
      loop->graph.capture(run, device);
      loop->graph_sampling = s;
      loop->ids.copy_(saved[0]);
      loop->positions.copy_(saved[1]);
      loop->slot.copy_(saved[2]);
      loop->valid.copy_(saved[3]);
      loop->history.copy_(saved[4]);
    }
    return loop->graph.replay();
  };

  const std::set<std::int64_t> stop_ids = impl_->stop_ids(options);
  std::vector<SequenceState> seqs;
  for (std::int64_t b = 0; b < B; ++b) seqs.emplace_back(tokenizer(), options, stop_ids);
  std::vector<bool> done(static_cast<std::size_t>(B), options.max_new_tokens == 0);
  std::vector<SequenceOutput> out(static_cast<std::size_t>(B));

  // min_new_tokens: stop tokens get -inf in the choice (not in the reported distribution) until token number
  // min_new_tokens. The mask is device state read by each step (and by a captured graph) when it runs.
  loop->suppress.zero_();
  torch::Tensor stop_index;
  if (options.min_new_tokens > 0 && !stop_ids.empty())
    stop_index = torch::tensor(std::vector<std::int64_t>(stop_ids.begin(), stop_ids.end()),
                               torch::TensorOptions().dtype(torch::kLong))
                     .to(device);
  auto suppress_for = [&](std::int64_t token_index) {
    if (!stop_index.defined()) return;
    if (token_index == 0) loop->suppress.index_fill_(1, stop_index, -std::numeric_limits<float>::infinity());
    if (token_index == options.min_new_tokens) loop->suppress.zero_();
  };

  // The device runs one step ahead of the host: the step that computes token t+1 is queued before token t is read
  // back (asynchronously), so the host's streaming work overlaps the device's and no step waits on a round-trip.
  // When a sequence stops, at most one step was computed for nothing.
  detail::HostReader reader(device, /*depth=*/2);
  suppress_for(0);
  if (options.max_new_tokens > 0) reader.push(loop->choose_and_advance(logits.select(1, 0), usable, s));
  std::int64_t steps = 0, generated = 0;
  for (int step = 0; step < options.max_new_tokens; ++step) {
    if (cancelled && cancelled()) {
      for (std::int64_t b = 0; b < B; ++b)
        if (!done[b]) {
          done[b] = true;
          seqs[b].cancelled();
        }
      break;
    }
    if (step + 1 < options.max_new_tokens) {
      suppress_for(step + 1);
      reader.push(decode_step(step));
    }
    auto packed = reader.pop();
    auto pk = packed.accessor<double, 2>();
    ++steps;
    for (std::int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;
      TokenStep ev{static_cast<std::size_t>(b),
                   static_cast<std::int32_t>(pk[0][b]),
                   {},
                   static_cast<float>(pk[1][b]),
                   static_cast<float>(pk[2][b])};
      ++generated;
      bool finish = seqs[b].accept(ev);
      if (on_token && !on_token(ev)) {
        finish = true;
        seqs[b].stopped();
      }
      if (finish) done[b] = true;
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
  }
  for (std::int64_t b = 0; b < B; ++b) {
    out[b] = seqs[b].output();
    if (options.max_new_tokens == 0) out[b].finish_reason = "length";
  }
  detail::synchronize(device);
  if (stats) {
    stats->batch = B;
    stats->prompt_tokens = prompt_tokens;
    stats->generated_tokens = generated;
    stats->decode_steps = steps;
    stats->prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    stats->decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// TorchLanguageModel

TorchLanguageModel::TorchLanguageModel(std::unique_ptr<Engine> engine, std::string chat_template,
                                       SchedulerOptions scheduling)
    : engine_(std::move(engine)),
      chat_template_override_(std::move(chat_template)),
      scheduler_(std::make_unique<Scheduler>(*engine_, scheduling)) {}
TorchLanguageModel::~TorchLanguageModel() = default;

std::string TorchLanguageModel::describe() const { return engine_->describe(); }

SequenceRequest TorchLanguageModel::sequence_for(const GenerationRequest& request) const {
  const auto* tok = engine_->tokenizer();
  if (!tok) throw std::invalid_argument(describe() + ": text generation needs a tokenizer.json next to the model");
  std::vector<std::int32_t> prompt;
  std::vector<std::string> stops = request.stop;
#if LAL_LM_HAVE_TOKENIZER
  if (!request.messages.empty()) {
    std::vector<ChatMessage> messages;
    for (const auto& m : request.messages) messages.push_back({m.role, m.content});
    ChatRenderOptions render;
    render.thinking = request.thinking ? ThinkingMode::Open : ThinkingMode::TemplateDefault;
    std::string text;
    try {
      std::shared_ptr<const ChatTemplate> chat;
      {
        std::lock_guard<std::mutex> lock(mutex_);  // concurrent requests: the template is loaded once
        if (!chat_)
          chat_ =
              std::make_shared<const ChatTemplate>(ChatTemplate::load(engine_->model_dir(), chat_template_override_));
        chat = chat_;
      }
      text = chat->render(messages, render);
      for (const auto& s : chat->stop_texts()) stops.push_back(s);
    } catch (const ChatTemplateError& e) {
      throw std::invalid_argument(describe() + ": " + e.what());
    }
    prompt = tok->encode(text, /*add_special_tokens=*/true);
  } else {
    if (request.prompt.empty()) throw std::invalid_argument("generate: empty prompt and no messages");
    prompt = tok->encode(request.prompt, /*add_special_tokens=*/true);
  }
#endif
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt encodes to no tokens");
  if (request.max_new_tokens < 0) throw std::invalid_argument("generate: max_new_tokens < 0");

  GenerateOptions opts;
  opts.max_new_tokens = request.max_new_tokens;
  if (request.min_new_tokens < 0) throw std::invalid_argument("generate: min_new_tokens < 0");
  opts.min_new_tokens = request.min_new_tokens;
  opts.stop_strings = stops;
  SamplingRequest sampling;  // unset settings come from the model's generation_config.json
  sampling.greedy = request.greedy;
  sampling.temperature = request.temperature;
  sampling.top_k = request.top_k;
  sampling.top_p = request.top_p;
  sampling.min_p = request.min_p;
  sampling.repetition_penalty = request.repetition_penalty;
  sampling.seed = request.seed;
  try {
    opts.sampling = resolve_sampling(engine_->config().generation, sampling);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument("generate: " + std::string(e.what()));
  }

  SequenceRequest sequence;
  sequence.prompt = std::move(prompt);
  sequence.options = opts;
  sequence.priority = request.priority;
  return sequence;
}

GenerationResult TorchLanguageModel::result_of(SequenceOutput o) {
  GenerationResult r;
  r.text = std::move(o.text);
  r.ids = std::move(o.ids);
  for (float v : o.logprobs) r.mean_logprob += v;
  for (float v : o.entropies) r.mean_entropy += v;
  if (!r.ids.empty()) {
    r.mean_logprob /= static_cast<float>(r.ids.size());
    r.mean_entropy /= static_cast<float>(r.ids.size());
  }
  r.finish_reason = parse_enum<FinishReason>(o.finish_reason, "the engine's finish reason");
  r.cancelled = r.finish_reason == FinishReason::cancelled;
  return r;
}

GenerationResult TorchLanguageModel::generate(const GenerationRequest& request,
                                              const std::function<bool(const TokenEvent&)>& on_token,
                                              const CancellationToken& cancel) {
  SequenceRequest sequence = sequence_for(request);
  sequence.cancelled = [cancel] { return cancel.cancelled(); };
  if (on_token)
    sequence.on_token = [&](const TokenStep& st) {
      return on_token(TokenEvent{st.id, st.text, st.logprob, st.entropy});
    };
  try {
    return result_of(scheduler_->generate(std::move(sequence)));
  } catch (const std::invalid_argument&) {
    throw;
  } catch (const std::exception& e) {
    throw std::runtime_error(describe() + ": " + e.what());
  }
}

void TorchLanguageModel::submit(const GenerationRequest& request, TokenCallback on_token, DoneCallback on_done,
                                const CancellationToken& cancel) {
  // An adapter over Scheduler::submit: the callbacks run on the scheduler thread, as the sequence's own callbacks.
  // They may be code of a plugin whose host waits for on_done before unloading it, so both are dropped before
  // on_done returns, not whenever the scheduler lets go of the sequence.
  struct Callbacks {
    TokenCallback on_token;
    DoneCallback on_done;
  };
  auto callbacks = std::make_shared<Callbacks>(Callbacks{std::move(on_token), std::move(on_done)});
  auto report = [this, callbacks](SequenceOutput output, std::exception_ptr error) {
    GenerationOutcome outcome;
    outcome.result = result_of(std::move(output));
    if (error) {
      try {
        std::rethrow_exception(error);
      } catch (const std::invalid_argument& e) {
        outcome.error = e.what();
        outcome.invalid_request = true;
      } catch (const std::exception& e) {
        outcome.error = describe() + ": " + e.what();
      } catch (...) {
        outcome.error = describe() + ": unknown failure";
      }
    }
    callbacks->on_token = nullptr;
    DoneCallback done = std::move(callbacks->on_done);
    callbacks->on_done = nullptr;
    if (done) done(outcome);
  };
  try {
    SequenceRequest sequence = sequence_for(request);
    sequence.cancelled = [cancel] { return cancel.cancelled(); };
    sequence.on_token = [callbacks](const TokenStep& st) {
      if (callbacks->on_token) callbacks->on_token(TokenEvent{st.id, st.text, st.logprob, st.entropy});
      return true;
    };
    sequence.on_done = report;
    scheduler_->submit(std::move(sequence));
  } catch (...) {  // refused before it was queued (a bad request, the model unloading): on_done says why
    report(SequenceOutput{}, std::current_exception());
  }
}

std::shared_ptr<lal::LanguageModel> load_language_model(const ModelOptions& options) {
  if (options.max_batch < 0) throw std::invalid_argument("max_batch must be >= 0 (0: automatic)");
  if (options.prefix_cache_mb < -1) throw std::invalid_argument("prefix_cache_mb must be >= -1 (-1: automatic)");
  SchedulerOptions scheduling;
  scheduling.max_batch = options.max_batch;
  scheduling.prefix_cache_bytes = options.prefix_cache_mb < 0 ? -1 : options.prefix_cache_mb << 20;
  auto engine = Engine::load(options);
  if (options.warm_up) {  // greedy requests, and sampled ones with top-p (what lal's thinking regions send)
    const auto& defaults = engine->config().generation;
    SamplingRequest greedy, nucleus;
    greedy.greedy = true;
    nucleus.temperature = 0.7f;
    nucleus.top_p = 0.9f;
    scheduling.warm_up_sampling = {resolve_sampling(defaults, greedy), resolve_sampling(defaults, nucleus)};
  }
  return std::make_shared<TorchLanguageModel>(std::move(engine), options.chat_template, scheduling);
}

}  // namespace lal::lm
