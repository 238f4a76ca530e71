// A deterministic stand-in for the language model: streams scripted tokens with chosen log-probabilities,
// entropies and per-token delays, so the brain regions can be tested without LibTorch and without chance.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "lal/plugins/prompts.hpp"
#include "lal/services/language_model.hpp"

namespace lal::test {

struct ScriptedToken {
  std::string text;
  float logprob = -0.1f;
  float entropy = 0.2f;
  std::chrono::milliseconds delay{0};  ///< slept before the token is emitted
};

struct Script {
  std::vector<ScriptedToken> tokens;
  bool fail = false;  ///< throw instead of generating (an engine failure)
};

/// `pieces` as tokens, all with the same statistics and delay.
inline Script uniform(const std::vector<std::string>& pieces, float logprob, float entropy, int delay_ms = 0) {
  Script s;
  for (const auto& p : pieces) s.tokens.push_back({p, logprob, entropy, std::chrono::milliseconds(delay_ms)});
  return s;
}

/// `n` copies of `piece`.
inline std::vector<std::string> repeat(const std::string& piece, int n) { return std::vector<std::string>(n, piece); }

inline Script& then(Script& s, const Script& more) {
  s.tokens.insert(s.tokens.end(), more.tokens.begin(), more.tokens.end());
  return s;
}

/// Which region asked, from the role instruction in the system prompt (lal/plugins/prompts.hpp).
inline plugins::Role role_of(const GenerationRequest& r) {
  for (auto role : {plugins::Role::intuition, plugins::Role::exploration, plugins::Role::analysis,
                    plugins::Role::insight, plugins::Role::answer})
    for (auto lang : {plugins::Language::ja, plugins::Language::en})
      if (!r.messages.empty() && r.messages[0].content.find(plugins::role_instruction(role, lang)) != std::string::npos)
        return role;
  throw std::invalid_argument("scripted model: request from an unknown role");
}

class ScriptedModel final : public LanguageModel {
 public:
  using Chooser = std::function<Script(const GenerationRequest&)>;
  explicit ScriptedModel(Chooser choose) : choose_(std::move(choose)) {}
  ~ScriptedModel() override {
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lk(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) t.join();
  }

  /// Like an engine that decodes several sequences at once: each submitted generation streams on its own thread.
  void submit(const GenerationRequest& request, TokenCallback on_token, DoneCallback on_done,
              const CancellationToken& cancel) override {
    std::lock_guard<std::mutex> lk(mu_);
    threads_.emplace_back([this, request, on_token = std::move(on_token), on_done = std::move(on_done), cancel]() mutable {
      GenerationOutcome o;
      try {
        o.result = generate(
            request,
            [&](const TokenEvent& ev) {
              if (on_token) on_token(ev);
              return true;
            },
            cancel);
      } catch (const std::exception& e) {
        o.error = e.what();
      }
      // The callbacks are the plugin's code: drop them here, on_token first, so nothing of the plugin is left when
      // on_done has released the module (its host may unload the plugin right after).
      on_token = nullptr;
      auto done = std::move(on_done);
      on_done = nullptr;
      if (done) done(o);
    });
  }

  std::string describe() const override { return "scripted test model"; }

  GenerationResult generate(const GenerationRequest& request, const std::function<bool(const TokenEvent&)>& on_token,
                            const CancellationToken& cancel) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      requests_.push_back(request);
    }
    const Script script = choose_(request);
    if (script.fail) throw std::runtime_error("scripted model: engine failure");
    GenerationResult result;
    result.finish_reason = FinishReason::length;
    double lp = 0, h = 0;
    for (std::size_t i = 0; i < script.tokens.size() && static_cast<int>(i) < request.max_new_tokens; ++i) {
      const auto& t = script.tokens[i];
      // Sleep in small steps so cancellation is noticed promptly, as a real engine notices it between tokens.
      for (auto left = t.delay; left.count() > 0 && !cancel.cancelled(); left -= std::chrono::milliseconds(2))
        std::this_thread::sleep_for(std::min(left, std::chrono::milliseconds(2)));
      if (cancel.cancelled()) {
        result.cancelled = true;
        result.finish_reason = FinishReason::cancelled;
        break;
      }
      TokenEvent ev{static_cast<std::int32_t>(i), t.text, t.logprob, t.entropy};
      result.text += t.text;
      result.ids.push_back(ev.id);
      lp += t.logprob;
      h += t.entropy;
      if (on_token && !on_token(ev)) {
        result.finish_reason = FinishReason::stop;
        break;
      }
    }
    if (!result.ids.empty()) {
      result.mean_logprob = static_cast<float>(lp / result.ids.size());
      result.mean_entropy = static_cast<float>(h / result.ids.size());
    }
    return result;
  }

  std::vector<GenerationRequest> requests() const {
    std::lock_guard<std::mutex> lk(mu_);
    return requests_;
  }
  std::vector<GenerationRequest> requests(plugins::Role role) const {
    std::vector<GenerationRequest> out;
    for (const auto& r : requests())
      if (role_of(r) == role) out.push_back(r);
    return out;
  }

 private:
  Chooser choose_;
  mutable std::mutex mu_;
  std::vector<GenerationRequest> requests_;
  std::vector<std::thread> threads_;
};

}  // namespace lal::test
