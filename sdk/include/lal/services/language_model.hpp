// lal SDK — the language-model service, as plugins see it.
//
// A plugin that only needs text generation uses this interface and neither includes nor links LibTorch. The
// implementation lives in core/lm and is registered by the host (or by the `lm` service plugin) under a name from
// the pipeline's `resources:` section; modules get it with `ctx.service<lal::LanguageModel>("model")`.
//
// THREADING: generate() may be called from any thread, concurrently; the implementation serialises access to the
// underlying model as needed (a call may wait for another to finish). The token callback runs on the calling
// thread, synchronously, between decode steps: keep it short.
// ERRORS: bad requests (empty prompt, unknown chat role) throw std::invalid_argument; engine failures throw
// std::runtime_error with a message naming the model. Cancellation is not an error: generation stops and returns
// what it has with `cancelled = true`.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "lal/module.hpp"

namespace lal {

struct ChatMessage {
  std::string role;  ///< "system", "user" or "assistant"
  std::string content;
};

struct GenerationRequest {
  /// Either `messages` (rendered with the model's chat template) or a raw `prompt` (used verbatim).
  std::vector<ChatMessage> messages;
  std::string prompt;
  bool thinking = false;  ///< chat templates that support it open a <think> block
  int max_new_tokens = 128;
  /// End-of-sequence and stop tokens are not chosen before this many tokens (as transformers' min_new_tokens).
  /// Keeps a small or unfamiliar model from ending a thought before it starts.
  int min_new_tokens = 0;
  /// Sampling settings. Each one left unset takes the model's generation_config.json value, as transformers'
  /// generate() applies it (do_sample, temperature, top_k, top_p, repetition_penalty; transformers' defaults where
  /// the file is silent). greedy unset: greedy unless the file says do_sample or a sampling setting is given here.
  std::optional<bool> greedy;
  std::optional<float> temperature;
  std::optional<int> top_k;                 ///< 0 = off
  std::optional<float> top_p;               ///< 1 = off
  std::optional<float> min_p;               ///< 0 = off
  std::optional<float> repetition_penalty;  ///< 1 = off
  std::uint64_t seed = 0;
  std::vector<std::string> stop;  ///< stop strings (not included in the returned text)
  /// When several modules wait for the same model, higher priority goes first (the right brain's quick
  /// impression before the left brain's analysis). Does not preempt a generation already running.
  int priority = 0;
};

/// One generated token, as streamed to the callback.
struct TokenEvent {
  std::int32_t id = 0;
  std::string text;      ///< newly complete text (may be empty while a UTF-8 character is incomplete)
  float logprob = 0.0f;  ///< log-probability of this token under the (untempered) model distribution
  float entropy = 0.0f;  ///< entropy in nats of that distribution
};

struct GenerationResult {
  std::string text;
  std::vector<std::int32_t> ids;
  float mean_logprob = 0.0f;
  float mean_entropy = 0.0f;
  bool cancelled = false;
  std::string finish_reason;  ///< "stop", "length", "cancelled"
};

class LanguageModel {
 public:
  static constexpr const char* kServiceName = "lal.LanguageModel/1";
  virtual ~LanguageModel() = default;

  /// Human-readable identity ("qwen2 0.5B from /models/x, cpu/float32").
  virtual std::string describe() const = 0;

  /// Generate a continuation. `on_token` returns false to stop early (counts as "stop"). `cancel` is polled
  /// between tokens.
  virtual GenerationResult generate(const GenerationRequest& request,
                                    const std::function<bool(const TokenEvent&)>& on_token = {},
                                    const CancellationToken& cancel = {}) = 0;
};

}  // namespace lal
