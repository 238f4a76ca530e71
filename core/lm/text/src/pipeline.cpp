#include "pipeline.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "lal/checks/input_limits.hpp"
#include "regex.hpp"
#include "unicode.hpp"

namespace lal::lm::text {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------------------------
// JSON access

const json& member(const json& j, const char* key, const std::string& where) {
  if (!j.is_object()) throw ConfigError(where + ": expected an object, found " + j.type_name());
  const auto it = j.find(key);
  if (it == j.end()) throw ConfigError(where + ": missing key \"" + key + "\"");
  return *it;
}

std::string string_member(const json& j, const char* key, const std::string& where) {
  const json& v = member(j, key, where);
  if (!v.is_string()) throw ConfigError(where + "." + key + ": expected a string, found " + v.type_name());
  return v.get<std::string>();
}

bool bool_member(const json& j, const char* key, const std::string& where, bool fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw ConfigError(where + "." + key + ": expected true or false, found " + it->type_name());
  return it->get<bool>();
}

std::int32_t token_id(const json& v, const std::string& where) {
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() > INT32_MAX)
    throw ConfigError(where + ": expected a non-negative integer id");
  const auto id = v.get<std::int64_t>();
  if (static_cast<std::uint64_t>(id) > checks::limits::token_id.value())
    throw ConfigError(where + ": token id " + std::to_string(id) + " is over " + checks::limits::token_id.describe());
  return static_cast<std::int32_t>(id);
}

namespace {

const json& array_member(const json& j, const char* key, const std::string& where) {
  const json& v = member(j, key, where);
  if (!v.is_array()) throw ConfigError(where + "." + key + ": expected an array, found " + v.type_name());
  return v;
}

std::string type_of(const json& j, const std::string& where) { return string_member(j, "type", where); }

// A {"String": "..."} or {"Regex": "..."} pattern, compiled to a regex either way.
Regex pattern_member(const json& j, const std::string& where) {
  const json& p = member(j, "pattern", where);
  try {
    if (p.is_object() && p.contains("String") && p["String"].is_string())
      return Regex(regex_escape(p["String"].get<std::string>()));
    if (p.is_object() && p.contains("Regex") && p["Regex"].is_string()) return Regex(p["Regex"].get<std::string>());
  } catch (const std::invalid_argument& e) {
    throw ConfigError(where + ".pattern: " + e.what());
  }
  throw ConfigError(where + ".pattern: expected {\"String\": ...} or {\"Regex\": ...}");
}

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  std::size_t pos = 0;
  for (std::size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  if (pos == 0) return;
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// ---------------------------------------------------------------------------------------------------------------
// Normalizers

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void normalize(std::string& text) const override { text = normalize_unicode(text, form_); }

 private:
  NormalForm form_;
};

class LowercaseNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = to_lowercase(text); }
};

class StripNormalizer final : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void normalize(std::string& text) const override {
    std::size_t begin = 0, end = text.size();
    if (left_) {
      while (begin < end) {
        std::size_t i = begin;
        if (!is_whitespace(next_code_point(text, i))) break;
        begin = i;
      }
    }
    if (right_) {
      while (end > begin) {
        std::size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        std::size_t i = start;
        if (!is_whitespace(next_code_point(text, i))) break;
        end = start;
      }
    }
    text = text.substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prefix_);
  }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Regex pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& text) const override {
    const auto matches = pattern_.find_all(text);
    if (matches.empty()) return;
    std::string out;
    std::size_t pos = 0;
    for (const auto& [b, e] : matches) {
      out.append(text, pos, b - pos);
      out += content_;
      pos = e;
    }
    out.append(text, pos, std::string::npos);
    text = std::move(out);
  }

 private:
  Regex pattern_;
  std::string content_;
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  void normalize(std::string& text) const override {
    for (const auto& s : steps_) s->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

// ---------------------------------------------------------------------------------------------------------------
// Pre-tokenizers

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

SplitBehavior parse_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  throw ConfigError(where + ".behavior: unknown split behavior \"" + name +
                    "\" (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
}

// Rust's NormalizedString::split: delimiters are the regex matches (or the gaps, with invert).
void split_pieces(std::vector<Piece>& pieces, const Regex& regex, SplitBehavior behavior, bool invert) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  for (auto& piece : pieces) {
    const std::string& s = piece.text;
    // (begin, end, is_delimiter) covering s
    std::vector<std::tuple<std::size_t, std::size_t, bool>> parts;
    std::size_t pos = 0;
    for (const auto& [b, e] : regex.find_all(s)) {
      if (b > pos) parts.emplace_back(pos, b, invert);
      parts.emplace_back(b, e, !invert);
      pos = e;
    }
    if (pos < s.size()) parts.emplace_back(pos, s.size(), invert);

    std::vector<std::pair<std::size_t, std::size_t>> spans;
    bool previous_was_delimiter = false;
    for (const auto& [b, e, delimiter] : parts) {
      switch (behavior) {
        case SplitBehavior::Removed:
          if (!delimiter) spans.emplace_back(b, e);
          break;
        case SplitBehavior::Isolated: spans.emplace_back(b, e); break;
        case SplitBehavior::Contiguous:
          if (delimiter && previous_was_delimiter && !spans.empty())
            spans.back().second = e;
          else
            spans.emplace_back(b, e);
          break;
        case SplitBehavior::MergedWithPrevious:
          if (delimiter && !spans.empty() && !previous_was_delimiter)
            spans.back().second = e;
          else
            spans.emplace_back(b, e);
          break;
        case SplitBehavior::MergedWithNext:
          if (!delimiter && previous_was_delimiter && !spans.empty())
            spans.back().second = e;
          else
            spans.emplace_back(b, e);
          break;
      }
      previous_was_delimiter = delimiter;
    }
    bool first = true;
    for (const auto& [b, e] : spans) {
      if (e > b) out.push_back(Piece{s.substr(b, e - b), piece.at_start && first && b == 0});
      first = false;
    }
  }
  pieces = std::move(out);
}

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(Regex regex, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override { split_pieces(pieces, regex_, behavior_, invert_); }

 private:
  Regex regex_;
  SplitBehavior behavior_;
  bool invert_;
};

