// lal::checks — limits on what enters lal from files: size caps, JSON nesting depth, YAML nesting and alias
// expansion. Every limit has a name, a default and an environment variable that raises it; errors name all three,
// so that a user with a legitimately large file knows what to set:
//
//   configs/big.yaml: the file is larger than the 4 MiB limit for pipeline YAML files (LAL_MAX_PIPELINE_BYTES;
//   set it higher, e.g. LAL_MAX_PIPELINE_BYTES=8M, if the file is genuine)
//
// Reading stops at limit + 1 bytes, so endless inputs (/dev/zero, a FIFO that never closes) fail fast too.
// Thread-safe: no state besides the environment, read at each call.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>

namespace lal::checks {

/// Input over a limit. what() names the input, the limit and how to raise it.
class InputLimitError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// One named limit: `value()` is the environment variable's value when set (a count, optionally with a K/M/G
/// binary suffix: "64M"), else the default. A malformed variable throws InputLimitError naming it.
struct Limit {
  const char* what;  ///< "pipeline YAML files"
  const char* env;   ///< "LAL_MAX_PIPELINE_BYTES"
  std::uint64_t fallback;
  bool bytes;  ///< shown as KiB/MiB/GiB in messages
  std::uint64_t value() const;
  /// "the 4 MiB limit for pipeline YAML files (LAL_MAX_PIPELINE_BYTES; ...)"
  std::string describe() const;
};

namespace limits {
// File sizes. The defaults are far above real files (Qwen's tokenizer.json is 7 MiB, a 32B model's config.json
// 1 KiB, its safetensors index 80 KiB) and far below what would hurt.
inline constexpr Limit pipeline_file{"pipeline YAML files", "LAL_MAX_PIPELINE_BYTES", 4ull << 20, true};
inline constexpr Limit options_file{"option files (--config of lal distill/train)", "LAL_MAX_OPTIONS_BYTES", 1ull << 20,
                                    true};
inline constexpr Limit tokenizer_file{"tokenizer.json files", "LAL_MAX_TOKENIZER_BYTES", 256ull << 20, true};
inline constexpr Limit model_config_file{"config.json / generation_config.json files", "LAL_MAX_MODEL_CONFIG_BYTES",
                                         16ull << 20, true};
inline constexpr Limit tokenizer_config_file{"tokenizer_config.json files (chat templates)",
                                             "LAL_MAX_TOKENIZER_CONFIG_BYTES", 64ull << 20, true};
inline constexpr Limit chat_template{"chat templates", "LAL_MAX_CHAT_TEMPLATE_BYTES", 1ull << 20, true};
inline constexpr Limit safetensors_index{"model.safetensors.index.json files", "LAL_MAX_SAFETENSORS_INDEX_BYTES",
                                         64ull << 20, true};
inline constexpr Limit http_body{"HTTP request bodies", "LAL_MAX_HTTP_BODY_BYTES", 8ull << 20, true};
// Structure.
inline constexpr Limit json_depth{"JSON nesting depth", "LAL_MAX_JSON_DEPTH", 128, false};
inline constexpr Limit yaml_depth{"YAML nesting depth", "LAL_MAX_YAML_DEPTH", 64, false};
inline constexpr Limit yaml_nodes{"YAML values after alias expansion", "LAL_MAX_YAML_NODES", 200000, false};
// Token ids index tables of that size: one stray id in a tokenizer.json must not make them gigabytes large. Real
// vocabularies stay below 300 000 ids.
inline constexpr Limit token_id{"token ids in tokenizer.json files", "LAL_MAX_TOKEN_ID", 1ull << 24, false};
}  // namespace limits

/// The whole of `path`, refused (InputLimitError) when it has more than `limit.value()` bytes; at most that many
/// + 1 bytes are read. Throws std::runtime_error "<path>: cannot open: <reason>" when it cannot be opened.
std::string read_file_limited(const std::filesystem::path& path, const Limit& limit);

/// `size` checked against `limit`; `name` says what it is ("request body", "configs/x.yaml").
void check_size(std::uint64_t size, const Limit& limit, std::string_view name);

/// Parse JSON, refusing nesting deeper than limits::json_depth before building anything deeper (so a 50 000-deep
/// document fails in microseconds). `name` prefixes errors. Throws InputLimitError for the depth and
/// nlohmann::json::parse_error for malformed text, numbers out of range included (callers word that one).
nlohmann::json parse_json_limited(std::string_view text, std::string_view name);

/// Human-readable byte count: "4 MiB", "1.5 GiB", "512 bytes".
std::string format_bytes(std::uint64_t bytes);

}  // namespace lal::checks
