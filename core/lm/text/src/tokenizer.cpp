#include "lal/lm/tokenizer.hpp"

#include <algorithm>
#include <bitset>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "bpe.hpp"
#include "lal/checks/input_limits.hpp"
#include "pipeline.hpp"
#include "unicode.hpp"

namespace lal::lm {

using nlohmann::json;
namespace fs = std::filesystem;
using namespace text;

namespace {

struct AddedToken {
  std::int32_t id;
  std::string content;
  bool single_word, lstrip, rstrip, normalized, special;
};

// Leftmost-longest matcher over added-token spellings (what the Rust library does with Aho-Corasick).
class TokenTrie {
 public:
  struct Match {
    std::size_t begin, end;
    std::size_t token;  // index into Impl::added
  };
  bool empty() const { return nodes_.size() <= 1; }
  void insert(std::string_view spelling, std::size_t token) {
    if (spelling.empty()) return;
    if (nodes_.empty()) nodes_.emplace_back();
    std::size_t node = 0;
    for (char c : spelling) {
      const auto byte = static_cast<unsigned char>(c);
      std::size_t next = 0;
      for (const auto& [b, child] : nodes_[node].children)
        if (b == byte) next = child;
      if (next == 0) {
        next = nodes_.size();
        nodes_[node].children.emplace_back(byte, next);
        nodes_.emplace_back();
      }
      node = next;
    }
    if (nodes_[node].token < 0) nodes_[node].token = static_cast<std::int64_t>(token);
    first_bytes_.set(static_cast<unsigned char>(spelling[0]));
  }
  std::vector<Match> find_all(std::string_view s) const {
    std::vector<Match> out;
    if (empty()) return out;
    for (std::size_t pos = 0; pos < s.size();) {
      if (!first_bytes_.test(static_cast<unsigned char>(s[pos]))) {
        ++pos;
        continue;
      }
      std::size_t node = 0, best_end = 0;
      std::int64_t best = -1;
      for (std::size_t i = pos; i < s.size(); ++i) {
        const auto byte = static_cast<unsigned char>(s[i]);
        std::size_t next = 0;
        for (const auto& [b, child] : nodes_[node].children)
          if (b == byte) next = child;
        if (next == 0) break;
        node = next;
        if (nodes_[node].token >= 0) best = nodes_[node].token, best_end = i + 1;
      }
      if (best < 0) {
        ++pos;
        continue;
      }
      out.push_back(Match{pos, best_end, static_cast<std::size_t>(best)});
      pos = best_end;
    }
    return out;
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, std::size_t>> children;
    std::int64_t token = -1;
  };
  std::vector<Node> nodes_;
  std::bitset<256> first_bytes_;
};

// A stretch of input: either plain text [begin, end) or an added token.
struct Segment {
  std::size_t begin, end;
  std::int32_t added_id;  // -1 for plain text
};

/// JSON text with bounded nesting (a 50 000-deep normalizer Sequence fails in microseconds, not gigabytes later).
json parse_json_text(std::string_view text, const std::string& name) {
  try {
    return checks::parse_json_limited(text, name);
  } catch (const json::parse_error& e) {
    throw TokenizerError(name + ": invalid JSON: " + e.what());
  } catch (const checks::InputLimitError& e) {
    throw TokenizerError(e.what());
  }
}

json parse_json_file(const fs::path& path, const checks::Limit& size_limit) {
  std::string text;
  try {
    text = checks::read_file_limited(path, size_limit);
  } catch (const std::exception& e) {
    throw TokenizerError(e.what());
  }
  return parse_json_text(text, path.string());
}

char32_t code_point_before(std::string_view s, std::size_t end) {
  std::size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return next_code_point(s, start);
}

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, std::size_t> added_by_content;
  std::unordered_map<std::int32_t, std::size_t> added_by_id;
  TokenTrie raw_trie, normalized_trie;
  std::size_t vocab_size = 0;
  std::optional<std::int32_t> bos, eos, pad;

