#include "lal/train/vocab_trim.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <unordered_map>

#include "lal/train/files.hpp"

namespace lal::train {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

std::string tokenizer_file(const std::string& p) {
  return fs::is_directory(p) ? (fs::path(p) / "tokenizer.json").string() : p;
}

ojson parse_json_file(const std::string& path) {
  try {
    return ojson::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": not valid JSON: " + e.what());
  }
}

std::string utf8(std::uint32_t cp) {
  std::string s;
  if (cp < 0x80)
    s += static_cast<char>(cp);
  else if (cp < 0x800)
    s += static_cast<char>(0xC0 | (cp >> 6)), s += static_cast<char>(0x80 | (cp & 0x3F));
  else
    s += static_cast<char>(0xE0 | (cp >> 12)), s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F)),
        s += static_cast<char>(0x80 | (cp & 0x3F));
  return s;
}

// GPT-2's bytes_to_unicode alphabet: the 256 one-character tokens of byte-level BPE.
std::set<std::string> byte_level_alphabet() {
  std::set<std::string> out;
  std::uint32_t extra = 0;
  for (std::uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
    out.insert(utf8(printable ? b : 256 + extra++));
  }
  return out;
}

bool is_byte_fallback(const std::string& t) {
  return t.size() == 6 && t.rfind("<0x", 0) == 0 && t[5] == '>' && std::isxdigit(static_cast<unsigned char>(t[3])) &&
         std::isxdigit(static_cast<unsigned char>(t[4]));
}

std::pair<std::string, std::string> merge_parts(const ojson& m, const std::string& file, std::size_t i) {
  if (m.is_string()) {
    const auto s = m.get<std::string>();
    const auto sp = s.find(' ', 1);
    if (sp == std::string::npos)
      throw std::runtime_error(file + ": model.merges[" + std::to_string(i) + "]: expected \"a b\", got " + m.dump());
    return {s.substr(0, sp), s.substr(sp + 1)};
  }
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return {m[0].get<std::string>(), m[1].get<std::string>()};
  throw std::runtime_error(file + ": model.merges[" + std::to_string(i) + "]: expected \"a b\" or [a, b], got " +
                           m.dump());
}

void remap_post_processor(ojson& node, const VocabMap& map) {
  if (node.is_object()) {
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (it.key() == "ids" && it->is_array()) {
        for (auto& id : *it)
          if (id.is_number_integer()) id = map.to_new(id.get<std::int32_t>());
      } else {
        remap_post_processor(*it, map);
      }
    }
  } else if (node.is_array()) {
    for (auto& v : node) remap_post_processor(v, map);
  }
}

}  // namespace

std::int32_t VocabMap::to_new(std::int32_t old_id) const {
  if (old_id < 0 || static_cast<std::size_t>(old_id) >= old_to_new.size() || old_to_new[old_id] < 0)
    throw std::out_of_range("token id " + std::to_string(old_id) + " is not in the trimmed vocabulary");
  return old_to_new[old_id];
}

