// lal::lm — the SDK's LanguageModel service implemented on the LibTorch engine. Torch-free header.
//
// THREADING: generate() and submit() may be called from any thread, concurrently: every call is a sequence of one
// Scheduler (lal/lm/scheduler.hpp) that owns the model and decodes the running calls together, admitted at step
// boundaries by `priority`. generate()'s callback runs on its calling thread; submit() is an adapter over
// Scheduler::submit, so its callbacks run on the scheduler thread (a module's bound model posts them on to its
// strand, see lal/services/language_model.hpp). OWNERSHIP: the returned service owns the engine and the scheduler;
// share it through std::shared_ptr.
// ERRORS: see lal/services/language_model.hpp — std::invalid_argument for bad requests, std::runtime_error naming
// the model for engine failures; loading throws std::runtime_error with the file/key at fault.
#pragma once

#include <memory>
#include <mutex>

#include "lal/lm/engine.hpp"
#include "lal/lm/scheduler.hpp"
#include "lal/services/language_model.hpp"

namespace lal::lm {

class ChatTemplate;

class TorchLanguageModel : public lal::LanguageModel {
 public:
  /// `chat_template`: see ModelOptions::chat_template. The template is read on the first message request.
  explicit TorchLanguageModel(std::unique_ptr<Engine> engine, std::string chat_template = {},
                              SchedulerOptions scheduling = {});
  ~TorchLanguageModel() override;

  std::string describe() const override;
  GenerationResult generate(const GenerationRequest& request,
                            const std::function<bool(const TokenEvent&)>& on_token = {},
                            const CancellationToken& cancel = {}) override;
  void submit(const GenerationRequest& request, TokenCallback on_token, DoneCallback on_done,
              const CancellationToken& cancel = {}) override;

  /// The engine, for its description and tokenizer. Do not generate with it directly: the scheduler owns the model.
  Engine& engine() { return *engine_; }
  SchedulerStats scheduler_stats() const { return scheduler_->stats(); }

 private:
  /// The request as token ids and engine options (chat template rendered, stop texts added); throws
  /// std::invalid_argument for a bad request.
  SequenceRequest sequence_for(const GenerationRequest& request) const;
  static GenerationResult result_of(SequenceOutput output);

  std::unique_ptr<Engine> engine_;
  std::string chat_template_override_;
  mutable std::shared_ptr<const ChatTemplate> chat_;  // loaded on first use, under mutex_
  mutable std::mutex mutex_;
  std::unique_ptr<Scheduler> scheduler_;  // after the engine: destroyed (joined) first
};

/// Load a model as a LanguageModel service. Throws std::runtime_error (see engine.hpp).
std::shared_ptr<lal::LanguageModel> load_language_model(const ModelOptions& options);

}  // namespace lal::lm
