// Reads the SentencePiece vocabulary of a llama.cpp GGUF file (tokenizer.ggml.model == "llama") and writes the
// tokenizer.json that Hugging Face's LlamaConverter would produce for it (legacy Llama-2 layout): BPE with byte
// fallback, merges derived from the piece scores, Prepend("▁") + Replace(" ", "▁") normalizer, and the
// Replace/ByteFallback/Fuse/Strip decoder. Test-only.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace lal::test {

/// Throws std::runtime_error naming the file and byte offset on anything unexpected.
nlohmann::json gguf_spm_to_tokenizer_json(const std::string& gguf_path);

}  // namespace lal::test