  // Rust's AddedVocabulary::find_matches: split `text` around added tokens, applying single_word/lstrip/rstrip.
  void split_added(std::string_view text, const TokenTrie& trie, std::size_t base, std::vector<Segment>& out) const {
    std::size_t start_offset = 0;
    for (const auto& m : trie.find_all(text)) {
      const AddedToken& token = added[m.token];
      std::size_t start = m.begin, stop = m.end;
      if (token.single_word) {
        const bool space_before = start == 0 || !is_word_char(code_point_before(text, start));
        std::size_t i = stop;
        const bool space_after = stop == text.size() || !is_word_char(next_code_point(text, i));
        if (!space_before || !space_after) continue;
      }
      if (token.lstrip) {
        std::size_t s = start;
        while (s > 0) {
          std::size_t b = s - 1;
          while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
          std::size_t i = b;
          if (!is_whitespace(next_code_point(text, i))) break;
          s = b;
        }
        start = std::max(s, start_offset);
      }
      if (token.rstrip) {
        while (stop < text.size()) {
          std::size_t i = stop;
          if (!is_whitespace(next_code_point(text, i))) break;
          stop = i;
        }
      }
      if (start_offset < start) out.push_back(Segment{base + start_offset, base + start, -1});
      out.push_back(Segment{base + start, base + stop, token.id});
      start_offset = stop;
    }
    if (start_offset < text.size()) out.push_back(Segment{base + start_offset, base + text.size(), -1});
  }

  void encode_plain(std::string normalized, bool at_start, std::vector<std::int32_t>& ids) const {
    std::vector<Piece> pieces{Piece{std::move(normalized), at_start}};
    if (pre_tokenizer) pre_tokenizer->pre_tokenize(pieces);
    for (const auto& p : pieces) model->tokenize(p.text, ids);
  }

  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens) const {
    if (const std::size_t bad = first_invalid_utf8(text); bad != text.size())
      throw TokenizerError("encode: the text is not valid UTF-8 at byte offset " + std::to_string(bad));
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() / 2 + 4);
    std::vector<Segment> segments;
    split_added(text, raw_trie, 0, segments);
    std::vector<Segment> inner;
    for (const auto& seg : segments) {
      if (seg.added_id >= 0) {
        ids.push_back(seg.added_id);
        continue;
      }
      std::string normalized(text.substr(seg.begin, seg.end - seg.begin));
      if (normalizer) normalizer->normalize(normalized);
      if (normalized_trie.empty()) {
        encode_plain(std::move(normalized), seg.begin == 0, ids);
        continue;
      }
      inner.clear();
      split_added(normalized, normalized_trie, 0, inner);
      for (const auto& sub : inner) {
        if (sub.added_id >= 0)
          ids.push_back(sub.added_id);
        else
          encode_plain(normalized.substr(sub.begin, sub.end - sub.begin), seg.begin == 0 && sub.begin == 0, ids);
      }
    }
    if (add_special_tokens && post_processor) post_processor->process(ids);
    return ids;
  }

  const std::string& spelling(std::int32_t id) const {
    if (const auto it = added_by_id.find(id); it != added_by_id.end()) return added[it->second].content;
    if (const std::string* t = model->id_to_token(id)) return *t;
    throw TokenizerError("id " + std::to_string(id) + " is not in the vocabulary of " + path + " (vocab size " +
                         std::to_string(vocab_size) + ")");
  }

  bool special(std::int32_t id) const {
    const auto it = added_by_id.find(id);
    return it != added_by_id.end() && added[it->second].special;
  }

  std::string decode(const std::vector<std::int32_t>& ids, bool skip_special_tokens) const {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (const std::int32_t id : ids) {
      if (skip_special_tokens && special(id)) continue;
      tokens.push_back(spelling(id));
    }
    std::string out;
    if (decoder) {
      decoder->decode_chain(tokens);
      for (const auto& t : tokens) out += t;
    } else {
      for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    }
    return out;
  }

  std::int32_t lookup(std::string_view token) const {
    if (const auto it = added_by_content.find(std::string(token)); it != added_by_content.end())
      return added[it->second].id;
    return model->token_to_id(token);
  }
};