const char* const kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), regex_(use_regex ? std::make_unique<Regex>(kGpt2Pattern) : nullptr) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_)
      for (auto& p : pieces)
        if (p.text.empty() || p.text[0] != ' ') p.text.insert(0, " ");
    if (regex_) split_pieces(pieces, *regex_, SplitBehavior::Isolated, false);
    const auto& alphabet = ByteLevelAlphabet::get();
    for (auto& p : pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (char c : p.text) mapped += alphabet.byte_to_utf8[static_cast<unsigned char>(c)];
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<Regex> regex_;
};

enum class PrependScheme { Always, First, Never };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split), regex_(regex_escape(replacement_)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (auto& p : pieces) {
      replace_all(p.text, " ", replacement_);
      const bool starts = p.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::Always || (scheme_ == PrependScheme::First && p.at_start)))
        p.text.insert(0, replacement_);
    }
    if (split_) split_pieces(pieces, regex_, SplitBehavior::MergedWithNext, false);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
  Regex regex_;
};

class RegexPreTokenizer final : public PreTokenizer {  // Digits, Whitespace, WhitespaceSplit, Punctuation
 public:
  RegexPreTokenizer(const std::string& pattern, SplitBehavior behavior, bool invert)
      : regex_(pattern), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override { split_pieces(pieces, regex_, behavior_, invert_); }

 private:
  Regex regex_;
  SplitBehavior behavior_;
  bool invert_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& s : steps_) s->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

PrependScheme parse_prepend_scheme(const json& j, const std::string& where) {
  const auto it = j.find("prepend_scheme");
  if (it != j.end() && !it->is_null()) {
    const std::string s = string_member(j, "prepend_scheme", where);
    if (s == "always") return PrependScheme::Always;
    if (s == "first") return PrependScheme::First;
    if (s == "never") return PrependScheme::Never;
    throw ConfigError(where + ".prepend_scheme: unknown value \"" + s + "\" (always, first, never)");
  }
  return bool_member(j, "add_prefix_space", where, true) ? PrependScheme::Always : PrependScheme::Never;
}

std::string replacement_of(const json& j, const std::string& where) {
  const std::string r = j.contains("replacement") ? string_member(j, "replacement", where) : "\xE2\x96\x81";
  std::size_t i = 0;
  if (r.empty() || first_invalid_utf8(r) != r.size() || (next_code_point(r, i), i != r.size()))
    throw ConfigError(where + ".replacement: expected a single character");
  return r;
}

