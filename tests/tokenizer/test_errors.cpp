// Loading errors name the file and what is wrong; bad input says where.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "lal/lm/tokenizer.hpp"
#include "test_support.hpp"

namespace {

std::string write_tokenizer(const std::string& body) {
  const std::string dir = lal::test::temp_dir("bad");
  const std::string path = dir + "/tokenizer.json";
  std::ofstream(path) << body;
  return path;
}

std::string load_error(const std::string& path) {
  try {
    lal::lm::Tokenizer::from_file(path);
  } catch (const lal::lm::TokenizerError& e) {
    return e.what();
  }
  return "(no error)";
}

bool has(const std::string& s, const std::string& needle) { return s.find(needle) != std::string::npos; }

const char* const kMinimal = R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
  "pre_tokenizer": null, "normalizer": null, "decoder": null, "post_processor": null, "added_tokens": []})";

}  // namespace

TEST_CASE("malformed tokenizer.json files are refused with the file name and the problem") {
  SUBCASE("bad JSON") {
    const auto path = write_tokenizer("{\"model\": {\"type\": \"BPE\",, }");
    const auto msg = load_error(path);
    CHECK(has(msg, path));
    CHECK(has(msg, "invalid JSON"));
  }
  SUBCASE("missing model") {
    const auto path = write_tokenizer(R"({"version": "1.0", "added_tokens": []})");
    const auto msg = load_error(path);
    CHECK(has(msg, path));
    CHECK(has(msg, "missing key \"model\""));
  }
  SUBCASE("unknown model type") {
    const auto path = write_tokenizer(R"({"model": {"type": "Unigram", "vocab": []}})");
    const auto msg = load_error(path);
    CHECK(has(msg, path));
    CHECK(has(msg, "model.type"));
    CHECK(has(msg, "Unigram"));
  }
  SUBCASE("merge naming a token outside the vocabulary") {
    const auto path = write_tokenizer(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a zz"]}})");
    const auto msg = load_error(path);
    CHECK(has(msg, "model.merges[0]"));
    CHECK(has(msg, "zz"));
  }
  SUBCASE("unsupported pre-tokenizer names its key path") {
    const auto path = write_tokenizer(
        R"({"model": {"type": "BPE", "vocab": {}, "merges": []},
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "BertPreTokenizer"}]}})");
    const auto msg = load_error(path);
    CHECK(has(msg, "pre_tokenizer.pretokenizers[0].type"));
    CHECK(has(msg, "BertPreTokenizer"));
  }
  SUBCASE("regex that does not compile") {
    const auto path = write_tokenizer(
        R"({"model": {"type": "BPE", "vocab": {}, "merges": []},
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"}})");
    CHECK(has(load_error(path), "pre_tokenizer.pattern"));
  }
  SUBCASE("missing file and empty directory") {
    CHECK(has(load_error("/nonexistent/tokenizer.json"), "/nonexistent/tokenizer.json"));
    const std::string dir = lal::test::temp_dir("empty");
    CHECK(has(load_error(dir), "has no tokenizer.json"));
  }
}

TEST_CASE("a directory loads its tokenizer.json; a minimal BPE works without any other stage") {
  const auto path = write_tokenizer(kMinimal);
  const auto tok = lal::lm::Tokenizer::from_file(std::filesystem::path(path).parent_path().string());
  CHECK(tok.encode("abab") == std::vector<std::int32_t>{2, 2});
  CHECK(tok.decode({2, 0}) == "ab a");  // no decoder: tokens joined by spaces, as in the Rust library
  CHECK(tok.vocab_size() == 3);
  CHECK(tok.token_to_id("zz") == -1);
  CHECK_FALSE(tok.bos_id().has_value());
}

TEST_CASE("bad input is refused with its location") {
  const auto& tok = lal::test::npm_tokenizer("qwen3");
  try {
    tok.encode(std::string("ok \xFF bad"));
    FAIL("no error");
  } catch (const lal::lm::TokenizerError& e) {
    CHECK(has(e.what(), "byte offset 3"));
  }
  CHECK_THROWS_AS(tok.decode({static_cast<std::int32_t>(tok.vocab_size())}), lal::lm::TokenizerError);
  CHECK_THROWS_AS(tok.decode({-1}), lal::lm::TokenizerError);
}