namespace {

void load_components(Tokenizer::Impl& impl, const json& root) {
  if (!root.is_object()) throw ConfigError(std::string("expected a JSON object at the top, found ") + root.type_name());
  const json& model = member(root, "model", "(top level)");
  if (!model.is_object()) throw ConfigError(std::string("model: expected an object, found ") + model.type_name());
  std::string type = model.contains("type") ? string_member(model, "type", "model") : "";
  if (type.empty() && model.contains("merges")) type = "BPE";  // files from before the "type" key existed
  if (type != "BPE")
    throw ConfigError("model.type: \"" + type + "\" is not supported (supported: BPE; WordPiece, WordLevel and " +
                      "Unigram models are not implemented)");
  impl.model = std::make_unique<BpeModel>(model);

  const auto optional_stage = [&](const char* key, auto make) {
    const auto it = root.find(key);
    return (it == root.end() || it->is_null()) ? nullptr : make(*it, std::string(key));
  };
  impl.normalizer = optional_stage("normalizer", make_normalizer);
  impl.pre_tokenizer = optional_stage("pre_tokenizer", make_pre_tokenizer);
  impl.post_processor = optional_stage("post_processor", make_post_processor);
  impl.decoder = optional_stage("decoder", make_decoder);

  std::size_t bound = impl.model->id_bound();
  if (const auto it = root.find("added_tokens"); it != root.end() && !it->is_null()) {
    if (!it->is_array()) throw ConfigError("added_tokens: expected an array");
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& t = (*it)[i];
      const std::string where = "added_tokens[" + std::to_string(i) + "]";
      AddedToken token{token_id(member(t, "id", where), where + ".id"), string_member(t, "content", where),
                       bool_member(t, "single_word", where, false),     bool_member(t, "lstrip", where, false),
                       bool_member(t, "rstrip", where, false),          bool_member(t, "normalized", where, true),
                       bool_member(t, "special", where, false)};
      if (token.content.empty()) throw ConfigError(where + ".content: empty token");
      if (first_invalid_utf8(token.content) != token.content.size())
        throw ConfigError(where + ".content: not valid UTF-8");
      bound = std::max(bound, static_cast<std::size_t>(token.id) + 1);
      impl.added_by_content[token.content] = impl.added.size();
      impl.added_by_id[token.id] = impl.added.size();
      impl.added.push_back(std::move(token));
    }
  }
  for (std::size_t i = 0; i < impl.added.size(); ++i) {
    const AddedToken& t = impl.added[i];
    if (!t.normalized) {
      impl.raw_trie.insert(t.content, i);
    } else {
      std::string spelling = t.content;  // matched against normalized text, so normalize the spelling too
      if (impl.normalizer) impl.normalizer->normalize(spelling);
      impl.normalized_trie.insert(spelling, i);
    }
  }
  impl.vocab_size = bound;
}

std::optional<std::int32_t> config_token(const Tokenizer::Impl& impl, const json& config, const char* key,
                                         const std::string& config_path) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  std::string content;
  if (it->is_string())
    content = it->get<std::string>();
  else if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    content = (*it)["content"].get<std::string>();
  else
    throw TokenizerError(config_path + ": " + key + ": expected a string, {\"content\": ...} or null");
  const std::int32_t id = impl.lookup(content);
  if (id < 0) throw TokenizerError(config_path + ": " + key + ": \"" + content + "\" is not in the vocabulary");
  return id;
}

std::optional<std::int32_t> first_known(const Tokenizer::Impl& impl, std::initializer_list<const char*> names) {
  for (const char* n : names)
    if (const std::int32_t id = impl.lookup(n); id >= 0) return id;
  return std::nullopt;
}

void load_components_or_throw(Tokenizer::Impl& impl, const json& root) {
  try {
    load_components(impl, root);
  } catch (const ConfigError& e) {
    throw TokenizerError(impl.path + ": " + e.what());
  } catch (const json::exception& e) {
    throw TokenizerError(impl.path + ": " + e.what());
  }
}

