// Segmentation for lexical recall (BM25) in Japanese and English, without a dictionary.
//
// Terms of a text, each a 64-bit hash with its count:
//   * English (ASCII letters and digits): words, lower-cased, stop words dropped, and a light plural/possessive
//     stemmer ("sisters", "sister's" → "sister"; words of ≤ 3 letters and words ending in "ss" are kept as they are);
//   * Japanese and other non-ASCII letters: each run is cut into overlapping character bigrams (東京の天気 → 東京,
//   京の,
//     の天, 天気), except bigrams of two hiragana (mostly particles and endings: です, ます, には), plus every kanji
//     as a unigram, so a one-character word (猫, 妹) still matches (katakana alone carry no meaning: ン, ー). Runs of
//     katakana of two or more characters (カレー, ラーメン) are also one term each: loan words are whole words.
// Character n-grams are the standard dictionary-free segmentation for Japanese retrieval: they never miss a word
// boundary, at the price of some noise that BM25's idf discounts. Full-width ASCII is folded to ASCII first.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lal/plugins/text_features.hpp"

namespace lal::memory {

/// One term of a text: hash and how often it occurs.
struct Term {
  std::uint64_t hash = 0;
  std::uint32_t count = 0;
};

inline std::uint64_t term_hash(std::string_view s, std::uint64_t salt) {
  std::uint64_t h = 1469598103934665603ull ^ salt;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

inline bool is_english_stop_word(std::string_view w) {
  static const char* kStop[] = {
      "the",  "a",    "an",    "is",    "are",   "was",   "were",  "be",       "to",   "of",   "and",   "or",
      "in",   "on",   "at",    "it",    "i",     "you",   "me",    "my",       "your", "do",   "does",  "did",
      "what", "how",  "that",  "this",  "for",   "with",  "as",    "by",       "am",   "we",   "he",    "she",
      "they", "so",   "there", "have",  "has",   "had",   "about", "remember", "tell", "can",  "could", "would",
      "will", "just", "its",   "our",   "their", "his",   "her",   "them",     "us",   "if",   "but",   "not",
      "no",   "yes",  "from",  "which", "who",   "where", "when",  "why",      "any",  "some", "been",  "being",
      "than", "then", "too",   "very",  "also",  "all",   "one",   "s"};
  for (const char* s : kStop)
    if (w == s) return true;
  return false;
}

inline std::string stem_english(std::string w) {
  if (w.size() > 2 && w.compare(w.size() - 2, 2, "'s") == 0) w.resize(w.size() - 2);
  if (w.size() > 3 && w.back() == 's' && w[w.size() - 2] != 's' && w[w.size() - 2] != 'u' && w[w.size() - 2] != 'i')
    w.pop_back();
  return w;
}

/// The terms of `text` (see the file comment), sorted by hash, counts summed.
inline std::vector<Term> segment_terms(std::string_view text) {
  std::vector<std::uint64_t> hashes;
  std::string word;
  auto flush_word = [&] {
    if (!word.empty()) {
      std::string w = stem_english(word);
      if (!w.empty() && !is_english_stop_word(w)) hashes.push_back(term_hash(w, 1));
    }
    word.clear();
  };
  std::vector<char32_t> run;
  auto flush_run = [&] {
    using plugins::is_hiragana;
    using plugins::is_kanji;
    using plugins::is_katakana;
    std::size_t kata_start = 0;
    for (std::size_t i = 0; i <= run.size(); ++i) {
      const bool kata = i < run.size() && (is_katakana(run[i]) || run[i] == 0x30FC);
      if (!kata) {
        if (i - kata_start >= 2) {
          std::string s;
          for (std::size_t j = kata_start; j < i; ++j) s += plugins::utf8_encode(run[j]);
          hashes.push_back(term_hash(s, 3));
        }
        kata_start = i + 1;
      }
      if (i == run.size()) break;
      if (is_kanji(run[i])) hashes.push_back(term_hash(plugins::utf8_encode(run[i]), 2));
      if (i + 1 < run.size() && !(is_hiragana(run[i]) && is_hiragana(run[i + 1])))
        hashes.push_back(term_hash(plugins::utf8_encode(run[i]) + plugins::utf8_encode(run[i + 1]), 2));
    }
    run.clear();
  };
  for (char32_t c : plugins::utf8_decode(text)) {
    if (c >= 0xFF01 && c <= 0xFF5E) c -= 0xFEE0;  // full-width ASCII → ASCII
    const bool ascii_alnum = c < 0x80 && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
    if (ascii_alnum || (c == '\'' && !word.empty())) {
      flush_run();
      word += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    } else if (c > 0x7F && (plugins::is_japanese(c) || c == 0x30FC || (c >= 0xAC00 && c <= 0xD7AF) ||
                            (c >= 0x00C0 && c <= 0x024F))) {
      flush_word();
      run.push_back(c);
    } else {
      flush_word();
      flush_run();
    }
  }
  flush_word();
  flush_run();
  std::sort(hashes.begin(), hashes.end());
  std::vector<Term> out;
  for (std::uint64_t h : hashes) {
    if (!out.empty() && out.back().hash == h)
      ++out.back().count;
    else
      out.push_back({h, 1});
  }
  return out;
}

/// Total count of the terms (the document length in BM25).
inline std::uint32_t term_total(const std::vector<Term>& terms) {
  std::uint32_t n = 0;
  for (const auto& t : terms) n += t.count;
  return n;
}

}  // namespace lal::memory
