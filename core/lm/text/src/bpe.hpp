// The BPE model of tokenizer.json: vocabulary, ranked merges, byte fallback. Internal; immutable after load.
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lal::lm::text {

class BpeModel {
 public:
  /// Builds from the "model" object; throws ConfigError naming "model.<key>".
  explicit BpeModel(const nlohmann::json& model);

  /// Appends the ids of one pre-token (already normalized and pre-tokenized).
  void tokenize(std::string_view word, std::vector<std::int32_t>& out) const;

  std::int32_t token_to_id(std::string_view token) const;  // -1 when absent
  /// nullptr when `id` is not a vocabulary id.
  const std::string* id_to_token(std::int32_t id) const;
  std::size_t id_bound() const { return id_to_token_.size(); }  // max id + 1

 private:
  struct Merge {
    std::int32_t rank;
    std::int32_t merged_id;
  };
  static std::uint64_t key(std::int32_t a, std::int32_t b) {
    return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(a)) << 32) | static_cast<std::uint32_t>(b);
  }
  const Merge* find_merge(std::int32_t a, std::int32_t b) const;

  std::unordered_map<std::string, std::int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  std::unordered_map<std::uint64_t, Merge> merges_;
  std::optional<std::int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  std::array<std::int32_t, 256> byte_ids_{};  // <0xNN> token ids (-1 when absent), filled when byte_fallback_
};

}  // namespace lal::lm::text
