#include "bpe.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "pipeline.hpp"
#include "unicode.hpp"

namespace lal::lm::text {

using nlohmann::json;

namespace {

std::string optional_string(const json& model, const char* key) {
  const auto it = model.find(key);
  if (it == model.end() || it->is_null()) return {};
  if (!it->is_string()) throw ConfigError(std::string("model.") + key + ": expected a string or null");
  return it->get<std::string>();
}

// One queued merge; the heap pops the lowest rank first, then the leftmost position (as the Rust library does).
struct Candidate {
  std::int32_t rank;
  std::int32_t pos;
  std::int32_t merged_id;
  bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

struct Symbol {
  std::int32_t id;
  std::int32_t prev;
  std::int32_t next;
  bool alive;
};

}  // namespace

BpeModel::BpeModel(const json& model) {
  const json& vocab = member(model, "vocab", "model");
  if (!vocab.is_object()) throw ConfigError(std::string("model.vocab: expected an object, found ") + vocab.type_name());
  vocab_.reserve(vocab.size() * 2);
  std::int32_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const std::int32_t id = token_id(it.value(), "model.vocab[\"" + it.key() + "\"]");
    vocab_.emplace(it.key(), id);
    max_id = std::max(max_id, id);
  }
  id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
  has_id_.assign(id_to_token_.size(), false);
  for (const auto& [token, id] : vocab_) {
    id_to_token_[static_cast<std::size_t>(id)] = token;
    has_id_[static_cast<std::size_t>(id)] = true;
  }

  continuing_subword_prefix_ = optional_string(model, "continuing_subword_prefix");
  end_of_word_suffix_ = optional_string(model, "end_of_word_suffix");
  fuse_unk_ = bool_member(model, "fuse_unk", "model", false);
  byte_fallback_ = bool_member(model, "byte_fallback", "model", false);
  ignore_merges_ = bool_member(model, "ignore_merges", "model", false);
  if (const std::string unk = optional_string(model, "unk_token"); !unk.empty()) {
    const auto it = vocab_.find(unk);
    if (it == vocab_.end()) throw ConfigError("model.unk_token: \"" + unk + "\" is not in the vocabulary");
    unk_id_ = it->second;
  }
  if (byte_fallback_) {
    static const char* hex = "0123456789ABCDEF";
    for (int b = 0; b < 256; ++b) {
      const std::string name = std::string("<0x") + hex[b >> 4] + hex[b & 15] + ">";
      const auto it = vocab_.find(name);
      byte_ids_[static_cast<std::size_t>(b)] = it == vocab_.end() ? -1 : it->second;
    }
  }

  const json& merges = member(model, "merges", "model");
  if (!merges.is_array())
    throw ConfigError(std::string("model.merges: expected an array, found ") + merges.type_name());
  merges_.reserve(merges.size() * 2);
  const std::size_t prefix_len = continuing_subword_prefix_.size();
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const json& m = merges[i];
    const std::string where = "model.merges[" + std::to_string(i) + "]";
    std::string left, right;
    if (m.is_string()) {  // "a b"
      const std::string s = m.get<std::string>();
      const auto space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        throw ConfigError(where + ": expected two tokens separated by one space, found \"" + s + "\"");
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {  // ["a", "b"]
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      throw ConfigError(where + ": expected \"a b\" or [\"a\", \"b\"]");
    }
    const auto a = vocab_.find(left), b = vocab_.find(right);
    if (a == vocab_.end()) throw ConfigError(where + ": token \"" + left + "\" is not in the vocabulary");
    if (b == vocab_.end()) throw ConfigError(where + ": token \"" + right + "\" is not in the vocabulary");
    const std::string merged =
        left + (right.compare(0, prefix_len, continuing_subword_prefix_) == 0 ? right.substr(prefix_len) : right);
    const auto c = vocab_.find(merged);
    if (c == vocab_.end()) throw ConfigError(where + ": merged token \"" + merged + "\" is not in the vocabulary");
    merges_[key(a->second, b->second)] = Merge{static_cast<std::int32_t>(i), c->second};  // later duplicates win
  }
}

std::int32_t BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(std::string(token));
  return it == vocab_.end() ? -1 : it->second;
}

const std::string* BpeModel::id_to_token(std::int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size() || !has_id_[static_cast<std::size_t>(id)])
    return nullptr;
  return &id_to_token_[static_cast<std::size_t>(id)];
}

const BpeModel::Merge* BpeModel::find_merge(std::int32_t a, std::int32_t b) const {
  const auto it = merges_.find(key(a, b));
  return it == merges_.end() ? nullptr : &it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<std::int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const auto it = vocab_.find(std::string(word));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }

  // 1. One symbol per character (or per byte via <0xNN>, or unk).
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&](std::int32_t id) {
    const auto n = static_cast<std::int32_t>(symbols.size());
    symbols.push_back(Symbol{id, n - 1, n + 1, true});
  };
  std::int32_t pending_unk = -1;  // an unk not yet added (fuse_unk extends it)
  std::string piece;
  for (std::size_t i = 0; i < word.size();) {
    const std::size_t begin = i;
    i += utf8_length(static_cast<unsigned char>(word[i]));
    piece.assign(word.data() + begin, i - begin);
    if (begin > 0 && !continuing_subword_prefix_.empty()) piece.insert(0, continuing_subword_prefix_);
    if (i == word.size() && !end_of_word_suffix_.empty()) piece += end_of_word_suffix_;
    const auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      if (pending_unk >= 0) add(pending_unk), pending_unk = -1;
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : piece) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        for (char c : piece) add(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      pending_unk = *unk_id_;
    }  // without an unk token the character is dropped, as in the Rust library
  }
  if (pending_unk >= 0) add(pending_unk);
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // 2. Apply merges, best rank first; stale queue entries are skipped when popped.
  std::vector<Candidate> heap;
  heap.reserve(symbols.size());
  for (std::size_t i = 0; i + 1 < symbols.size(); ++i)
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id))
      heap.push_back(Candidate{m->rank, static_cast<std::int32_t>(i), m->merged_id});
  std::make_heap(heap.begin(), heap.end());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[static_cast<std::size_t>(top.pos)];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = symbols[static_cast<std::size_t>(left.next)];
    const Merge* current = find_merge(left.id, right.id);
    if (!current || current->merged_id != top.merged_id) continue;
    left.id = top.merged_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) symbols[static_cast<std::size_t>(left.next)].prev = top.pos;
    if (left.prev >= 0) {
      const Symbol& p = symbols[static_cast<std::size_t>(left.prev)];
      if (const Merge* m = find_merge(p.id, left.id)) {
        heap.push_back(Candidate{m->rank, left.prev, m->merged_id});
        std::push_heap(heap.begin(), heap.end());
      }
    }
    if (left.next >= 0) {
      const Symbol& n = symbols[static_cast<std::size_t>(left.next)];
      if (const Merge* m = find_merge(left.id, n.id)) {
        heap.push_back(Candidate{m->rank, top.pos, m->merged_id});
        std::push_heap(heap.begin(), heap.end());
      }
    }
  }
  for (std::int32_t i = 0; i >= 0; i = symbols[static_cast<std::size_t>(i)].next)
    out.push_back(symbols[static_cast<std::size_t>(i)].id);
}

}  // namespace lal::lm::text
