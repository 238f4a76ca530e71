// lal::lm — Engine internals shared by engine.cpp and scheduler.cpp (not installed; includes LibTorch).
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "lal/lm/engine.hpp"
#include "lal/lm/transformer.hpp"
#if LAL_LM_HAVE_TOKENIZER
#include "lal/lm/tokenizer.hpp"
#endif

namespace lal::lm {

struct DecodeLoop;

struct Engine::Impl {
  std::string dir;
  std::string decode_mode;
  std::string dtype_choice;                 // why this dtype, when --dtype was auto or int8/int4 (describe())
  std::unique_ptr<DecodeLoop> static_loop;  // reused by static/graph decoding
  std::shared_ptr<Transformer> model;
  std::int64_t usable_vocab = 0;
  std::vector<std::int64_t> eos_ids;
#if LAL_LM_HAVE_TOKENIZER
  std::optional<Tokenizer> tokenizer;
#endif
  const Tokenizer* tokenizer_or_null() const {
#if LAL_LM_HAVE_TOKENIZER
    return tokenizer ? &*tokenizer : nullptr;
#else
    return nullptr;
#endif
  }
  /// Throws std::invalid_argument for a request generate() cannot run (empty or out-of-vocabulary prompt, stop
  /// strings without a tokenizer, sampling values out of range).
  void check_request(const std::vector<std::vector<std::int32_t>>& prompts, const GenerateOptions& options) const;
  /// Stop tokens of a request: its stop_ids, plus the model's eos ids when stop_at_eos.
  std::set<std::int64_t> stop_ids(const GenerateOptions& options) const;
};

/// Text of one sequence, holding back a tail that could still become a stop string.
struct StopText {
  std::string all;
  std::size_t emitted = 0;
  bool hit = false;

  std::string append(const std::string& piece, const std::vector<std::string>& stops) {
    all += piece;
    std::size_t best = std::string::npos;
    for (const auto& s : stops) {
      const auto p = s.empty() ? std::string::npos : all.find(s, emitted);
      best = std::min(best, p);
    }
    if (best != std::string::npos) {
      hit = true;
      all.resize(best);
      return take(best);
    }
    std::size_t hold = 0;
    for (const auto& s : stops)
      for (std::size_t k = std::min(s.size() - 1, all.size() - emitted); k > hold; --k)
        if (all.compare(all.size() - k, k, s, 0, k) == 0) {
          hold = k;
          break;
        }
    return take(all.size() - hold);
  }
  std::string finish() { return take(all.size()); }
  std::string take(std::size_t end) {
    std::string out = all.substr(emitted, end - emitted);
    emitted = end;
    return out;
  }
};

/// One sequence's output as its tokens arrive: ids, log-probabilities, streamed text (stop strings held back) and
/// the finish reason. Engine::generate and the Scheduler both feed tokens through it.
class SequenceState {
 public:
  SequenceState(const Tokenizer* tokenizer, const GenerateOptions& options, std::set<std::int64_t> stop_ids);
  /// Record the token of `ev` (id, logprob, entropy) and fill ev.text with the newly final text. Returns true when
  /// the sequence is finished: a stop token, a stop string, or max_new_tokens reached.
  bool accept(TokenStep& ev);
  /// The caller's callback asked to stop after the last token.
  void stopped() { out_.finish_reason = "stop"; }
  void cancelled() { out_.finish_reason = "cancelled"; }
  std::size_t size() const { return out_.ids.size(); }
  /// The output so far (text: everything emitted).
  SequenceOutput output() const;

 private:
  const Tokenizer* tokenizer_;
  GenerateOptions options_;
  std::set<std::int64_t> stop_ids_;
  SequenceOutput out_;
  StopText text_;
#if LAL_LM_HAVE_TOKENIZER
  std::optional<Tokenizer::StreamDecoder> decoder_;
#endif
};

}  // namespace lal::lm
