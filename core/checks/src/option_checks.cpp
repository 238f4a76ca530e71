#include "lal/checks/option_checks.hpp"

#include <cmath>
#include <sstream>

namespace lal::checks {

namespace {
std::string show(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream s;
  s << v;
  return s.str();
}
std::string show(std::int64_t v) { return std::to_string(v); }

[[noreturn]] void refuse(std::string_view name, const std::string& rule, const std::string& found) {
  throw OptionRangeError(std::string(name) + " must be " + rule + ", got " + found);
}
}  // namespace

void require_finite(std::string_view name, double v) {
  if (!std::isfinite(v)) refuse(name, "a finite number", show(v));
}
void require_non_negative(std::string_view name, double v) {
  if (!std::isfinite(v) || v < 0) refuse(name, "a finite number ≥ 0", show(v));
}
void require_positive(std::string_view name, double v) {
  if (!std::isfinite(v) || v <= 0) refuse(name, "a finite number > 0", show(v));
}
void require_in_range(std::string_view name, double v, double lo, double hi) {
  if (!std::isfinite(v) || v < lo || v > hi) refuse(name, "in [" + show(lo) + ", " + show(hi) + "]", show(v));
}
void require_in_half_open_range(std::string_view name, double v, double lo, double hi) {
  if (!std::isfinite(v) || v <= lo || v > hi) refuse(name, "in (" + show(lo) + ", " + show(hi) + "]", show(v));
}
void require_probability(std::string_view name, double v) { require_in_range(name, v, 0.0, 1.0); }
void require_at_least(std::string_view name, std::int64_t v, std::int64_t lo) {
  if (v < lo) refuse(name, "an integer ≥ " + show(lo), show(v));
}
void require_in_range(std::string_view name, std::int64_t v, std::int64_t lo, std::int64_t hi) {
  if (v < lo || v > hi) refuse(name, "an integer in [" + show(lo) + ", " + show(hi) + "]", show(v));
}

void check_sampling(const SamplingValues& v, std::string_view prefix) {
  const std::string p(prefix);
  require_non_negative(p + "temperature", v.temperature);
  require_in_half_open_range(p + "top_p", v.top_p, 0.0, 1.0);
  require_at_least(p + "top_k", v.top_k, 0);
  require_probability(p + "min_p", v.min_p);
  require_positive(p + "repetition_penalty", v.repetition_penalty);
  require_at_least(p + "max_new_tokens", v.max_new_tokens, 1);
  require_in_range(p + "min_new_tokens", v.min_new_tokens, std::int64_t{0}, v.max_new_tokens);
}

}  // namespace lal::checks
