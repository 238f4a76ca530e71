// StreamDecoder: the concatenation of pieces equals the whole decode, and no piece is ever broken UTF-8.
#include <doctest/doctest.h>

#include <thread>

#include "test_support.hpp"

namespace {

bool valid_utf8(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

void check_stream(const lal::lm::Tokenizer& tok, const std::vector<std::int32_t>& ids, bool skip) {
  auto stream = tok.stream_decoder(skip);
  std::string joined;
  for (const auto id : ids) {
    const std::string piece = stream.push(id);
    CHECK_MESSAGE(valid_utf8(piece), "broken UTF-8 piece after id " << id);
    joined += piece;
  }
  const std::string rest = stream.flush();
  CHECK(valid_utf8(rest));
  joined += rest;
  CHECK(joined == tok.decode(ids, skip));
}

const char* const kTexts[] = {
    "こんにちは、世界！今日は🍣を食べました😀👨‍👩‍👧‍👦",
    "吾輩は猫である。名前はまだ無い。𠮷野家で🇯🇵の旗を見た。",
    "  leading spaces and trailing  ",
    "<|im_start|>user\n日本語で答えて<|im_end|>\n<|im_start|>assistant\n<think>\n考え中…\n</think>\n\n答え",
    "<s>[INST] こんにちは [/INST] はい、こんにちは！ </s>",
    "Mixed ｶﾀｶﾅ and ＡＢＣ and 한국어 and e\u0301 and 1️⃣ keycap",
};

}  // namespace

TEST_CASE("stream decoding equals whole decoding for all three tokenizers") {
  for (const char* name : {"qwen3", "llama3", "llama2"}) {
    const auto& tok = lal::test::npm_tokenizer(name);
    for (const char* text : kTexts) {
      CAPTURE(name);
      CAPTURE(text);
      const auto ids = tok.encode(text, true);
      check_stream(tok, ids, true);
      check_stream(tok, ids, false);
    }
  }
}

TEST_CASE("stream decoding holds back bytes of a character split across tokens") {
  // With the Mistral vocabulary, rare kanji fall back to <0xNN> byte tokens: three tokens for one character.
  const auto& tok = lal::test::npm_tokenizer("llama2");
  const auto ids = tok.encode("𩸽");
  REQUIRE(ids.size() >= 4);  // "▁" + four byte tokens
  auto stream = tok.stream_decoder();
  std::string joined;
  for (std::size_t i = 0; i + 1 < ids.size(); ++i) joined += stream.push(ids[i]);
  CHECK(joined.find("\xEF\xBF\xBD") == std::string::npos);  // nothing half-decoded was emitted
  joined += stream.push(ids.back());
  joined += stream.flush();
  CHECK(joined == "𩸽");

  // Byte-level: one emoji spans several byte-level tokens.
  const auto& qwen = lal::test::npm_tokenizer("qwen3");
  const auto emoji = qwen.encode("🫠🫠🫠");
  auto s2 = qwen.stream_decoder();
  std::string out;
  for (const auto id : emoji) {
    const std::string piece = s2.push(id);
    CHECK(valid_utf8(piece));
    out += piece;
  }
  out += s2.flush();
  CHECK(out == "🫠🫠🫠");
}

TEST_CASE("an invalid byte sequence is flushed as U+FFFD exactly as decode() does") {
  const auto& tok = lal::test::npm_tokenizer("qwen3");
  // "ã" + "ģ" in byte-level spelling are the bytes E3 81 ... take the first byte of "あ" only, then ASCII.
  const auto a = tok.encode("あ");
  REQUIRE(a.size() == 1);
  const std::int32_t lone_lead = tok.token_to_id("\xC3\xA3");  // byte 0xE3 in the GPT-2 alphabet ("ã")
  REQUIRE(lone_lead >= 0);
  const std::vector<std::int32_t> ids = {lone_lead, tok.encode("x")[0]};
  check_stream(tok, ids, true);
  CHECK(tok.decode(ids) == "\xEF\xBF\xBDx");
  check_stream(tok, {lone_lead}, true);
}

TEST_CASE("concurrent const use from several threads gives identical results") {
  const auto& tok = lal::test::npm_tokenizer("qwen3");
  const std::string text = "並行して同じトークナイザーを使います。Thread safety check 🧵";
  const auto expected = tok.encode(text);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      bool all = true;
      for (int i = 0; i < 200; ++i) all = all && tok.encode(text) == expected && tok.decode(expected) == text;
      ok[static_cast<std::size_t>(t)] = all;
    });
  for (auto& th : threads) th.join();
  for (int v : ok) CHECK(v == 1);
}
