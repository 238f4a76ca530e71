#include "gguf_vocab.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace lal::test {

namespace {

// GGUF v2/v3 metadata reader: just enough for the tokenizer.* arrays.
class GgufReader {
 public:
  GgufReader(std::string path) : path_(std::move(path)) {
    std::ifstream in(path_, std::ios::binary);
    if (!in) throw std::runtime_error(path_ + ": cannot open");
    bytes_.assign(std::istreambuf_iterator<char>(in), {});
  }
  template <class T>
  T scalar() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string() {
    const auto n = scalar<std::uint64_t>();
    need(n);
    std::string s(bytes_.data() + pos_, n);
    pos_ += n;
    return s;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(path_ + ": byte " + std::to_string(pos_) + ": " + what);
  }
  void need(std::uint64_t n) const {
    if (n > bytes_.size() - pos_) fail("unexpected end of file");
  }
  std::size_t pos_ = 0;

 private:
  std::string path_;
  std::vector<char> bytes_;
};

enum GgufType : std::uint32_t { kU8 = 0, kI8, kU16, kI16, kU32, kI32, kF32, kBool, kString, kArray, kU64, kI64, kF64 };

struct Value {
  std::vector<std::string> strings;
  std::vector<double> numbers;
  std::string text;
  double number = 0;
};

double read_number(GgufReader& r, std::uint32_t type) {
  switch (type) {
    case kU8:
      return r.scalar<std::uint8_t>();
    case kI8:
      return r.scalar<std::int8_t>();
    case kU16:
      return r.scalar<std::uint16_t>();
    case kI16:
      return r.scalar<std::int16_t>();
    case kU32:
      return r.scalar<std::uint32_t>();
    case kI32:
      return r.scalar<std::int32_t>();
    case kF32:
      return r.scalar<float>();
    case kBool:
      return r.scalar<std::uint8_t>();
    case kU64:
      return static_cast<double>(r.scalar<std::uint64_t>());
    case kI64:
      return static_cast<double>(r.scalar<std::int64_t>());
    case kF64:
      return r.scalar<double>();
    default:
      r.fail("unknown value type " + std::to_string(type));
  }
}

Value read_value(GgufReader& r, std::uint32_t type) {
  Value v;
  if (type == kString) {
    v.text = r.string();
  } else if (type == kArray) {
    const auto element = r.scalar<std::uint32_t>();
    const auto n = r.scalar<std::uint64_t>();
    for (std::uint64_t i = 0; i < n; ++i) {
      if (element == kString)
        v.strings.push_back(r.string());
      else if (element == kArray)
        r.fail("nested arrays are not supported");
      else
        v.numbers.push_back(read_number(r, element));
    }
  } else {
    v.number = read_number(r, type);
  }
  return v;
}

// Python-style code point split of UTF-8 (the converter splits pieces by characters).
std::vector<std::size_t> char_boundaries(const std::string& s) {
  std::vector<std::size_t> b;
  for (std::size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) b.push_back(i);
  return b;
}

}  // namespace

nlohmann::json gguf_spm_to_tokenizer_json(const std::string& gguf_path) {
  GgufReader r(gguf_path);
  if (r.scalar<std::uint32_t>() != 0x46554747u) r.fail("not a GGUF file (bad magic)");
  const auto version = r.scalar<std::uint32_t>();
  if (version < 2) r.fail("GGUF version " + std::to_string(version) + " is not supported");
  r.scalar<std::uint64_t>();  // tensor count
  const auto kv_count = r.scalar<std::uint64_t>();
  std::map<std::string, Value> kv;
  for (std::uint64_t i = 0; i < kv_count; ++i) {
    std::string key = r.string();
    const auto type = r.scalar<std::uint32_t>();
    kv[key] = read_value(r, type);
  }
  if (kv["tokenizer.ggml.model"].text != "llama")
    throw std::runtime_error(gguf_path + ": tokenizer.ggml.model is \"" + kv["tokenizer.ggml.model"].text +
                             "\", expected \"llama\" (SentencePiece)");
  const auto& tokens = kv["tokenizer.ggml.tokens"].strings;
  const auto& scores = kv["tokenizer.ggml.scores"].numbers;
  const auto& types = kv["tokenizer.ggml.token_type"].numbers;
  if (tokens.empty() || scores.size() != tokens.size() || types.size() != tokens.size())
    throw std::runtime_error(gguf_path + ": tokenizer arrays are missing or of different lengths");
  const auto bos = static_cast<std::size_t>(kv["tokenizer.ggml.bos_token_id"].number);
  const auto unk = static_cast<std::size_t>(kv["tokenizer.ggml.unknown_token_id"].number);

  nlohmann::json vocab = nlohmann::json::object();
  std::unordered_map<std::string, std::size_t> id_of;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    vocab[tokens[i]] = i;
    id_of.emplace(tokens[i], i);
  }
  // Merges as transformers' SentencePieceExtractor derives them: every split of a normal piece into two vocabulary
  // pieces, ordered by the merged piece's score (highest first), ties in vocabulary order.
  struct MergeRule {
    double score;
    std::size_t order;
    std::string left, right;
  };
  std::vector<MergeRule> rules;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (types[i] != 1) continue;  // only NORMAL pieces are produced by merges
    const std::string& piece = tokens[i];
    std::vector<std::pair<std::size_t, std::size_t>> local;  // (left id, right id)
    for (const std::size_t cut : char_boundaries(piece)) {
      if (cut == 0) continue;
      const auto l = id_of.find(piece.substr(0, cut)), rr = id_of.find(piece.substr(cut));
      if (l != id_of.end() && rr != id_of.end()) local.emplace_back(l->second, rr->second);
    }
    std::sort(local.begin(), local.end());
    for (const auto& [l, rr] : local) rules.push_back(MergeRule{scores[i], rules.size(), tokens[l], tokens[rr]});
  }
  std::stable_sort(rules.begin(), rules.end(),
                   [](const MergeRule& a, const MergeRule& b) { return a.score > b.score; });
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& m : rules) merges.push_back(nlohmann::json::array({m.left, m.right}));

  nlohmann::json added = nlohmann::json::array();
  for (std::size_t i = 0; i < tokens.size(); ++i)
    if (types[i] == 2 || types[i] == 3)  // UNKNOWN, CONTROL
      added.push_back({{"id", i},
                       {"content", tokens[i]},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", false},
                       {"special", true}});

  const std::string space = "\xE2\x96\x81";
  return {
      {"version", "1.0"},
      {"added_tokens", added},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", space}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", tokens[bos]}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", nlohmann::json::array()},
        {"special_tokens", {{tokens[bos], {{"id", tokens[bos]}, {"ids", {bos}}, {"tokens", {tokens[bos]}}}}}}}},
      {"decoder",
       {{"type", "Sequence"},
        {"decoders",
         {{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
          {{"type", "ByteFallback"}},
          {{"type", "Fuse"}},
          {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", tokens[unk]},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", true},
        {"byte_fallback", true},
        {"vocab", vocab},
        {"merges", merges}}}};
}

}  // namespace lal::test
