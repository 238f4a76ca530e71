// How much an utterance is worth remembering, from features a person can check: self-disclosure.
//
// People remember what others tell them about themselves — a name, what they like, who their family is, what they
// plan, dates, where they live, how they feel, and corrections — without being asked to. The score is
//
//     importance = clamp(base + Σ_categories weight_c · [category c found], 0, 1)
//
// over these categories (each counts once, however many of its cues match), Japanese and English:
//
//   category     weight  cues (substrings; English matched lower-cased)
//   name          0.45   名前 / と申します / といいます / と言います / って呼んで / my name / call me / i'm called
//   preference    0.35   好き / 嫌い / 苦手 / 好物 / 大好き / 趣味 / favorite / favourite / i like / i love / i hate /
//                        i prefer / i enjoy / can't stand / hobby
//   relation      0.30   妻 / 夫 / 母 / 父 / 兄 / 姉 / 弟 / 妹 / 息子 / 娘 / 家族 / 友達 / 友人 / 彼氏 / 彼女 / 同僚 /
//                        上司 / 子供 / 祖母 / 祖父 / wife / husband / mother / father / mom / dad / sister / brother /
//                        son / daughter / friend / boyfriend / girlfriend / colleague / boss / partner / kids
//   plan          0.25   予定 / つもり / 計画 / 来週 / 来月 / 来年 / 明日 / 今度 / plan / going to / next week /
//                        next month / tomorrow / will be / intend
//   date          0.25   誕生日 / 記念日 / N月 / N日 (digits) / birthday / anniversary / month names
//   place         0.30   住んで / 住み / 引っ越 / 出身 / 勤め / 働いて / 通って / 実家 / live in / living in /
//                        moved to / i'm from / i am from / work at / work for / grew up
//   feeling       0.20   嬉しい / 悲しい / 寂しい / 不安 / 心配 / 怖い / 楽しい / 疲れ / 辛い / つらい / 緊張 /
//                        ストレス / 落ち込 / happy / sad / lonely / worried / afraid / scared / excited / tired /
//                        stressed / nervous / upset / anxious
//   correction    0.35   実は / 訂正 / 間違 / じゃなくて / ではなく / 正しくは / 違います / actually / correction /
//                        i meant / not anymore / no longer / changed
//   belongings    0.25   飼って / 飼い始 / 飼ってる / ペット / 持っています / 持ってます / 持ってる / 乗っています /
//                        習っています / i own / i have a dog / my dog / my cat / my pet / my car / pet / pets /
//                        dog / dogs / cat / cats / puppy / kitten   (pets, possessions, what the speaker keeps doing)
//   experience    0.15   what the speaker did: 行きました / しました / 見ました / 会いました / 食べました / 買いました
//   /
//                        始めました / went / visited / watched / met / bought / started / tried / took / saw
//   remember      0.45   覚えておいて / 覚えといて / 覚えてね / 覚えてください / 忘れないで / please remember /
//                        remember that / remember this / don't forget   (requests; 「覚えていますか」 asks instead)
//
// plus 0.10 when the utterance speaks about the speaker at all (私 / 僕 / 俺 / わたし / あたし / 自分, or English
// "i" / "my" / "me" as words). A question (ends in ? / ？ / か / かな / っけ) is asking, not telling: its disclosure
// weights count half. Small talk (「こんにちは」, "thanks") scores `base`. The score's reasons are returned too, for
// logs and `lal memory stats`.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "lal/plugins/text_features.hpp"

