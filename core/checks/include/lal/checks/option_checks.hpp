// lal::checks — value checks for options, shared by every front end (lal generate, chat, distill, serve) so that
// one rule gives one message everywhere. Each check throws OptionRangeError whose what() names the option exactly
// as the caller passes it ("--temperature", "configs/distill.yaml:3:1: learning_rate") and the value found:
//
//   --temperature must be a finite number ≥ 0, got nan
//
// NaN and ±inf fail every check. Thread-safe (pure functions).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lal::checks {

class OptionRangeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

void require_finite(std::string_view name, double value);
/// value ≥ 0 (and finite)
void require_non_negative(std::string_view name, double value);
/// value > 0 (and finite)
void require_positive(std::string_view name, double value);
/// lo ≤ value ≤ hi
void require_in_range(std::string_view name, double value, double lo, double hi);
/// lo < value ≤ hi
void require_in_half_open_range(std::string_view name, double value, double lo, double hi);
/// 0 ≤ value ≤ 1
void require_probability(std::string_view name, double value);
/// Integers: value ≥ lo / lo ≤ value ≤ hi.
void require_at_least(std::string_view name, std::int64_t value, std::int64_t lo);
void require_in_range(std::string_view name, std::int64_t value, std::int64_t lo, std::int64_t hi);

/// Sampling settings as every generating front end takes them. `prefix` is put before each name ("--" for the
/// command line, "" for a request body). Rules: temperature finite ≥ 0 (0 = greedy); top_p in (0, 1]; top_k ≥ 0
/// (0 = off); min_p in [0, 1]; repetition_penalty finite > 0 (1 = off); max_new_tokens ≥ 1 and min_new_tokens ≥ 0
/// and ≤ max_new_tokens.
struct SamplingValues {
  double temperature = 1.0;
  double top_p = 1.0;
  std::int64_t top_k = 0;
  double min_p = 0.0;
  double repetition_penalty = 1.0;
  std::int64_t max_new_tokens = 1;
  std::int64_t min_new_tokens = 0;
};
void check_sampling(const SamplingValues& v, std::string_view prefix);

}  // namespace lal::checks
