// How an episode reads when it is recalled, shared by the tiers that hold episodes (short_term, long_term), so that
// the same episode recalled from two tiers has the same text and the hippocampus can merge the two.
#pragma once

#include <string>

#include "lal/messages.hpp"
#include "lal/plugins/text_features.hpp"

namespace lal::memory {

/// Longest answer, in code points, shown in a recalled episode's text. The stores keep the whole answer; a recalled
/// memory is a reminder for thinking, not a transcript.
constexpr std::size_t kAnswerPreviewChars = 120;

/// "what the user said → what was answered" (the answer shortened to kAnswerPreviewChars, marked with "…");
/// just the user's words when there was no answer.
inline std::string episode_text(const std::string& user_text, const std::string& answer) {
  if (answer.empty()) return user_text;
  const auto cps = plugins::utf8_decode(answer);
  std::string shown;
  for (std::size_t i = 0; i < cps.size() && i < kAnswerPreviewChars; ++i) shown += plugins::utf8_encode(cps[i]);
  if (cps.size() > kAnswerPreviewChars) shown += "…";
  return user_text + " → " + shown;
}

}  // namespace lal::memory
