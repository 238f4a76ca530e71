// Semantic memory from what people say about themselves: the rules that turn a user's words into facts, and the
// slot a fact fills, so that a newer fact updates an older one.
//
// The text is split into sentences at 。．！？.!? and line breaks. A sentence that is not a question is a fact when
//   * Japanese: it begins with a first-person word (私 わたし わたくし 僕 ぼく 俺 おれ あたし 自分 うち) followed
//     by は / の / が / も / って (「私の名前は太郎です」「僕は大阪に住んでいます」), or it introduces the speaker
//     (「太郎と申します」「太郎といいます」);
//   * English: it begins with "my " ("My name is Taro"), "i'm " / "i am " ("I'm a teacher"), "call me ", or "i "
//     followed by a verb of self-description: live, work, like, love, hate, dislike, have, was, study, prefer, come,
//     speak, enjoy, own, grew, moved, play, use, teach, was born ("I live in Osaka");
//   * or, in either language, it fills a slot (below) — Japanese leaves the subject out (「大阪に引っ越しました」).
// A question is a sentence ending in ? / ？ or, in Japanese, in か / かな / かしら / っけ. The fact is the sentence as
// said (trimmed, closing punctuation kept).
//
// Slots: single-valued attributes, where a new value replaces the old one (the old fact is kept as history, marked
// superseded by the new one). The first matching row decides:
//
//   slot            cues
//   favorite_food   好きな食べ物 / 好物 / favorite food / favourite food
//   favorite_drink  好きな飲み物 / favorite drink
//   name            名前は / と申します / といいます / と言います / my name is / call me / i'm called
//   residence       住んで / 住み / 引っ越 / 暮らして / live in / living in / moved to / lives in
//   hometown        出身 / i'm from / i am from / grew up in / born in
//   job             仕事は / 職業 / 勤め / 働いて / として働 / i work / my job / works at / works as
//   age             歳です / 才です / years old
//   birthday        誕生日 / birthday
//   hobby           趣味 / my hobby
//
// A slot is qualified by the person it is about: when a relation word (妹, 母, 友達, sister, mother, friend, …, see
// importance.hpp) or 彼 / 彼女 / he / she appears before the cue, the slot is "<relation>.<slot>"
// (「妹の名前は花子です」 → 妹.name), so a sister's name never replaces the user's. Narrow on purpose: a wrong update
// is worse than none, and every episode is stored whole anyway.
#pragma once

#include <algorithm>
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

struct SlotCues {
  const char* name;
  std::vector<const char*> cues;  // Japanese as is, English lower-case
};

/// The first slot of `table` whose cue occurs in `text`, qualified by the relation word that precedes the cue.
inline std::string find_slot(std::string_view text, const std::vector<SlotCues>& table) {
  static const std::vector<const char*> kRelations = {
      "妹",     "姉",          "兄",     "弟",        "母",         "父",        "妻",   "夫",      "息子", "娘",
      "友達",   "友人",        "親友",   "彼氏",      "彼女",       "同僚",      "上司", "祖母",    "祖父", "彼",
      "sister", "brother",     "mother", "father",    "mom",        "dad",       "wife", "husband", "son",  "daughter",
      "cousin", "best friend", "friend", "boyfriend", "girlfriend", "colleague", "boss", "partner", "he ",  "she "};
  std::string lower(text);
  for (char& c : lower)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  for (const auto& slot : table) {
    std::size_t at = std::string::npos;
    for (const char* cue : slot.cues) at = std::min(at, lower.find(cue));
    if (at == std::string::npos) continue;
    // The earliest relation word before the cue names whose attribute this is (the longest at one position:
    // 彼女 over 彼, best friend over friend).
    std::size_t best = std::string::npos;
    std::string who;
    for (const char* r : kRelations) {
      const std::size_t p = lower.find(r);
      if (p == std::string::npos || p >= at) continue;
      if (p < best || (p == best && std::string_view(r).size() > who.size())) {
        best = p;
        who = r;
      }
    }
    while (!who.empty() && who.back() == ' ') who.pop_back();
    return who.empty() ? std::string(slot.name) : who + "." + slot.name;
  }
  return {};
}

/// The slot `sentence` fills ("residence", "妹.name", "sister.job"), or "" (see the file comment).
inline std::string fact_slot(std::string_view sentence) {
  static const std::vector<SlotCues> kSlots = {
      {"favorite_food", {"好きな食べ物", "好物", "favorite food", "favourite food"}},
      {"favorite_drink", {"好きな飲み物", "favorite drink", "favourite drink"}},
      {"name", {"名前は", "と申します", "といいます", "と言います", "my name is", "call me", "i'm called", "name is"}},
      {"residence", {"住んで", "住み", "引っ越", "暮らして", "live in", "living in", "moved to", "lives in"}},
      {"hometown", {"出身", "i'm from", "i am from", "grew up in", "born in"}},
      {"job", {"仕事は", "職業", "勤め", "働いて", "として働", "i work", "my job", "works at", "works as", "job is"}},
      {"age", {"歳です", "才です", "years old"}},
      {"birthday", {"誕生日", "birthday"}},
      {"hobby", {"趣味", "休みの日", "暇なとき", "my hobby", "hobby is", "in my free time", "on my days off"}},
  };
  return find_slot(sentence, kSlots);
}

/// The slot a question asks about (「私の仕事は何？」 → job, "Where does my sister work?" → sister.job), or "".
/// Question words by slot: name 名前 / name; job 仕事 職業 働 勤め / job, work, for a living; residence 住 / live,
/// living; hometown 出身 / from, grew up; hobby 趣味 休み 暇 / hobby, free time, days off; favorite_food 好物 食べ物 /
/// food; favorite_drink 飲み物 / drink; age 何歳 / how old; birthday 誕生日 / birthday.
inline std::string question_slot(std::string_view cue) {
  static const std::vector<SlotCues> kQuestions = {
      {"birthday", {"誕生日", "birthday"}},
      {"favorite_drink", {"飲み物", "drink"}},
      {"favorite_food", {"好物", "食べ物", "food"}},
      {"name", {"名前", "name"}},
      {"hobby", {"趣味", "休みの日", "暇な", "hobby", "free time", "days off"}},
      {"hometown", {"出身", "where am i from", "where i'm from", "grew up"}},
      {"residence", {"住んで", "住まい", "住み", "live", "living"}},
      {"job", {"仕事", "職業", "働", "勤め", "job", "work", "for a living"}},
      {"age", {"何歳", "how old"}},
  };
  return find_slot(cue, kQuestions);
}

/// The sentences of `text` that state something about the speaker (see the file comment), in order.
inline std::vector<std::string> self_statements(std::string_view text) {
  std::vector<std::string> out;
  for (auto& s : split_sentences(text)) {
    if (is_question(s)) continue;
    if (is_japanese_self_statement(s) || is_english_self_statement(s) || !fact_slot(s).empty())
      out.push_back(std::move(s));
  }
  return out;
}

}  // namespace lal::memory
