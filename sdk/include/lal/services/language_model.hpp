// lal SDK — the language-model service, as plugins see it.
//
// A plugin that only needs text generation uses this interface and neither includes nor links LibTorch. The
// implementation lives in core/lm; the runtime creates it from the pipeline's `resources:` (kind language_model,
// see lal/runtime/resources.hpp) and offers it as a service under the resource's name; modules get it with
// `ctx.service<lal::LanguageModel>("model")`.
//
// TWO WAYS TO GENERATE.
//   * submit(request, on_token, on_done, cancel) returns at once. On a model obtained through ctx.service (bound to
//     the module, see bind_to_module) on_token runs on the module's strand once per generated token, in order, and
//     on_done runs there exactly once after the last token: with the result, or with the error message. The module
//     counts as busy until on_done ran. Cancellation (the token's turn or scope) ends the generation early with
//     `cancelled = true`; it is not an error. This is how a module asks the model without blocking its strand.
//   * generate(request, on_token, cancel) blocks the calling thread until done (a thin wrapper over submit unless an
//     implementation offers a direct path); on_token runs on the generating thread. For tools and tests; a module
//     handler should use submit.
//
// SERVICE VERSIONS. "lal.LanguageModel/2" adds submit(); the runtime also offers every /2 model as
// "lal.LanguageModel/1" (the /1 vtable is a prefix of /2).
//
// IMPLEMENTING IT (core/lm, test doubles): override describe() and submit(); generate() has a default. submit() may
// be called from any thread, concurrently; an implementation serialises or batches as it likes (higher `priority`
// first). A raw submit() (not through bind_to_module) calls its callbacks on the implementation's own thread: keep
// them short and never call the model from inside them.
// ERRORS: bad requests (empty prompt, unknown chat role) are reported as errors (generate() throws
// std::invalid_argument; submit() calls on_done with `error`); engine failures name the model.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "lal/messages.hpp"
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
  FinishReason finish_reason = FinishReason::stop;  ///< stop, length or cancelled
};

/// What on_done receives: the result, or an error (then `result` holds what was generated before it).
struct GenerationOutcome {
  GenerationResult result;
  std::string error;             ///< empty on success
  bool invalid_request = false;  ///< the error is about the request (std::invalid_argument), not the engine
  explicit operator bool() const { return error.empty(); }
};

class LanguageModel {
 public:
  static constexpr const char* kServiceName = "lal.LanguageModel/2";
  static constexpr const char* kServiceNameV1 = "lal.LanguageModel/1";
  using TokenCallback = std::function<void(const TokenEvent&)>;
  using DoneCallback = std::function<void(const GenerationOutcome&)>;

  virtual ~LanguageModel() = default;

  /// Human-readable identity ("qwen2 0.5B from /models/x, cpu/float32").
  virtual std::string describe() const = 0;

  /// Blocking: generate a continuation on the calling thread's behalf. `on_token` returns false to stop early
  /// (counts as "stop"). `cancel` is polled between tokens. Throws on errors (see ERRORS).
  virtual GenerationResult generate(const GenerationRequest& request,
                                    const std::function<bool(const TokenEvent&)>& on_token = {},
                                    const CancellationToken& cancel = {}) {
    struct Stop : CancellationToken::State {
      CancellationToken outer;
      std::atomic<bool> stopped{false};
      bool cancelled() const override { return stopped.load() || outer.cancelled(); }
    };
    auto stop = std::make_shared<Stop>();
    stop->outer = cancel;
    struct Wait {
      std::mutex mutex;
      std::condition_variable cv;
      bool done = false;
      GenerationOutcome outcome;
    };
    auto wait = std::make_shared<Wait>();
    submit(
        request,
        [&on_token, stop](const TokenEvent& ev) {
          if (on_token && !stop->stopped.load() && !on_token(ev)) stop->stopped.store(true);
        },
        [wait](const GenerationOutcome& o) {
          std::lock_guard<std::mutex> lk(wait->mutex);
          wait->outcome = o;
          wait->done = true;
          wait->cv.notify_all();
        },
        CancellationToken(stop));
    std::unique_lock<std::mutex> lk(wait->mutex);
    wait->cv.wait(lk, [&] { return wait->done; });
    if (!wait->outcome.error.empty()) {
      if (wait->outcome.invalid_request) throw std::invalid_argument(wait->outcome.error);
      throw std::runtime_error(wait->outcome.error);
    }
    GenerationResult r = std::move(wait->outcome.result);
    if (stop->stopped.load() && !cancel.cancelled()) {  // stopped by on_token: "stop", as documented
      r.cancelled = false;
      r.finish_reason = FinishReason::stop;
    }
    return r;
  }

  /// Asynchronous: start a generation and return at once (see TWO WAYS TO GENERATE for who calls the callbacks on
  /// which thread). Never throws for a bad request: on_done receives the error.
  virtual void submit(const GenerationRequest& request, TokenCallback on_token, DoneCallback on_done,
                      const CancellationToken& cancel = {}) = 0;

  /// Used by Context::service: `model` wrapped so that submit()'s callbacks run on `ctx`'s strand.
  static std::shared_ptr<LanguageModel> bind_to_module(std::shared_ptr<LanguageModel> model, Context& ctx);
};

/// A model bound to one module (Context::service returns one): callbacks of submit() are posted to the module's
/// strand, in order, and the module counts as busy until on_done ran there.
class ModuleBoundLanguageModel final : public LanguageModel {
 public:
  ModuleBoundLanguageModel(std::shared_ptr<LanguageModel> model, Context& ctx)
      : model_(std::move(model)), ctx_(ctx), strand_(ctx.executor()) {}
  std::string describe() const override { return model_->describe(); }
  GenerationResult generate(const GenerationRequest& request, const std::function<bool(const TokenEvent&)>& on_token,
                            const CancellationToken& cancel) override {
    return model_->generate(request, on_token, cancel);
  }
  void submit(const GenerationRequest& request, TokenCallback on_token, DoneCallback on_done,
              const CancellationToken& cancel) override {
    auto busy = ctx_.busy_guard();  // until on_done ran on the strand
    auto token_cb = std::make_shared<TokenCallback>(std::move(on_token));
    model_->submit(
        request,
        [strand = strand_, token_cb](const TokenEvent& ev) {
          if (*token_cb) strand([token_cb, ev] { (*token_cb)(ev); });
        },
        [strand = strand_, busy, done = std::move(on_done)](const GenerationOutcome& o) mutable {
          strand([busy, done = std::move(done), o]() mutable {
            if (done) done(o);
            busy.reset();
          });
        },
        cancel);
  }
  /// The model itself (not bound), e.g. to share it.
  const std::shared_ptr<LanguageModel>& unbound() const { return model_; }

 private:
  std::shared_ptr<LanguageModel> model_;
  Context& ctx_;
  Executor strand_;
};

inline std::shared_ptr<LanguageModel> LanguageModel::bind_to_module(std::shared_ptr<LanguageModel> model,
                                                                    Context& ctx) {
  return std::make_shared<ModuleBoundLanguageModel>(std::move(model), ctx);
}

}  // namespace lal
