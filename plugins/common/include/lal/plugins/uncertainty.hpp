// Measured uncertainty, shared by the model-driven brain regions and the output strategies.
//
// Every number here comes from the language model's own token statistics (lal::TokenEvent): the log-probability of
// each sampled token and the entropy of the distribution it was sampled from. Nothing is invented.
//
// CONFIDENCE. For a stretch of text with mean token log-probability L (≤ 0) and mean entropy H (nats ≥ 0):
//
//     confidence = exp(L / 2) · exp(−H / 4)  =  sqrt( p̄ · 1/sqrt(e^H) )
//
// p̄ = exp(L) is the geometric-mean probability of the tokens the model chose; e^H is the distribution's
// "effective number of choices" (its perplexity). Both are needed: a model can pick its top token (high p̄) from a
// flat distribution (high H) — that is still a guess. The square roots keep the scale usable: a fluent, certain
// continuation (L = −0.05, H = 0.2) gives 0.93; a hesitant one (L = −0.7, H = 1.2) 0.52; a guess (L = −2, H = 3)
// 0.17. Thresholds elsewhere (hedging, concluding) are on this scale.
//
// ONE CHUNK PER TOKEN. Model-driven stages publish one ThoughtChunk per generated token (its text may be empty while
// a UTF-8 character is incomplete) carrying that token's own log-probability and entropy (lal.ThoughtChunk/2) and
// the stage's confidence so far, and close the stage with a last chunk that adds no token and carries the final
// confidence.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>

#include "lal/messages.hpp"

namespace lal::plugins {

/// See the file comment. Returns a value in (0, 1].
inline float confidence_from(float mean_logprob, float mean_entropy) {
  const double l = std::min(0.0, static_cast<double>(mean_logprob));
  const double h = std::max(0.0, static_cast<double>(mean_entropy));
  return static_cast<float>(std::exp(l / 2.0) * std::exp(-h / 4.0));
}

/// Running means of token log-probabilities and entropies.
class TokenStats {
 public:
  void add(float logprob, float entropy) {
    sum_logprob_ += logprob;
    sum_entropy_ += entropy;
    ++count_;
  }
  std::size_t count() const { return count_; }
  bool known() const { return count_ > 0; }
  float mean_logprob() const { return count_ ? static_cast<float>(sum_logprob_ / count_) : 0.0f; }
  float mean_entropy() const { return count_ ? static_cast<float>(sum_entropy_ / count_) : 0.0f; }
  float confidence() const { return confidence_from(mean_logprob(), mean_entropy()); }

  /// Write the stage's confidence so far into a chunk; leaves "unknown" (-1) when nothing was measured.
  void stamp(ThoughtChunk& chunk) const {
    if (known()) chunk.confidence = confidence();
  }

 private:
  double sum_logprob_ = 0.0;
  double sum_entropy_ = 0.0;
  std::size_t count_ = 0;
};

/// True when a chunk carries a measured confidence (it came from a model).
inline bool measured(const ThoughtChunk& c) { return c.confidence >= 0.0f; }

/// How strongly an answer should be hedged, from its measured confidence. `mild_below` > `strong_below`.
enum class Hedge { none, mild, strong };

inline Hedge hedge_for(float confidence, double mild_below, double strong_below) {
  if (confidence < 0.0f) return Hedge::none;  // unknown: nothing measured, so nothing to say about it
  if (confidence < strong_below) return Hedge::strong;
  if (confidence < mild_below) return Hedge::mild;
  return Hedge::none;
}

}  // namespace lal::plugins
