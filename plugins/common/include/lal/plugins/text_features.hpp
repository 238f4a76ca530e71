// Text features shared by the built-in plugins: UTF-8 code points, script detection, and keys for matching text
// that work for Japanese (no spaces between words) as well as for English.
//
// Matching keys: ASCII words (lower-cased, ≥ 2 letters, not stop words) and overlapping character bigrams of runs
// of kanji/kana/other letters. Bigrams are the standard trick for unsegmented Japanese text: 「東京の天気」 gives
// 東京, 京の, の天, 天気, so a later 「天気は？」 shares 天気.
#pragma once

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace lal::plugins {

/// Decode UTF-8 into code points; invalid bytes become U+FFFD (never throws, never reads past the end).
inline std::vector<char32_t> utf8_decode(std::string_view s) {
  std::vector<char32_t> out;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + static_cast<std::size_t>(len) > s.size()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    char32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = true;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      if ((cc >> 6) != 0x2) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    out.push_back(ok ? cp : 0xFFFD);
    i += ok ? static_cast<std::size_t>(len) : 1;
  }
  return out;
}

inline std::string utf8_encode(char32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

inline bool is_hiragana(char32_t c) { return c >= 0x3040 && c <= 0x309F; }
inline bool is_katakana(char32_t c) { return (c >= 0x30A0 && c <= 0x30FF) || (c >= 0xFF66 && c <= 0xFF9F); }
inline bool is_kanji(char32_t c) { return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF); }
inline bool is_japanese(char32_t c) { return is_hiragana(c) || is_katakana(c) || is_kanji(c); }

/// True when the text contains kana or kanji.
inline bool looks_japanese(std::string_view s) {
  for (char32_t c : utf8_decode(s))
    if (is_japanese(c)) return true;
  return false;
}

inline bool is_ascii_stop_word(const std::string& w) {
  static const std::set<std::string> stop = {"the", "a", "an", "is", "are", "was", "were", "be", "to", "of",
                                             "and", "or", "in", "on", "at", "it", "i", "you", "me", "my",
                                             "your", "do", "does", "did", "what", "how", "that", "this",
                                             "for", "with", "as", "by", "am", "we", "he", "she", "they"};
  return stop.count(w) != 0;
}

/// Matching keys of `text` (see the file comment). Deterministic, sorted, unique.
inline std::vector<std::string> match_keys(std::string_view text) {
  std::set<std::string> keys;
  const auto cps = utf8_decode(text);
  std::string word;
  auto flush_word = [&] {
    if (word.size() >= 2 && !is_ascii_stop_word(word)) keys.insert(word);
    word.clear();
  };
  std::vector<char32_t> run;
  auto flush_run = [&] {
    // Hiragana-only bigrams are mostly particles and endings (「です」「ます」); keep those with kanji/katakana.
    if (run.size() == 1 && (is_kanji(run[0]) || is_katakana(run[0]))) keys.insert(utf8_encode(run[0]));
    for (std::size_t i = 0; i + 1 < run.size(); ++i)
      if (!(is_hiragana(run[i]) && is_hiragana(run[i + 1]))) keys.insert(utf8_encode(run[i]) + utf8_encode(run[i + 1]));
    run.clear();
  };
  for (char32_t c : cps) {
    if (c < 0x80 && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) {
      flush_run();
      word += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    } else if (is_japanese(c) || (c > 0x7F && c != 0x3001 && c != 0x3002 && c != 0xFF1F && c != 0xFF01 &&
                                  c != 0x3000 && !(c >= 0xFF01 && c <= 0xFF0F))) {
      flush_word();
      run.push_back(c);
    } else {
      flush_word();
      flush_run();
    }
  }
  flush_word();
  flush_run();
  return {keys.begin(), keys.end()};
}

/// Words worth showing a person, in order of appearance: ASCII words (not stop words) and runs of kanji or
/// katakana (東京, ラーメン), which is where Japanese content words live. Unique, at most `limit`.
inline std::vector<std::string> salient_words(std::string_view text, std::size_t limit = 5) {
  std::vector<std::string> out;
  auto add = [&](const std::string& w) {
    if (!w.empty() && out.size() < limit && std::find(out.begin(), out.end(), w) == out.end()) out.push_back(w);
  };
  std::string word, run;
  std::size_t run_len = 0;
  bool run_katakana = false;
  auto flush = [&] {
    if (word.size() >= 2 && !is_ascii_stop_word(word)) add(word);
    if (run_len >= 2) add(run);
    word.clear();
    run.clear();
    run_len = 0;
  };
  for (char32_t c : utf8_decode(text)) {
    const bool ascii_alnum = c < 0x80 && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
    if (ascii_alnum) {
      if (run_len) flush();
      word += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    } else if (is_kanji(c) || is_katakana(c) || c == 0x30FC) {
      if (!word.empty() || (run_len && is_katakana(c) != run_katakana && c != 0x30FC)) flush();
      if (c != 0x30FC) run_katakana = is_katakana(c);
      run += utf8_encode(c);
      ++run_len;
    } else {
      flush();
    }
  }
  flush();
  return out;
}

/// Overlap of two sorted key sets: |A ∩ B| / |B| where B is the cue's keys (how much of the cue the memory covers).
inline double key_overlap(const std::vector<std::string>& memory_keys, const std::vector<std::string>& cue_keys) {
  if (cue_keys.empty()) return 0.0;
  std::vector<std::string> common;
  std::set_intersection(memory_keys.begin(), memory_keys.end(), cue_keys.begin(), cue_keys.end(),
                        std::back_inserter(common));
  return static_cast<double>(common.size()) / static_cast<double>(cue_keys.size());
}

}  // namespace lal::plugins