void guess_special_tokens(Tokenizer::Impl& impl);

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& path) {
  fs::path file = path;
  std::error_code ec;
  if (fs::is_directory(file, ec)) {
    file /= "tokenizer.json";
    if (!fs::exists(file, ec)) throw TokenizerError(path + ": the directory has no tokenizer.json");
  } else if (!fs::exists(file, ec)) {
    throw TokenizerError(path + ": no such file or directory");
  }
  auto impl = std::make_shared<Impl>();
  impl->path = file.string();
  load_components_or_throw(*impl, parse_json_file(file, checks::limits::tokenizer_file));

  const fs::path config_path = file.parent_path() / "tokenizer_config.json";
  if (fs::exists(config_path, ec)) {
    const json config = parse_json_file(config_path, checks::limits::tokenizer_config_file);
    if (!config.is_object()) throw TokenizerError(config_path.string() + ": expected a JSON object");
    impl->bos = config_token(*impl, config, "bos_token", config_path.string());
    impl->eos = config_token(*impl, config, "eos_token", config_path.string());
    impl->pad = config_token(*impl, config, "pad_token", config_path.string());
  } else {
    guess_special_tokens(*impl);
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_json(std::string_view json_text, const std::string& name) {
  checks::check_size(json_text.size(), checks::limits::tokenizer_file, name);
  auto impl = std::make_shared<Impl>();
  impl->path = name;
  load_components_or_throw(*impl, parse_json_text(json_text, name));
  guess_special_tokens(*impl);
  return Tokenizer(std::move(impl));
}

namespace {
void guess_special_tokens(Tokenizer::Impl& impl_ref) {
  auto* impl = &impl_ref;
  {
    if (impl->post_processor) {
      const auto prefix = impl->post_processor->prefix_ids();
      if (!prefix.empty()) impl->bos = prefix.front();
    }
    if (!impl->bos) impl->bos = first_known(*impl, {"<s>", "<|begin_of_text|>", "<bos>", "[CLS]"});
    impl->eos = first_known(*impl, {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>", "[SEP]"});
    impl->pad = first_known(*impl, {"<pad>", "<|pad|>", "[PAD]"});
  }
}
}  // namespace

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

std::int32_t Tokenizer::token_to_id(std::string_view token) const { return impl_->lookup(token); }

std::string Tokenizer::id_to_token(std::int32_t id) const { return impl_->spelling(id); }

std::size_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

bool Tokenizer::is_special(std::int32_t id) const { return impl_->special(id); }

std::optional<std::int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<std::int32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<std::int32_t> Tokenizer::pad_id() const { return impl_->pad; }

const std::string& Tokenizer::source_path() const { return impl_->path; }

Tokenizer::StreamDecoder Tokenizer::stream_decoder(bool skip_special_tokens) const {
  return StreamDecoder(impl_, skip_special_tokens);
}

namespace {
bool ends_with_replacement(const std::string& s) {
  return s.size() >= 3 && s.compare(s.size() - 3, 3, "\xEF\xBF\xBD") == 0;
}
}  // namespace

// The Rust library's DecodeStream algorithm: decode the ids since the previous emitted piece, emit what extends the
// already-emitted prefix unless it ends in U+FFFD (an incomplete character that later ids may complete).
std::string Tokenizer::StreamDecoder::push(std::int32_t id) {
  window_.push_back(id);
  std::string text = impl_->decode(window_, skip_special_tokens_);
  if (text.size() <= prefix_.size() || ends_with_replacement(text) || text.compare(0, prefix_.size(), prefix_) != 0)
    return {};
  std::string fresh = text.substr(prefix_.size());
  const std::size_t emitted = window_.size() - prefix_index_;
  window_.erase(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(prefix_index_));
  prefix_ = impl_->decode(window_, skip_special_tokens_);
  prefix_index_ = emitted;
  return fresh;
}

std::string Tokenizer::StreamDecoder::flush() {
  std::string rest;
  if (!window_.empty()) {
    const std::string text = impl_->decode(window_, skip_special_tokens_);
    if (text.compare(0, prefix_.size(), prefix_) == 0) {
      rest = text.substr(prefix_.size());
    } else {  // the decoder rewrote the context (not seen with the supported decoders): emit the pending ids alone
      const std::vector<std::int32_t> pending(window_.begin() + static_cast<std::ptrdiff_t>(prefix_index_),
                                              window_.end());
      rest = impl_->decode(pending, skip_special_tokens_);
    }
  }
  window_.clear();
  prefix_.clear();
  prefix_index_ = 0;
  return rest;
}

}  // namespace lal::lm
