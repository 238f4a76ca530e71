// libFuzzer target: tokenizer.json loading, then encoding, decoding and streaming decoding. The input is the
// tokenizer.json text, a NUL byte, then the text to encode (no NUL: the whole input is the JSON and the text is
// fixed). Contract: loading and encoding either work or throw TokenizerError; decode(encode(x)) never throws for
// ids the tokenizer produced; a crash, a leak, undefined behaviour, a hang or another exception type is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "lal/lm/tokenizer.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto nul = input.find('\0');
  const std::string_view json = input.substr(0, nul);
  const std::string_view text =
      nul == std::string_view::npos ? std::string_view("Hello, 世界! 123") : input.substr(nul + 1);
  try {
    const auto tok = lal::lm::Tokenizer::from_json(json, "fuzz/tokenizer.json");
    std::vector<std::int32_t> ids;
    try {
      ids = tok.encode(text, /*add_special_tokens=*/true);
    } catch (const lal::lm::TokenizerError&) {
      return 0;  // e.g. invalid UTF-8, refused with its byte offset
    }
    (void)tok.decode(ids, false);
    (void)tok.decode(ids, true);
    auto stream = tok.stream_decoder(false);
    for (auto id : ids) (void)stream.push(id);
    (void)stream.flush();
    for (auto id : ids) (void)tok.id_to_token(id);
  } catch (const lal::lm::TokenizerError&) {
  }
  return 0;
}
