// Semantic memory from what people say about themselves: the rule that turns a user's words into facts.
//
// The text is split into sentences at 。．！？.!? and line breaks. A sentence is a fact about the speaker when it is
// not a question and
//   * Japanese: it begins with a first-person word (私 わたし わたくし 僕 ぼく 俺 おれ あたし 自分 うち) followed
//     by は / の / が / も / って (「私の名前は太郎です」「僕は大阪に住んでいます」), or it introduces the speaker
//     (「太郎と申します」「太郎といいます」);
//   * English: it begins with "my " ("My name is Taro"), "i'm " / "i am " ("I'm a teacher"), "call me ", or "i "
//     followed by a verb of self-description: live, work, like, love, hate, dislike, have, was, study, prefer, come,
//     speak, enjoy, own, grew, moved, play, use, teach, was born ("I live in Osaka").
// A question is a sentence ending in ? / ？ or, in Japanese, in か / かな / かしら / っけ. The fact is the sentence as
// said (trimmed, closing punctuation kept). Deliberately narrow: a wrong "fact" recalled later is worse than a fact
// not extracted, and every episode is stored whole anyway.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "lal/plugins/text_features.hpp"

namespace lal::memory {

inline bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
inline bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

inline std::vector<std::string> split_sentences(std::string_view text) {
  std::vector<std::string> out;
  std::string cur;
  auto flush = [&] {
    const auto b = cur.find_first_not_of(" \t\r\n\xE3\x80\x80");  // also drops a leading ideographic space
    if (b != std::string::npos) out.push_back(cur.substr(b));
    cur.clear();
  };
  for (char32_t c : plugins::utf8_decode(text)) {
    if (c == '\n' || c == '\r') {
      flush();
      continue;
    }
    cur += plugins::utf8_encode(c);
    if (c == 0x3002 || c == 0xFF0E || c == 0xFF01 || c == 0xFF1F || c == '.' || c == '!' || c == '?') flush();
  }
  flush();
  for (auto& s : out)
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.pop_back();
  return out;
}

inline bool is_question(std::string_view s) {
  if (ends_with(s, "?") || ends_with(s, "？")) return true;
  std::string_view core = s;
  for (std::string_view p : {"。", "．", "！", "!", "."})
    if (ends_with(core, p)) core.remove_suffix(p.size());
  for (std::string_view q : {"か", "かな", "かしら", "っけ"})
    if (ends_with(core, q)) return true;
  return false;
}

inline bool is_japanese_self_statement(std::string_view s) {
  static const char* kFirstPerson[] = {"私", "わたし", "わたくし", "僕",   "ぼく",
                                       "俺", "おれ",   "あたし",   "自分", "うち"};
  static const char* kParticles[] = {"は", "の", "が", "も", "って"};
  for (const char* fp : kFirstPerson) {
    if (!starts_with(s, fp)) continue;
    const std::string_view rest = s.substr(std::string_view(fp).size());
    for (const char* p : kParticles)
      if (starts_with(rest, p)) return true;
  }
  return s.find("と申します") != std::string_view::npos || s.find("といいます") != std::string_view::npos ||
         s.find("と言います") != std::string_view::npos;
}

inline bool is_english_self_statement(std::string_view raw) {
  std::string s(raw);
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  for (const char* p : {"my ", "i'm ", "i am ", "call me ", "i was born"})
    if (starts_with(s, p)) return true;
  if (!starts_with(s, "i ")) return false;
  static const char* kVerbs[] = {"live", "work",  "like",  "love", "hate", "dislike", "have", "was", "study", "prefer",
                                 "come", "speak", "enjoy", "own",  "grew", "moved",   "play", "use", "teach"};
  const std::string_view rest = std::string_view(s).substr(2);
  for (const char* v : kVerbs) {
    const std::string_view verb(v);
    if (starts_with(rest, verb) && (rest.size() == verb.size() || rest[verb.size()] == ' ' ||
                                    rest[verb.size()] == 's' || rest[verb.size()] == '.' || rest[verb.size()] == '!'))
      return true;
  }
  return false;
}

/// The sentences of `text` that state something about the speaker (see the file comment), in order.
inline std::vector<std::string> self_statements(std::string_view text) {
  std::vector<std::string> out;
  for (auto& s : split_sentences(text)) {
    if (is_question(s)) continue;
    if (is_japanese_self_statement(s) || is_english_self_statement(s)) out.push_back(std::move(s));
  }
  return out;
}

}  // namespace lal::memory
