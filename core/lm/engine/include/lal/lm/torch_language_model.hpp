// lal::lm — the SDK's LanguageModel service implemented on the LibTorch engine. Torch-free header.
//
// THREADING: generate() may be called from any thread; a mutex serialises calls (one generation at a time per
// model). OWNERSHIP: the returned service owns the engine; share it through std::shared_ptr.
// ERRORS: see lal/services/language_model.hpp — std::invalid_argument for bad requests, std::runtime_error naming
// the model for engine failures; loading throws std::runtime_error with the file/key at fault.
#pragma once

#include <memory>
#include <mutex>

#include "lal/lm/engine.hpp"
#include "lal/services/language_model.hpp"

namespace lal::lm {

class ChatTemplate;

class TorchLanguageModel : public lal::LanguageModel {
 public:
  /// `chat_template`: see ModelOptions::chat_template. The template is read on the first message request.
  explicit TorchLanguageModel(std::unique_ptr<Engine> engine, std::string chat_template = {});

  std::string describe() const override;
  GenerationResult generate(const GenerationRequest& request,
                            const std::function<bool(const TokenEvent&)>& on_token = {},
                            const CancellationToken& cancel = {}) override;

  /// The engine, for callers that need ids or batches. Not synchronised: do not use concurrently with generate().
  Engine& engine() { return *engine_; }

 private:
  std::unique_ptr<Engine> engine_;
  std::string chat_template_override_;
  std::shared_ptr<const ChatTemplate> chat_;  // loaded on first use, under mutex_
  mutable std::mutex mutex_;
};

/// Load a model as a LanguageModel service. Throws std::runtime_error (see engine.hpp).
std::shared_ptr<lal::LanguageModel> load_language_model(const ModelOptions& options);

}  // namespace lal::lm
