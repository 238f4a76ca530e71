// safetensors reader/writer and config.json parsing: round trips and every malformed case, each refused with a
// message naming the file, the tensor and the byte offset.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lal/lm/model_config.hpp"
#include "lal/lm/safetensors.hpp"

namespace fs = std::filesystem;
using namespace lal::lm;

namespace {

fs::path scratch() {
  static fs::path dir = [] {
    auto d = fs::temp_directory_path() / ("lal_lm_format_" + std::to_string(::getpid()));
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

std::string raw_file(const std::string& name, const std::string& header, std::size_t data_bytes,
                     std::uint64_t declared_len = UINT64_MAX) {
  const auto path = (scratch() / name).string();
  std::ofstream out(path, std::ios::binary);
  std::uint64_t n = declared_len == UINT64_MAX ? header.size() : declared_len;
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((n >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
  return path;
}

std::string refusal(const std::string& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const SafetensorsError& e) {
    return e.what();
  }
  FAIL("not refused: " << path);
  return {};
}

}  // namespace

TEST_CASE("write then read round-trips every dtype, shape and metadata") {
  std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
  std::vector<std::uint16_t> h = {0x3c00, 0xc000};
  std::vector<std::int64_t> i = {42};
  const auto path = (scratch() / "roundtrip.safetensors").string();
  write_safetensors(path,
                    {{"a.weight", DType::F32, {2, 3}, f.data(), f.size() * 4},
                     {"b", DType::BF16, {2}, h.data(), 4},
                     {"scalar", DType::I64, {}, i.data(), 8},
                     {"empty", DType::F16, {0, 4}, nullptr, 0}},
                    {{"format", "pt"}});
  auto file = SafetensorsFile::open(path);
  REQUIRE(file.tensors().size() == 4);
  CHECK(file.metadata().at("format") == "pt");
  const auto* a = file.find("a.weight");
  REQUIRE(a);
  CHECK(a->shape == std::vector<std::int64_t>{2, 3});
  CHECK(a->dtype == DType::F32);
  CHECK(std::memcmp(a->data, f.data(), 24) == 0);
  CHECK(a->file_offset % 8 == 0);
  CHECK(file.find("b")->dtype == DType::BF16);
  CHECK(file.find("scalar")->numel() == 1);
  CHECK(file.find("empty")->nbytes == 0);
  CHECK_FALSE(fs::exists(path + ".tmp-" + std::to_string(::getpid())));
}

TEST_CASE("writer refuses inconsistent input and leaves the old file intact") {
  std::vector<float> f = {1, 2};
  const auto path = (scratch() / "keep.safetensors").string();
  write_safetensors(path, {{"x", DType::F32, {2}, f.data(), 8}});
  CHECK_THROWS_AS(write_safetensors(path, {{"x", DType::F32, {3}, f.data(), 8}}), SafetensorsError);
  CHECK_THROWS_AS(write_safetensors(path, {{"x", DType::F32, {2}, f.data(), 8}, {"x", DType::F32, {2}, f.data(), 8}}),
                  SafetensorsError);
  CHECK(SafetensorsFile::open(path).find("x")->shape == std::vector<std::int64_t>{2});
}

TEST_CASE("malformed files are refused with file, tensor and byte offset") {
  SUBCASE("shorter than the length prefix") {
    const auto p = (scratch() / "tiny.safetensors").string();
    std::ofstream(p) << "abc";
    const auto m = refusal(p);
    CHECK(m.find("tiny.safetensors") != std::string::npos);
    CHECK(m.find("truncated") != std::string::npos);
    CHECK(m.find("byte 0") != std::string::npos);
  }
  SUBCASE("absurd header length") {
    const auto m = refusal(raw_file("absurd.safetensors", "{}", 0, 1ull << 40));
    CHECK(m.find("absurd header length") != std::string::npos);
  }
  SUBCASE("header runs past the end") {
    const auto m = refusal(raw_file("pastend.safetensors", "{}", 0, 4096));
    CHECK(m.find("truncated") != std::string::npos);
  }
  SUBCASE("bad JSON") {
    const auto m = refusal(raw_file("badjson.safetensors", "{\"a\": {\"dtype\": ", 0));
    CHECK(m.find("not valid JSON") != std::string::npos);
    CHECK(m.find("at byte") != std::string::npos);
  }
  SUBCASE("not an object") { CHECK(refusal(raw_file("array.safetensors", "[1,2]", 0)).find("not a JSON object") != std::string::npos); }
  SUBCASE("unknown dtype") {
    const auto m = refusal(raw_file("dtype.safetensors", R"({"w":{"dtype":"F8_E9","shape":[1],"data_offsets":[0,1]}})", 1));
    CHECK(m.find("tensor 'w'") != std::string::npos);
    CHECK(m.find("unknown dtype \"F8_E9\"") != std::string::npos);
  }
  SUBCASE("offsets past end of file") {
    const auto m = refusal(raw_file("past.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8));
    CHECK(m.find("past.safetensors") != std::string::npos);
    CHECK(m.find("tensor 'w'") != std::string::npos);
    CHECK(m.find("past the end") != std::string::npos);
    CHECK(m.find("byte") != std::string::npos);
  }
  SUBCASE("reversed offsets") {
    const auto m = refusal(raw_file("rev.safetensors", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 8));
    CHECK(m.find("reversed") != std::string::npos);
  }
  SUBCASE("overlapping tensors") {
    const auto m = refusal(raw_file(
        "overlap.safetensors",
        R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
        16));
    CHECK(m.find("overlaps") != std::string::npos);
    CHECK(m.find("'a'") != std::string::npos);
    CHECK(m.find("'b'") != std::string::npos);
  }
  SUBCASE("size != dtype x shape") {
    const auto m = refusal(raw_file("size.safetensors", R"({"w":{"dtype":"BF16","shape":[3,2],"data_offsets":[0,8]}})", 8));
    CHECK(m.find("tensor 'w' at byte") != std::string::npos);
    CHECK(m.find("needs 12") != std::string::npos);
  }
  SUBCASE("negative dimension") {
    const auto m = refusal(raw_file("neg.safetensors", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4));
    CHECK(m.find("negative") != std::string::npos);
  }
  SUBCASE("missing data_offsets") {
    const auto m = refusal(raw_file("nooff.safetensors", R"({"w":{"dtype":"F32","shape":[1]}})", 4));
    CHECK(m.find("data_offsets") != std::string::npos);
  }
  SUBCASE("overflowing shape") {
    const auto m = refusal(raw_file(
        "overflow.safetensors",
        R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 4));
    CHECK(m.find("overflows") != std::string::npos);
  }
}

TEST_CASE("sharded checkpoints: index must agree with the shards") {
  const auto dir = scratch() / "sharded";
  fs::create_directories(dir);
  std::vector<float> f = {1, 2};
  write_safetensors((dir / "model-00001-of-00002.safetensors").string(), {{"a", DType::F32, {2}, f.data(), 8}});
  write_safetensors((dir / "model-00002-of-00002.safetensors").string(), {{"b", DType::F32, {1}, f.data(), 4}});
  nlohmann::json index = {{"weight_map", {{"a", "model-00001-of-00002.safetensors"},
                                          {"b", "model-00002-of-00002.safetensors"}}}};
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  auto ck = Checkpoint::open_dir(dir.string());
  CHECK(ck.at("a").shape == std::vector<std::int64_t>{2});
  CHECK(ck.at("b").file.find("00002") != std::string::npos);
  CHECK_THROWS_WITH_AS(ck.at("c"), doctest::Contains("no tensor named 'c'"), SafetensorsError);

  index["weight_map"]["c"] = "model-00001-of-00002.safetensors";
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  CHECK_THROWS_WITH_AS(Checkpoint::open_dir(dir.string()), doctest::Contains("tensor 'c' is mapped to"),
                       SafetensorsError);
  CHECK_THROWS_WITH_AS(Checkpoint::open_dir((scratch() / "nothing").string()),
                       doctest::Contains("no model.safetensors"), SafetensorsError);
}

TEST_CASE("config.json: families, defaults and refusals name the key") {
  const std::string base =
      R"("vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2)";
  auto parse = [&](const std::string& extra) {
    return ModelConfig::from_json_text("{" + base + extra + "}", "/m/config.json");
  };
  auto q = parse(R"(, "model_type": "qwen2", "num_key_value_heads": 1, "eos_token_id": [5, 6])");
  CHECK(q.family == Family::Qwen2);
  CHECK(q.qkv_bias);
  CHECK_FALSE(q.o_bias);
  CHECK(q.head_dim == 4);
  CHECK(q.eos_token_ids == std::vector<std::int64_t>{5, 6});
  auto n = parse(R"(, "model_type": "gpt_neox", "rotary_pct": 0.5)");
  CHECK(n.parallel_residual);
  CHECK(n.qkv_bias);
  CHECK(n.rotary_dim == 2);
  CHECK_THROWS_WITH_AS(parse(R"(, "model_type": "gpt_neox")"),  // 4 x 0.25 = 1: odd
                       doctest::Contains("key \"rotary_pct\""), ConfigError);
  auto p = parse(R"(, "model_type": "phi3", "partial_rotary_factor": 0.5)");
  CHECK(p.rotary_dim == 2);
  CHECK_THROWS_WITH_AS(parse(R"(, "model_type": "mamba")"),
                       doctest::Contains("/m/config.json: key \"model_type\": unsupported architecture \"mamba\""),
                       ConfigError);
  CHECK_THROWS_WITH_AS(parse(R"(, "model_type": "llama", "rope_scaling": {"type": "ntk", "factor": 4})"),
                       doctest::Contains("key \"rope_scaling.rope_type\""), ConfigError);
  CHECK_THROWS_WITH_AS(parse(R"(, "model_type": "llama", "num_key_value_heads": 3)"),
                       doctest::Contains("key \"num_key_value_heads\""), ConfigError);
  CHECK_THROWS_WITH_AS(parse(R"(, "model_type": "llama", "hidden_act": "swiglu9")"),
                       doctest::Contains("key \"hidden_act\""), ConfigError);
  CHECK_THROWS_WITH_AS(ModelConfig::from_json_text("{\"model_type\": \"llama\"}", "/m/config.json"),
                       doctest::Contains("key \"vocab_size\": missing"), ConfigError);
  CHECK_THROWS_WITH_AS(ModelConfig::from_json_text("{oops", "/m/config.json"), doctest::Contains("not valid JSON"),
                       ConfigError);
}
