// A deterministic text embedding for relevance when no learned embedder is available: feature hashing
// (Weinberger et al., 2009) of character 1-, 2- and 3-grams into 256 signed buckets, L2-normalised.
//
// What it is, honestly: a *lexical* similarity. Two texts are close when they share characters and short character
// sequences, which works for Japanese (no word boundaries needed) and English alike, and tolerates inflection
// (住んでいます / 住んでる). It knows nothing of meaning: 猫 and cat are unrelated to it. When an `Embedder` service
// exists, the tiers should use it instead; the BLOB column and the cosine stay the same.
//
// Normalisation before hashing: ASCII lower-cased, full-width ASCII (Ａ１！) folded to ASCII, runs of white space
// collapsed to one space. Unigrams weigh 0.5 (they carry little), bigrams and trigrams 1.0. The sign of each feature
// comes from the hash too, so collisions cancel on average instead of inflating similarity.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "lal/plugins/text_features.hpp"

namespace lal::memory {

constexpr std::size_t kEmbeddingDims = 256;
using Embedding = std::array<float, kEmbeddingDims>;

inline std::vector<char32_t> normalise_for_matching(std::string_view text) {
  std::vector<char32_t> out;
  bool space = true;  // drops leading space
  for (char32_t c : plugins::utf8_decode(text)) {
    if (c >= 0xFF01 && c <= 0xFF5E) c -= 0xFEE0;  // full-width ASCII → ASCII
    if (c == 0x3000) c = ' ';                     // ideographic space
    if (c >= 'A' && c <= 'Z') c = c - 'A' + 'a';
    const bool is_space = c == ' ' || c == '\t' || c == '\n' || c == '\r';
    if (is_space) {
      if (!space) out.push_back(' ');
      space = true;
      continue;
    }
    space = false;
    out.push_back(c);
  }
  if (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

inline std::uint64_t fnv1a64(const char32_t* cps, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull ^ n;  // the n-gram order is part of the feature
  for (std::size_t i = 0; i < n; ++i) {
    for (int b = 0; b < 4; ++b) {
      h ^= (static_cast<std::uint32_t>(cps[i]) >> (8 * b)) & 0xFF;
      h *= 1099511628211ull;
    }
  }
  return h;
}

inline Embedding embed_text(std::string_view text) {
  Embedding v{};
  const auto cps = normalise_for_matching(text);
  for (std::size_t n = 1; n <= 3; ++n) {
    const float weight = n == 1 ? 0.5f : 1.0f;
    for (std::size_t i = 0; i + n <= cps.size(); ++i) {
      if (n == 1 && cps[i] == ' ') continue;
      const std::uint64_t h = fnv1a64(&cps[i], n);
      v[h % kEmbeddingDims] += (h >> 63) ? -weight : weight;
    }
  }
  double norm = 0.0;
  for (float x : v) norm += static_cast<double>(x) * x;
  if (norm > 0.0) {
    const auto inv = static_cast<float>(1.0 / std::sqrt(norm));
    for (float& x : v) x *= inv;
  }
  return v;
}

/// Cosine of two embed_text() vectors (both unit length or zero), in [-1, 1]; 0 when either is empty.
inline double cosine(const Embedding& a, const Embedding& b) {
  // Eight independent partial sums: the compiler may vectorise them without -ffast-math (recall runs this once per
  // stored memory).
  float part[8] = {};
  for (std::size_t i = 0; i < kEmbeddingDims; i += 8)
    for (std::size_t k = 0; k < 8; ++k) part[k] += a[i + k] * b[i + k];
  float dot = 0.0f;
  for (float p : part) dot += p;
  return static_cast<double>(dot);
}

/// float32 little-endian, kEmbeddingDims × 4 bytes.
inline std::string encode_embedding(const Embedding& v) {
  std::string out(kEmbeddingDims * 4, '\0');
  for (std::size_t i = 0; i < kEmbeddingDims; ++i) {
    std::uint32_t bits;
    static_assert(sizeof bits == sizeof(float), "float must be 32-bit");
    std::memcpy(&bits, &v[i], 4);
    for (int b = 0; b < 4; ++b) out[i * 4 + static_cast<std::size_t>(b)] = static_cast<char>((bits >> (8 * b)) & 0xFF);
  }
  return out;
}

/// The inverse of encode_embedding; false when `bytes` is not the expected size (a foreign or damaged row).
inline bool decode_embedding(const void* data, std::size_t bytes, Embedding& out) {
  if (bytes != kEmbeddingDims * 4) return false;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < kEmbeddingDims; ++i) {
    std::uint32_t bits = 0;
    for (int b = 0; b < 4; ++b) bits |= static_cast<std::uint32_t>(p[i * 4 + static_cast<std::size_t>(b)]) << (8 * b);
    std::memcpy(&out[i], &bits, 4);
  }
  return true;
}

}  // namespace lal::memory