// ---------------------------------------------------------------------------------------------------------------
// Decoders

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const auto& alphabet = ByteLevelAlphabet::get();
    std::string bytes;
    for (const auto& t : tokens) {
      const std::size_t mark = bytes.size();
      bool all_mapped = true;
      for (std::size_t i = 0; i < t.size();) {
        const char32_t cp = next_code_point(t, i);
        const int b = cp < alphabet.char_to_byte.size() ? alphabet.char_to_byte[cp] : -1;
        if (b < 0) {
          all_mapped = false;
          break;
        }
        bytes += static_cast<char>(b);
      }
      if (!all_mapped) {
        bytes.resize(mark);
        bytes += t;
      }
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme)
      : replacement_(std::move(replacement)), scheme_(scheme) {}
  // As the Rust library: in the first token every replacement character is dropped (unless the scheme is never),
  // elsewhere it becomes a space.
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i)
      replace_all(tokens[i], replacement_, i == 0 && scheme_ != PrependScheme::Never ? "" : " ");
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Regex pattern, std::string content) : normalizer_(std::move(pattern), std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) normalizer_.normalize(t);
  }

 private:
  ReplaceNormalizer normalizer_;
};

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string pending;  // bytes of consecutive <0xNN> tokens
    std::size_t pending_count = 0;
    const auto flush = [&] {
      if (pending_count == 0) return;
      if (first_invalid_utf8(pending) == pending.size()) {
        out.push_back(pending);
      } else {
        for (std::size_t i = 0; i < pending_count; ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
      pending_count = 0;
    };
    for (auto& t : tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex_digit(t[3]) >= 0 && hex_digit(t[4]) >= 0) {
        pending += static_cast<char>(hex_digit(t[3]) * 16 + hex_digit(t[4]));
        ++pending_count;
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(std::string content, std::size_t start, std::size_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::size_t begin = 0, end = t.size();
      for (std::size_t n = 0; n < start_ && t.compare(begin, content_.size(), content_) == 0 && begin < end; ++n)
        begin += content_.size();
      for (std::size_t n = 0; n < stop_ && end >= begin + content_.size() &&
                              t.compare(end - content_.size(), content_.size(), content_) == 0;
           ++n)
        end -= content_.size();
      t = t.substr(begin, end - begin);
    }
  }

 private:
  std::string content_;
  std::size_t start_, stop_;
};

class BpeSuffixDecoder final : public Decoder {
 public:
  explicit BpeSuffixDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) replace_all(tokens[i], suffix_, i + 1 == tokens.size() ? "" : " ");
  }

 private:
  std::string suffix_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& s : steps_) s->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// ---------------------------------------------------------------------------------------------------------------
// Post-processors

// Special tokens around the sequence: prefix + A + suffix.
class AffixProcessor final : public PostProcessor {
 public:
  AffixProcessor(std::vector<std::int32_t> prefix, std::vector<std::int32_t> suffix)
      : prefix_(std::move(prefix)), suffix_(std::move(suffix)) {}
  void process(std::vector<std::int32_t>& ids) const override {
    const bool already =
        !prefix_.empty() && ids.size() >= prefix_.size() && std::equal(prefix_.begin(), prefix_.end(), ids.begin());
    if (!already) ids.insert(ids.begin(), prefix_.begin(), prefix_.end());
    ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  }
  std::vector<std::int32_t> prefix_ids() const override { return prefix_; }

 private:
  std::vector<std::int32_t> prefix_, suffix_;
};

