// lal::lm — the generation engine: a loaded model + tokenizer, and batched, streamed, cancellable generation.
//
// Torch-free header (pimpl): include it anywhere. The engine implements prefill + KV-cached decode, greedy and
// sampled decoding (temperature, top-k, top-p, min-p, repetition penalty — applied in transformers' order), seeded
// sampling, stop tokens and stop strings, and batches of prompts of different lengths (left padding + attention
// mask; each row's result equals what it would be alone, up to floating-point rounding).
//
// THREADING: an Engine is not safe for concurrent generate() calls; callers serialise (TorchLanguageModel holds a
// mutex). Callbacks run on the calling thread, synchronously, between decode steps.
// ERRORS: load() throws std::runtime_error (model directory, config.json key, safetensors file/tensor/offset, a
// non-finite weight, weights that cannot fit the device: "the model needs X GiB ..., which has Y GiB free");
// generate() throws std::invalid_argument for bad requests (empty prompt, stop strings without a tokenizer) and
// std::runtime_error for engine failures. Cancellation is not an error.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lal/lm/model_config.hpp"

namespace lal::lm {

class Tokenizer;

struct ModelOptions {
  std::string model_path;       ///< directory or hub id ("org/name[@rev]", downloaded on first use)
  std::string device = "auto";  ///< auto (CUDA if available) | cpu | cuda | cuda:N
  /// auto | float32 | bfloat16 | float16 (CUDA) | int8 | int4. auto: on CUDA bfloat16 (config's float16 where it
  /// says so); on the CPU bfloat16 for a bfloat16 checkpoint on an AVX-512 CPU, else float32 (weights used exactly
  /// as stored). int8/int4: weight-only quantization of every decoder linear weight in groups of 32 plus an int8
  /// lm-head, float32 activations on the CPU (bfloat16 on CUDA); CPU decode reads them with fused
  /// dequantise-and-dot kernels. describe() says which and why.
  std::string dtype = "auto";
  bool load_tokenizer = true;  ///< load tokenizer.json when present
  /// How decode steps run: "auto" (CUDA graphs on a GPU, "dynamic" elsewhere), "dynamic" (cache grows, attention
  /// over the filled part), "static" (fixed-shape step over the whole cache: what a CUDA graph captures), "graph"
  /// (static + CUDA graph; GPU only). All give the same tokens up to floating-point rounding.
  std::string decode_mode = "auto";
  /// Weight-only quantization of the decoder layers' linear weights: "none" | "int8" | "int4", symmetric, one
  /// float16 scale per `quantize_group` input columns (lal/lm/quantize.hpp). Dequantized per layer on use, so the
  /// device holds the packed weights plus one dense layer; parameter_bytes() reports the packed size.
  std::string quantize = "none";
  std::int64_t quantize_group = 64;
  /// Decoder layers' linear weights in pinned host memory, streamed to the GPU layer by layer in every forward.
  /// Trades speed (each decode step copies every weight over PCIe) for device memory. Decoding then runs "static"
  /// under "auto"; "graph" is refused. On the CPU it is accepted and does nothing (describe() says so).
  bool cpu_offload = false;
  /// With `quantize` on a GPU: device bytes for keeping the first layers' weights dequantized (no dequantization per
  /// forward for them; identical results). WeightOptions::dequantized_cache_bytes. 0: none.
  std::int64_t dequantized_cache_bytes = 0;
  /// The chat template for message requests: "" = the model's own (chat_template.jinja / tokenizer_config.json),
  /// a built-in format name (chatml, qwen2.5, qwen3, llama2, llama3, phi4) or a Jinja file (lal/lm/chat_template.hpp).
  std::string chat_template;
  /// The forward pass's small operations: "auto" (the fused CUDA kernels on a GPU when this build has them, else
  /// LibTorch ops), "fused" (the kernels; an error where they are not built or not on a GPU), "torch" (LibTorch
  /// ops: the reference). Same results up to floating-point rounding (tested).
  std::string kernels = "auto";
  /// The LanguageModel service (torch_language_model.hpp) decodes concurrent requests together in one batch of at
  /// most `max_batch` sequences (0: 16 on a GPU, 8 on the CPU; 1: one at a time) and keeps up to
  /// `prefix_cache_mb` MiB of conversation-prefix keys/values (-1: 2048 on a GPU, 256 on the CPU; 0: off).
  /// See lal/lm/scheduler.hpp. Engine::generate() does not use them.
  int max_batch = 0;
  std::int64_t prefix_cache_mb = -1;
  /// The LanguageModel service on a GPU prepares at load time what a first request would otherwise wait for (the
  /// batch cache, cuBLAS, the decode step's CUDA graph of every batch bucket for greedy and top-p sampling; see
  /// SchedulerOptions::warm_up_sampling), so loading takes longer and the first turn is as fast as later ones.
  bool warm_up = true;
  /// Load weights holding NaN/±inf (checked on the device after conversion to the dtype). Off: such a model is
  /// refused at load time, naming the file and the tensor.
  bool allow_nonfinite = false;
};

struct SamplingOptions {
  bool greedy = false;  ///< argmax; also when temperature <= 0
  float temperature = 1.0f;
  int top_k = 0;                    ///< 0 = off
  float top_p = 1.0f;               ///< 1 = off
  float min_p = 0.0f;               ///< 0 = off
  float repetition_penalty = 1.0f;  ///< 1 = off; applied over prompt + generated ids
  std::uint64_t seed = 0;
};

/// Sampling settings as a user or a pipeline gives them: each unset field takes the model's generation_config.json
/// value, as transformers' generate() applies it (resolve_sampling()).
struct SamplingRequest {
  std::optional<bool> greedy;  ///< unset: greedy unless generation_config.json says do_sample (or a sampling
                               ///< setting below is given, which asks for sampling)
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int> top_k;
  std::uint64_t seed = 0;
};

/// `request` completed from `defaults`: greedy = request.greedy, else false when any of temperature / top_p / top_k /
/// min_p is given, else !defaults.do_sample; every other unset field takes the default's value (transformers':
/// temperature 1, top_k 50, top_p 1, repetition_penalty 1 where generation_config.json is silent). Throws
/// std::invalid_argument for out-of-range values (temperature < 0, top_p / min_p outside [0, 1], top_k < 0,
/// repetition_penalty <= 0, non-finite numbers), naming the setting.
SamplingOptions resolve_sampling(const GenerationDefaults& defaults, const SamplingRequest& request);

struct GenerateOptions {
  SamplingOptions sampling;
  int max_new_tokens = 128;
  int min_new_tokens = 0;                 ///< stop tokens (eos + stop_ids) are suppressed before this many tokens
  bool stop_at_eos = true;                ///< stop on the config's/generation_config's eos ids
  std::vector<std::int32_t> stop_ids;     ///< more stop tokens
  std::vector<std::string> stop_strings;  ///< needs a tokenizer; the stop string is not part of the text
};

/// One generated token, streamed to the callback.
struct TokenStep {
  std::size_t sequence = 0;  ///< index of the prompt in the batch
  std::int32_t id = 0;
  std::string text;      ///< newly final text (held back while it may be the start of a stop string)
  float logprob = 0.0f;  ///< log-probability under the raw model distribution (before any processing)
  float entropy = 0.0f;  ///< entropy (nats) of that distribution
};

struct SequenceOutput {
  std::vector<std::int32_t> ids;  ///< new tokens, including a final stop token when one was produced
  std::string text;               ///< decoded new text, stop token/string excluded (empty without a tokenizer)
  std::vector<float> logprobs, entropies;
  std::string finish_reason;  ///< "stop", "length", "cancelled"
};

struct GenerateStats {
  std::int64_t batch = 0, prompt_tokens = 0, generated_tokens = 0, decode_steps = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

/// Run `work` with LibTorch's (legacy, CPU) profiler on, and return a per-operator table over the calling thread:
/// calls, self time (time in the operator minus the operators it called), inclusive time, share of the profiled
/// wall time; the `top` operators by self time. For `lal bench generate --profile`.
std::string profile_operators(const std::function<void()>& work, int top = 25);

/// torch's profiler (Kineto) from start_trace() to stop_trace(): CPU operators and, when `cuda`, every CUDA kernel
/// (those replayed from CUDA graphs too) with its device timestamps; stop_trace() waits for the device and saves a
/// Chrome trace at `path` (chrome://tracing, https://ui.perfetto.dev). start_trace() throws std::runtime_error
/// naming `what` when this LibTorch's profiler cannot start. For `lal distill --profile_step` and `lal bench generate
/// --trace`.
void start_trace(bool cuda, const std::string& what);
void stop_trace(bool cuda, const std::string& path);

/// What this build runs on, for `lal --version`: LibTorch version, CUDA runtime/driver, whether the fused kernels
/// are built, and the CUDA devices found ("no CUDA device" otherwise). Never throws.
std::string runtime_report();

class Engine {
 public:
  /// Load model (+ tokenizer). Throws as described above.
  static std::unique_ptr<Engine> load(const ModelOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Float32 logits [T x vocab] of one prompt (token ids, non-empty), one forward over all of it: what a parity check
  /// compares with transformers' model(ids).logits. Row-major, T rows.
  std::vector<float> prompt_logits(const std::vector<std::int32_t>& prompt);

  /// Generate for each prompt (token ids, non-empty). `on_token` returning false stops that sequence ("stop");
  /// `cancelled` is polled before each decode step and stops every unfinished sequence ("cancelled").
  std::vector<SequenceOutput> generate(const std::vector<std::vector<std::int32_t>>& prompts,
                                       const GenerateOptions& options,
                                       const std::function<bool(const TokenStep&)>& on_token = {},
                                       const std::function<bool()>& cancelled = {}, GenerateStats* stats = nullptr);

  const ModelConfig& config() const;
  /// The tokenizer, or null when the model directory has none (then only ids can be used).
  const Tokenizer* tokenizer() const;
  /// Ids >= this are never generated (logit rows past the tokenizer's vocabulary are padding).
  std::int64_t usable_vocab() const;
  const std::string& model_dir() const;  ///< the resolved model directory
  std::string describe() const;          ///< "qwen2 24 layers from DIR, cpu/float32"
  std::string device_name() const;
  std::string dtype_name() const;
  bool fused_kernels() const;  ///< whether the forward pass runs the fused CUDA kernels
  std::int64_t parameter_bytes() const;
  /// Peak memory: CUDA max allocated bytes on a GPU, else the process's peak RSS. reset_peak_memory() resets the
  /// CUDA counter (RSS peaks cannot be reset).
  std::int64_t peak_memory_bytes() const;
  void reset_peak_memory();
  /// Measured device-memory copy bandwidth in bytes/s (reads + writes of a large on-device copy); what a decode step,
  /// which must read every weight once, is bound by. Allocates ~2 GiB on a GPU, 256 MiB on the CPU, for a moment.
  double measure_memory_bandwidth();

 private:
  friend class Scheduler;  // decodes with the model directly (scheduler.hpp)
  struct Impl;
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lal::lm