namespace lal::memory {

struct ImportanceScore {
  double score = 0.0;
  std::vector<std::string> reasons;  ///< category names that matched ("name", "preference", ...)
};

namespace detail {

inline std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

/// True when `word` occurs in `lower` as a whole ASCII word (not inside another word).
inline bool has_word(const std::string& lower, std::string_view word) {
  for (std::size_t p = lower.find(word); p != std::string::npos; p = lower.find(word, p + 1)) {
    auto is_letter = [](char c) { return (c >= 'a' && c <= 'z') || c == '\''; };
    const bool left = p == 0 || !is_letter(lower[p - 1]);
    const bool right = p + word.size() >= lower.size() || !is_letter(lower[p + word.size()]);
    if (left && right) return true;
  }
  return false;
}

inline bool has_digit_date(std::string_view s) {
  // N月 or N日 with N in digits (ASCII or full-width)
  const auto cps = plugins::utf8_decode(s);
  for (std::size_t i = 1; i < cps.size(); ++i) {
    const char32_t d = cps[i - 1];
    const bool digit = (d >= '0' && d <= '9') || (d >= 0xFF10 && d <= 0xFF19);
    if (digit && (cps[i] == 0x6708 /*月*/ || cps[i] == 0x65E5 /*日*/)) return true;
  }
  return false;
}

inline bool is_question_text(std::string_view s) {
  std::string_view t = s;
  while (!t.empty() && (t.back() == ' ' || t.back() == '\n' || t.back() == '\r')) t.remove_suffix(1);
  auto ends = [&](std::string_view p) { return t.size() >= p.size() && t.substr(t.size() - p.size()) == p; };
  if (ends("?") || ends("？")) return true;
  for (std::string_view p : {"。", "！", "!", "."})
    if (ends(p)) {
      t.remove_suffix(p.size());
      break;
    }
  return ends("か") || ends("かな") || ends("かしら") || ends("っけ");
}

}  // namespace detail

/// The importance of `text` (see the file comment): base + the weights of the self-disclosure categories found.
inline ImportanceScore score_importance(std::string_view text, double base = 0.3) {
  struct Category {
    const char* name;
    double weight;
    std::vector<const char*> ja, en_sub, en_words;
  };
  static const std::vector<Category> kCategories = {
      {"name",
       0.45,
       {"名前", "と申します", "といいます", "と言います", "って呼んで"},
       {"my name", "call me", "i'm called"},
       {}},
      {"preference",
       0.35,
       {"好き", "嫌い", "苦手", "好物", "趣味"},
       {"favorite", "favourite", "i like", "i love", "i hate", "i prefer", "i enjoy", "can't stand", "hobby"},
       {}},
      {"relation",
       0.30,
       {"妻",   "夫",   "母",   "父",   "兄",   "姉",   "弟",   "妹",   "息子", "娘",
        "家族", "友達", "友人", "彼氏", "彼女", "同僚", "上司", "子供", "祖母", "祖父"},
       {},
       {"wife", "husband", "mother", "father", "mom", "dad", "sister", "brother", "son", "daughter", "friend",
        "boyfriend", "girlfriend", "colleague", "boss", "partner", "kids", "sister's", "brother's"}},
      {"plan",
       0.25,
       {"予定", "つもり", "計画", "来週", "来月", "来年", "明日", "今度"},
       {"going to", "next week", "next month", "tomorrow", "will be", "intend"},
       {"plan", "plans", "planning"}},
      {"date",
       0.25,
       {"誕生日", "記念日"},
       {"birthday", "anniversary"},
       {"january", "february", "march", "april", "june", "july", "august", "september", "october", "november",
        "december"}},
      {"place",
       0.30,
       {"住んで", "住み", "引っ越", "出身", "勤め", "働いて", "通って", "実家"},
       {"live in", "living in", "moved to", "i'm from", "i am from", "work at", "work for", "grew up"},
       {}},
      {"feeling",
       0.20,
       {"嬉しい", "悲しい", "寂しい", "不安", "心配", "怖い", "楽しい", "疲れ", "辛い", "つらい", "緊張", "ストレス",
        "落ち込"},
       {},
       {"happy", "sad", "lonely", "worried", "afraid", "scared", "excited", "tired", "stressed", "nervous", "upset",
        "anxious"}},
      {"correction",
       0.35,
       {"実は", "訂正", "間違", "じゃなくて", "ではなく", "正しくは", "違います"},
       {"i meant", "not anymore", "no longer"},
       {"actually", "correction"}},
      {"belongings",
       0.25,
       {"飼って", "飼い始", "飼ってる", "ペット", "持っています", "持ってます", "持ってる", "乗っています",
        "習っています"},
       {"i own", "i have a dog", "my dog", "my cat", "my pet", "my car"},
       {"pet", "pets", "dog", "dogs", "cat", "cats", "puppy", "kitten"}},
      {"experience",
       0.15,
       {"行きました", "しました", "見ました", "会いました", "食べました", "買いました", "始めました", "行ってきました"},
       {},
       {"went", "visited", "watched", "met", "bought", "started", "tried", "took", "saw"}},
      {"remember",
       0.45,
       {"覚えておいて", "覚えといて", "覚えてね", "覚えてください", "覚えて下さい", "覚えててね", "忘れないで"},
       {"please remember", "remember that", "remember this", "don't forget"},
       {}},
  };
  ImportanceScore out;
  const std::string lower = detail::ascii_lower(text);
  const bool question = detail::is_question_text(text);
  double sum = 0.0;
  for (const auto& c : kCategories) {
    bool hit = false;
    for (const char* p : c.ja) hit = hit || text.find(p) != std::string_view::npos;
    for (const char* p : c.en_sub) hit = hit || lower.find(p) != std::string::npos;
    for (const char* w : c.en_words) hit = hit || detail::has_word(lower, w);
    if (!hit && std::string_view(c.name) == "date") hit = detail::has_digit_date(text);
    if (!hit) continue;
    out.reasons.emplace_back(c.name);
    sum += question ? c.weight / 2 : c.weight;
  }
  bool self = false;
  for (const char* p : {"私", "僕", "俺", "わたし", "あたし", "自分"})
    self = self || text.find(p) != std::string_view::npos;
  for (const char* w : {"i", "my", "me", "i'm"}) self = self || detail::has_word(lower, w);
  if (self) {
    out.reasons.emplace_back("self");
    sum += question ? 0.05 : 0.10;
  }
  if (question) out.reasons.emplace_back("question");
  out.score = std::clamp(base + sum, 0.0, 1.0);
  return out;
}

}  // namespace lal::memory