class NoOpProcessor final : public PostProcessor {
 public:
  void process(std::vector<std::int32_t>&) const override {}
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  void process(std::vector<std::int32_t>& ids) const override {
    for (const auto& s : steps_) s->process(ids);
  }
  std::vector<std::int32_t> prefix_ids() const override {
    std::vector<std::int32_t> out;
    for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
      const auto p = (*it)->prefix_ids();
      out.insert(out.begin(), p.begin(), p.end());
    }
    return out;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

std::unique_ptr<PostProcessor> make_template(const json& j, const std::string& where) {
  const json& single = array_member(j, "single", where);
  const json& specials = member(j, "special_tokens", where);
  std::vector<std::int32_t> prefix, suffix;
  bool seen_sequence = false;
  for (std::size_t i = 0; i < single.size(); ++i) {
    const std::string w = where + ".single[" + std::to_string(i) + "]";
    const json& piece = single[i];
    if (piece.contains("Sequence")) {
      if (seen_sequence) throw ConfigError(w + ": a single-sequence template may hold only one Sequence");
      seen_sequence = true;
      continue;
    }
    const std::string name = string_member(member(piece, "SpecialToken", w), "id", w + ".SpecialToken");
    const std::string sw = where + ".special_tokens." + name;
    const json& token = member(specials, name.c_str(), where + ".special_tokens");
    const json& ids = array_member(token, "ids", sw);
    for (const auto& id : ids) {
      if (!id.is_number_integer()) throw ConfigError(sw + ".ids: expected integers");
      (seen_sequence ? suffix : prefix).push_back(id.get<std::int32_t>());
    }
  }
  if (!seen_sequence) throw ConfigError(where + ".single: no {\"Sequence\": ...} entry");
  return std::make_unique<AffixProcessor>(std::move(prefix), std::move(suffix));
}

std::int32_t pair_id(const json& j, const char* key, const std::string& where) {
  const json& v = member(j, key, where);
  if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer())
    throw ConfigError(where + "." + key + ": expected [\"token\", id]");
  return v[1].get<std::int32_t>();
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Builders

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  const std::string type = type_of(j, where);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::NFKD);
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip")
    return std::make_unique<StripNormalizer>(bool_member(j, "strip_left", where, true),
                                             bool_member(j, "strip_right", where, true));
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(string_member(j, "prepend", where));
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(pattern_member(j, where), string_member(j, "content", where));
  if (type == "Sequence") {
    const json& list = array_member(j, "normalizers", where);
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (std::size_t i = 0; i < list.size(); ++i)
      steps.push_back(make_normalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]"));
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  throw ConfigError(where + ".type: normalizer \"" + type +
                    "\" is not supported (NFC, NFD, NFKC, NFKD, Lowercase, Strip, Prepend, Replace, Sequence)");
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where) {
  const std::string type = type_of(j, where);
  if (type == "Split")
    return std::make_unique<SplitPreTokenizer>(pattern_member(j, where),
                                               parse_behavior(string_member(j, "behavior", where), where),
                                               bool_member(j, "invert", where, false));
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(bool_member(j, "add_prefix_space", where, true),
                                                   bool_member(j, "use_regex", where, true));
  if (type == "Metaspace")
    return std::make_unique<MetaspacePreTokenizer>(replacement_of(j, where), parse_prepend_scheme(j, where),
                                                   bool_member(j, "split", where, true));
  if (type == "Digits")
    return std::make_unique<RegexPreTokenizer>(
        bool_member(j, "individual_digits", where, false) ? R"(\p{N})" : R"(\p{N}+)", SplitBehavior::Isolated, false);
  if (type == "Whitespace") return std::make_unique<RegexPreTokenizer>(R"(\w+|[^\w\s]+)", SplitBehavior::Removed, true);
  if (type == "WhitespaceSplit") return std::make_unique<RegexPreTokenizer>(R"(\s+)", SplitBehavior::Removed, false);
  if (type == "Punctuation") {
    const SplitBehavior b =
        j.contains("behavior") ? parse_behavior(string_member(j, "behavior", where), where) : SplitBehavior::Isolated;
    return std::make_unique<RegexPreTokenizer>(R"([\p{P}!-/:-@\[-`{-~])", b, false);
  }
  if (type == "Sequence") {
    const json& list = array_member(j, "pretokenizers", where);
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (std::size_t i = 0; i < list.size(); ++i)
      steps.push_back(make_pre_tokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]"));
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  throw ConfigError(where + ".type: pre-tokenizer \"" + type +
                    "\" is not supported (Split, ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit, "
                    "Punctuation, Sequence)");
}

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where) {
  const std::string type = type_of(j, where);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace")
    return std::make_unique<MetaspaceDecoder>(replacement_of(j, where), parse_prepend_scheme(j, where));
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(pattern_member(j, where), string_member(j, "content", where));
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const json& start = member(j, "start", where);
    const json& stop = member(j, "stop", where);
    if (!start.is_number_unsigned() || !stop.is_number_unsigned())
      throw ConfigError(where + ": start and stop must be non-negative integers");
    return std::make_unique<StripDecoder>(string_member(j, "content", where), start.get<std::size_t>(),
                                          stop.get<std::size_t>());
  }
  if (type == "BPEDecoder")
    return std::make_unique<BpeSuffixDecoder>(j.contains("suffix") ? string_member(j, "suffix", where) : "</w>");
  if (type == "Sequence") {
    const json& list = array_member(j, "decoders", where);
    std::vector<std::unique_ptr<Decoder>> steps;
    for (std::size_t i = 0; i < list.size(); ++i)
      steps.push_back(make_decoder(list[i], where + ".decoders[" + std::to_string(i) + "]"));
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  throw ConfigError(where + ".type: decoder \"" + type +
                    "\" is not supported (ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, BPEDecoder, "
                    "Sequence)");
}

std::unique_ptr<PostProcessor> make_post_processor(const json& j, const std::string& where) {
  const std::string type = type_of(j, where);
  if (type == "TemplateProcessing") return make_template(j, where);
  if (type == "ByteLevel") return std::make_unique<NoOpProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    std::vector<std::int32_t> prefix{pair_id(j, "cls", where)}, suffix{pair_id(j, "sep", where)};
    return std::make_unique<AffixProcessor>(std::move(prefix), std::move(suffix));
  }
  if (type == "Sequence") {
    const json& list = array_member(j, "processors", where);
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (std::size_t i = 0; i < list.size(); ++i)
      steps.push_back(make_post_processor(list[i], where + ".processors[" + std::to_string(i) + "]"));
    return std::make_unique<SequenceProcessor>(std::move(steps));
  }
  throw ConfigError(where + ".type: post-processor \"" + type +
                    "\" is not supported (TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, "
                    "Sequence)");
}

}  // namespace lal::lm::text