VocabMap build_vocab_map(const std::string& tokenizer_path, const std::vector<std::int32_t>& used_ids) {
  const std::string file = tokenizer_file(tokenizer_path);
  const ojson tj = parse_json_file(file);
  if (!tj.contains("model") || tj["model"].value("type", "") != "BPE")
    throw std::runtime_error(file + ": model.type: vocabulary trimming supports BPE tokenizers only");
  const ojson& vocab = tj["model"]["vocab"];
  if (!vocab.is_object()) throw std::runtime_error(file + ": model.vocab: expected an object");
  std::unordered_map<std::string, std::int32_t> id_of;
  std::int32_t max_id = -1;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const auto id = it->get<std::int32_t>();
    id_of[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  std::vector<std::string> token_of(static_cast<std::size_t>(max_id + 1));
  for (const auto& [t, id] : id_of) token_of[id] = t;
  std::set<std::int32_t> kept;
  if (tj.contains("added_tokens"))
    for (const auto& a : tj["added_tokens"]) {
      const auto id = a["id"].get<std::int32_t>();
      kept.insert(id);
      max_id = std::max(max_id, id);
    }
  const auto alphabet = byte_level_alphabet();
  for (const auto& [t, id] : id_of)
    if (alphabet.count(t) || is_byte_fallback(t)) kept.insert(id);
  if (tj["model"].contains("unk_token") && tj["model"]["unk_token"].is_string()) {
    auto it = id_of.find(tj["model"]["unk_token"].get<std::string>());
    if (it != id_of.end()) kept.insert(it->second);
  }
  // parent merge of each token (the lowest-ranked merge producing it)
  std::unordered_map<std::string, std::pair<std::string, std::string>> parents;
  const ojson& merges = tj["model"]["merges"];
  for (std::size_t i = 0; i < merges.size(); ++i) {
    auto [a, b] = merge_parts(merges[i], file, i);
    parents.emplace(a + b, std::make_pair(a, b));
  }
  std::vector<std::int32_t> stack;
  for (auto id : used_ids) {
    if (id < 0 || id > max_id)
      throw std::runtime_error(file + ": the data uses token id " + std::to_string(id) + ", outside the vocabulary");
    stack.push_back(id);
  }
  std::set<std::int32_t> visited;
  while (!stack.empty()) {
    const auto id = stack.back();
    stack.pop_back();
    if (!visited.insert(id).second) continue;
    kept.insert(id);
    if (static_cast<std::size_t>(id) >= token_of.size()) continue;  // added token
    auto p = parents.find(token_of[id]);
    if (p == parents.end()) continue;
    for (const auto* part : {&p->second.first, &p->second.second}) {
      auto it = id_of.find(*part);
      if (it != id_of.end()) stack.push_back(it->second);
    }
  }
  VocabMap map;
  map.kept.assign(kept.begin(), kept.end());
  map.old_to_new.assign(static_cast<std::size_t>(max_id + 1), -1);
  for (std::size_t i = 0; i < map.kept.size(); ++i) map.old_to_new[map.kept[i]] = static_cast<std::int32_t>(i);
  return map;
}

void write_trimmed_tokenizer(const std::string& tokenizer_path, const std::string& dst_dir, const VocabMap& map) {
  const std::string file = tokenizer_file(tokenizer_path);
  ojson tj = parse_json_file(file);
  ojson& model = tj["model"];
  ojson new_vocab = ojson::object();
  std::vector<std::pair<std::int32_t, std::string>> entries;
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    const auto id = it->get<std::int32_t>();
    if (map.old_to_new.at(id) >= 0) entries.emplace_back(map.old_to_new[id], it.key());
  }
  std::sort(entries.begin(), entries.end());
  std::set<std::string> kept_tokens;
  for (const auto& [id, t] : entries) new_vocab[t] = id, kept_tokens.insert(t);
  model["vocab"] = std::move(new_vocab);
  ojson new_merges = ojson::array();
  for (std::size_t i = 0; i < model["merges"].size(); ++i) {
    auto [a, b] = merge_parts(model["merges"][i], file, i);
    if (kept_tokens.count(a) && kept_tokens.count(b) && kept_tokens.count(a + b))
      new_merges.push_back(model["merges"][i]);
  }
  model["merges"] = std::move(new_merges);
  if (tj.contains("added_tokens"))
    for (auto& a : tj["added_tokens"]) a["id"] = map.to_new(a["id"].get<std::int32_t>());
  if (tj.contains("post_processor")) remap_post_processor(tj["post_processor"], map);
  fs::create_directories(dst_dir);
  write_file_atomic((fs::path(dst_dir) / "tokenizer.json").string(), tj.dump(1) + "\n");

  const auto cfg_path = fs::path(file).parent_path() / "tokenizer_config.json";
  if (fs::exists(cfg_path)) {
    ojson cfg = parse_json_file(cfg_path.string());
    if (cfg.contains("added_tokens_decoder") && cfg["added_tokens_decoder"].is_object()) {
      ojson dec = ojson::object();
      for (auto it = cfg["added_tokens_decoder"].begin(); it != cfg["added_tokens_decoder"].end(); ++it) {
        const auto old_id = std::stoi(it.key());
        if (old_id >= 0 && static_cast<std::size_t>(old_id) < map.old_to_new.size() && map.old_to_new[old_id] >= 0)
          dec[std::to_string(map.old_to_new[old_id])] = *it;
      }
      cfg["added_tokens_decoder"] = std::move(dec);
    }
    write_file_atomic((fs::path(dst_dir) / "tokenizer_config.json").string(), cfg.dump(2) + "\n");
  }
}

}  // namespace lal::train
