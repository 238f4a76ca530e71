// ACT-R base-level activation, B = ln(Σ_j t_j^-d), for memories that are used (encoded, recalled) many times.
//
// Keeping every use timestamp of a long-lived memory grows without bound, so persistent tiers keep the `kExactUses`
// most recent uses exactly plus the total count and the creation time, and approximate the older uses with
// Petrov's (2006) hybrid formula: the n−k older uses are assumed spread evenly between the creation and the k-th
// most recent use, whose contribution integrates to (n−k)·(t_n^(1−d) − t_k^(1−d)) / ((1−d)(t_n − t_k)).
// With n ≤ k the result equals the exact ACT-R sum.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace lal::memory {

constexpr std::size_t kExactUses = 8;

/// The use history of one memory. Times are nanoseconds on one clock (the tier decides which).
struct UseHistory {
  std::int64_t created_ns = 0;
  std::int64_t count = 1;            ///< total uses, the encoding included
  std::vector<std::int64_t> recent;  ///< the most recent uses (oldest first), at most kExactUses

  static UseHistory created_at(std::int64_t t) { return UseHistory{t, 1, {t}}; }

  void use(std::int64_t t) {
    ++count;
    recent.push_back(t);
    if (recent.size() > kExactUses) recent.erase(recent.begin(), recent.end() - static_cast<long>(kExactUses));
  }
};

/// B = ln(Σ t^-d) in seconds, exact for the recent uses and Petrov's approximation for the rest. Ages below
/// `min_age_s` count as `min_age_s`: a use is strong right after it happened, but not infinitely so.
inline double base_level_activation(const UseHistory& h, std::int64_t now_ns, double decay, double min_age_s = 0.1) {
  auto age = [&](std::int64_t t) { return std::max(min_age_s, static_cast<double>(now_ns - t) * 1e-9); };
  double sum = 0.0;
  for (std::int64_t t : h.recent) sum += std::pow(age(t), -decay);
  const auto k = static_cast<std::int64_t>(h.recent.size());
  if (h.count > k) {
    const double tn = age(h.created_ns);
    const double tk = h.recent.empty() ? tn : age(h.recent.front());
    const double older = static_cast<double>(h.count - k);
    if (tn > tk + 1e-9)
      sum += older * (std::pow(tn, 1.0 - decay) - std::pow(tk, 1.0 - decay)) / ((1.0 - decay) * (tn - tk));
    else
      sum += older * std::pow(tk, -decay);
  }
  return std::log(std::max(sum, 1e-300));
}

/// Little-endian int64 array, for storing `recent` as a BLOB (byte order fixed so a file moves between machines).
inline std::string encode_times(const std::vector<std::int64_t>& times) {
  std::string out(times.size() * 8, '\0');
  for (std::size_t i = 0; i < times.size(); ++i) {
    const auto v = static_cast<std::uint64_t>(times[i]);
    for (int b = 0; b < 8; ++b) out[i * 8 + static_cast<std::size_t>(b)] = static_cast<char>((v >> (8 * b)) & 0xFF);
  }
  return out;
}

inline std::vector<std::int64_t> decode_times(const void* data, std::size_t bytes) {
  std::vector<std::int64_t> out(bytes / 8);
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < out.size(); ++i) {
    std::uint64_t v = 0;
    for (int b = 0; b < 8; ++b) v |= static_cast<std::uint64_t>(p[i * 8 + static_cast<std::size_t>(b)]) << (8 * b);
    out[i] = static_cast<std::int64_t>(v);
  }
  return out;
}

}  // namespace lal::memory
