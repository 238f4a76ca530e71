// A compiled PCRE2 pattern (UTF + UCP, JIT when available) for the Split pre-tokenizer and Replace normalizer.
// The compiled code is immutable and shared by all threads; match data is per call.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lal::lm::text {

class Regex {
 public:
  /// Throws std::invalid_argument with PCRE2's message and the offset in the pattern.
  explicit Regex(const std::string& pattern);
  /// Non-overlapping matches of the pattern in `subject` (valid UTF-8), as [begin, end) byte ranges, left to right.
  /// An empty match advances the search by one character, as Oniguruma's and Rust's find_iter do.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view subject) const;

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
};

/// Escapes a literal for use inside a PCRE2 pattern.
std::string regex_escape(std::string_view literal);

}  // namespace lal::lm::text