TEST_CASE("special tokens, bos/eos/pad and vocabulary size from the real files") {
  const auto& qwen = lal::test::npm_tokenizer("qwen3");
  CHECK(qwen.vocab_size() == 151669);
  CHECK(qwen.token_to_id("<|im_end|>") == 151645);
  CHECK(qwen.id_to_token(151645) == "<|im_end|>");
  CHECK(qwen.is_special(151645));
  CHECK_FALSE(qwen.is_special(151667));    // <think> is an added token but not special
  CHECK_FALSE(qwen.bos_id().has_value());  // tokenizer_config.json: bos_token null
  CHECK(qwen.eos_id() == 151645);
  CHECK(qwen.pad_id() == 151643);
  CHECK(qwen.decode(qwen.encode("<|im_start|>user\nhi<|im_end|>"), true) == "user\nhi");

  const auto& llama3 = lal::test::npm_tokenizer("llama3");
  CHECK(llama3.vocab_size() == 128256);
  CHECK(llama3.bos_id() == 128000);
  CHECK(llama3.eos_id() == 128001);

  const auto& mistral = lal::test::npm_tokenizer("llama2");
  CHECK(mistral.vocab_size() == 32000);
  CHECK(mistral.bos_id() == 1);
  CHECK(mistral.eos_id() == 2);
  CHECK_FALSE(mistral.pad_id().has_value());
  // add_special_tokens adds BOS through TemplateProcessing, but never a second one.
  CHECK(mistral.encode("Hello", true) == std::vector<std::int32_t>{1, 22557});
  CHECK(mistral.encode("<s>Hello", true) == mistral.encode("<s>Hello", false));
  CHECK(mistral.encode("<s>Hello", false).front() == 1);
  // Copies share the tables.
  const lal::lm::Tokenizer copy = mistral;
  CHECK(copy.encode("Hello world") == mistral.encode("Hello world"));
}

TEST_CASE("added-token flags lstrip, rstrip, single_word and normalized behave as in the Rust library") {
  // Byte-level-free toy vocabulary: every character is a token, no merges.
  const std::string model = R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, " ": 2, "x": 3, "A": 4},
                                  "merges": []})";
  const auto load = [&](const std::string& added, const std::string& normalizer = "null") {
    return lal::lm::Tokenizer::from_file(
        write_tokenizer("{" + model + R"(, "normalizer": )" + normalizer + R"(, "added_tokens": [)" + added + "]}"));
  };
  const auto token = [](const std::string& content, bool lstrip, bool rstrip, bool single_word, bool normalized) {
    return R"({"id": 10, "content": ")" + content + R"(", "lstrip": )" + (lstrip ? "true" : "false") +
           R"(, "rstrip": )" + (rstrip ? "true" : "false") + R"(, "single_word": )" + (single_word ? "true" : "false") +
           R"(, "normalized": )" + (normalized ? "true" : "false") + R"(, "special": true})";
  };
  using ids = std::vector<std::int32_t>;
  CHECK(load(token("<m>", false, false, false, false)).encode("a <m> b") == ids{0, 2, 10, 2, 1});
  CHECK(load(token("<m>", true, false, false, false)).encode("a  <m> b") == ids{0, 10, 2, 1});
  CHECK(load(token("<m>", false, true, false, false)).encode("a <m>  b") == ids{0, 2, 10, 1});
  CHECK(load(token("<m>", true, true, false, false)).encode("a <m> b") == ids{0, 10, 1});
  // single_word: only between non-word characters.
  const auto single = load(token("ab", false, false, true, false));
  CHECK(single.encode("ab") == ids{10});
  CHECK(single.encode("x ab x") == ids{3, 2, 10, 2, 3});
  CHECK(single.encode("xab") == ids{3, 0, 1});
  // normalized: matched against the normalized text (here lowercased), so "AB" in the input finds "ab".
  const auto lowered = load(token("ab", false, false, false, true), R"({"type": "Lowercase"})");
  CHECK(lowered.encode("xAB") == ids{3, 10});
  const auto raw = load(token("ab", false, false, false, false), R"({"type": "Lowercase"})");
  CHECK(raw.encode("xAB") == ids{3, 0, 1});
  // Leftmost-longest between overlapping added tokens.
  const auto two = lal::lm::Tokenizer::from_file(write_tokenizer(
      "{" + model + R"(, "added_tokens": [{"id": 10, "content": "ab", "normalized": false, "special": true},
                                           {"id": 11, "content": "abx", "normalized": false, "special": false}]})"));
  CHECK(two.encode("aabxab") == ids{0, 11, 10});
  CHECK(two.decode({0, 11, 10}, true) == "a abx");  // no decoder: tokens joined by spaces; special 10 skipped
}

TEST_CASE("Metaspace pre-tokenizer and decoder (Llama-2 legacy=false layout)") {
  const auto load = [](const std::string& scheme) {
    return lal::lm::Tokenizer::from_file(write_tokenizer(
        R"({"model": {"type": "BPE", "vocab": {"▁": 0, "a": 1, "b": 2, "▁a": 3}, "merges": ["▁ a"]},
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": ")" +
        scheme + R"(", "split": true},
            "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": ")" +
        scheme + R"(", "split": true},
            "added_tokens": [{"id": 4, "content": "<s>", "normalized": false, "special": true}]})"));
  };
  using ids = std::vector<std::int32_t>;
  const auto first = load("first");
  CHECK(first.encode("a b") == ids{3, 0, 2});
  CHECK(first.encode("<s>a") == ids{4, 1});  // "first": only the split at offset 0 gets the prefix
  CHECK(load("always").encode("<s>a") == ids{4, 3});
  CHECK(load("never").encode("a b") == ids{1, 0, 2});
  CHECK(first.decode({3, 0, 2}) == "a b");
  CHECK(first.decode({0, 3}) == " a");  // as in Rust: every ▁ of the first token is dropped
  CHECK(load("never").decode({0, 3}) == "  a");
}
