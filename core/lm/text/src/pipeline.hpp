// The stages of a Hugging Face tokenizer pipeline, built from their tokenizer.json objects. Internal.
//
// Every builder takes the JSON object and `where` (its key path, e.g. "pre_tokenizer.pretokenizers[0]") and throws
// ConfigError naming that path; the loader prefixes the file name. All stages are immutable after construction.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <stdexcept>
#include <string>
#include <vector>

namespace lal::lm::text {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A pre-token: text plus whether it begins at offset 0 of the original input (Metaspace's prepend_scheme "first").
struct Piece {
  std::string text;
  bool at_start = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  /// Replaces `pieces` by their splits (empty pieces are dropped).
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  /// Rust's Decoder::decode_chain: tokens in, tokens out; the caller concatenates the result.
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  /// Adds the special tokens around one sequence. A leading special-token run that `ids` already begins with is
  /// not added again (no double BOS).
  virtual void process(std::vector<std::int32_t>& ids) const = 0;
  /// The ids placed before the sequence (for bos_id() guessing).
  virtual std::vector<std::int32_t> prefix_ids() const { return {}; }
};

std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<Decoder> make_decoder(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const std::string& where);

/// Type-checked access to a JSON member; ConfigError "<where>.<key>: ..." when missing or of the wrong type.
const nlohmann::json& member(const nlohmann::json& j, const char* key, const std::string& where);
std::string string_member(const nlohmann::json& j, const char* key, const std::string& where);
bool bool_member(const nlohmann::json& j, const char* key, const std::string& where, bool fallback);
/// A token id: a non-negative integer no larger than checks::limits::token_id (LAL_MAX_TOKEN_ID). ConfigError
/// "<where>: expected a non-negative integer id", or naming the limit and how to raise it, otherwise.
std::int32_t token_id(const nlohmann::json& v, const std::string& where);

}  // namespace lal::lm::text
