// Issue 14's findings as regression tests: bounded inputs (file size, JSON/YAML nesting, alias expansion), exact
// safetensors coverage, duplicate keys and empty plugin names refused by validation, and the shared option checks.
// Each case must end with a clear error in bounded time and memory.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#include "lal/checks/input_limits.hpp"
#include "lal/checks/option_checks.hpp"
#include "lal/lm/jinja.hpp"
#include "lal/lm/safetensors.hpp"
#include "lal/lm/tokenizer.hpp"
#include "lal/runtime/pipeline.hpp"

namespace fs = std::filesystem;
using namespace lal;

namespace {

const std::vector<fs::path> kDirs = {LAL_BUILD_PLUGIN_DIR};

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string errors_of(const runtime::PipelineLoad& l) {
  std::string s;
  for (const auto& e : l.errors) s += e.str() + "\n";
  return s;
}

/// Peak resident set of this process so far, in MiB.
long peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024;
}

fs::path scratch() {
  static const fs::path d = [] {
    auto p = fs::temp_directory_path() / ("lal_hardening_" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p;
  }();
  return d;
}

struct EnvVar {
  std::string name;
  EnvVar(const char* n, const char* v) : name(n) { ::setenv(n, v, 1); }
  ~EnvVar() { ::unsetenv(name.c_str()); }
};

template <class F>
double seconds(F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("endless and oversized files are refused after reading at most the limit") {
  const double t = seconds([] {
    CHECK_THROWS_WITH_AS(checks::read_file_limited("/dev/zero", checks::limits::pipeline_file),
                         doctest::Contains("/dev/zero: the input goes on past the 4 MiB limit for pipeline YAML "
                                           "files (LAL_MAX_PIPELINE_BYTES"),
                         checks::InputLimitError);
  });
  CHECK(t < 2.0);
  const auto big = scratch() / "big.yaml";
  std::ofstream(big) << std::string(5u << 20, '#');
  CHECK_THROWS_WITH_AS(checks::read_file_limited(big, checks::limits::pipeline_file),
                       doctest::Contains("the file (5 MiB) is larger than the 4 MiB limit"), checks::InputLimitError);
  {
    EnvVar raise("LAL_MAX_PIPELINE_BYTES", "8M");  // the limit is raisable
    CHECK(checks::read_file_limited(big, checks::limits::pipeline_file).size() == 5u << 20);
  }
  {
    EnvVar bad("LAL_MAX_PIPELINE_BYTES", "lots");
    CHECK_THROWS_WITH_AS(checks::read_file_limited(big, checks::limits::pipeline_file),
                         doctest::Contains("LAL_MAX_PIPELINE_BYTES='lots' is not a positive count"),
                         checks::InputLimitError);
  }
  CHECK_THROWS_WITH(checks::read_file_limited(scratch() / "missing", checks::limits::pipeline_file),
                    doctest::Contains("cannot open"));
}

TEST_CASE("pipeline: /dev/zero as the file is one clear error, quickly") {
  const auto l = runtime::load_pipeline("/dev/zero", kDirs);
  REQUIRE(l.errors.size() == 1);
  CHECK(l.errors[0].message.find("limit for pipeline YAML files") != std::string::npos);
}

TEST_CASE("pipeline: the billion-laughs alias bomb stops at the expansion limit") {
  const long before = peak_rss_mib();
  runtime::PipelineLoad l;
  const double t = seconds([&] {
    l = runtime::load_pipeline(fs::path(LAL_FUZZ_CORPUS) / "pipeline" / "repro-yaml-alias-bomb.yaml", kDirs);
  });
  CHECK(t < 5.0);
  CHECK(peak_rss_mib() - before < 300);
  int limit_errors = 0;
  for (const auto& e : l.errors)
    if (e.message.find("more than 200000 values once aliases are expanded: over the 200000 limit for YAML values "
                       "after alias expansion (LAL_MAX_YAML_NODES") != std::string::npos) {
      ++limit_errors;
      CHECK(e.where.file.find("repro-yaml-alias-bomb.yaml") != std::string::npos);
      CHECK(e.where.line > 0);
    }
  CHECK_MESSAGE(limit_errors == 1, errors_of(l));
}

TEST_CASE("pipeline: the alias bomb is refused before any of it is expanded") {
  // Counted from the parser's events: the refusal costs parsing 1 KB, not building 200 000 values.
  const auto text = read(fs::path(LAL_FUZZ_CORPUS) / "pipeline" / "repro-yaml-alias-bomb.yaml");
  runtime::PipelineLoad l;
  const double t = seconds([&] {
    for (int i = 0; i < 20; ++i) l = runtime::load_pipeline_text(text, "bomb.yaml", kDirs);
  });
  CHECK_MESSAGE(t < 2.0, t);  // ~100 ms each when expanded up to the limit under ASan; ~1 ms counted
  REQUIRE(l.errors.size() == 1);
  CHECK(l.errors[0].message.find("values once aliases are expanded") != std::string::npos);
  // Where the count passed the limit: x5's second alias of x4 (111 111 values each), line 13.
  CHECK_MESSAGE(l.errors[0].where.line == 13, l.errors[0].str());
}

TEST_CASE("pipeline: an alias inside the node it names expands without end and is refused") {
  for (const char* cycle : {"&a [*a]", "&a {k: *a}", "&a [1, [2, *a]]"}) {
    const auto l = runtime::load_pipeline_text(
        std::string("modules:\n  m:\n    plugin: working_memory\n    config:\n      x: ") + cycle + "\n", "cycle.yaml",
        kDirs);
    CHECK_MESSAGE(errors_of(l).find("values once aliases are expanded: over the 200000 limit") != std::string::npos,
                  cycle, "\n", errors_of(l));
  }
}

TEST_CASE("pipeline: values after alias expansion are counted exactly, map keys not included") {
  // root, modules, m, plugin, config (5), x = [1, 2, 3] (4 values), y = *x (4), z = {k: *x} (5): 18 values.
  const std::string text =
      "modules:\n  m:\n    plugin: working_memory\n    config:\n"
      "      x: &x [1, 2, 3]\n      y: *x\n      z: {k: *x}\n";
  {
    EnvVar exact("LAL_MAX_YAML_NODES", "18");
    const auto l = runtime::load_pipeline_text(text, "count.yaml", kDirs);
    CHECK_MESSAGE(errors_of(l).find("aliases are expanded") == std::string::npos, errors_of(l));
    CHECK(errors_of(l).find("unknown config key 'y'") != std::string::npos);  // validated on, expanded
  }
  {
    EnvVar one_less("LAL_MAX_YAML_NODES", "17");
    const auto l = runtime::load_pipeline_text(text, "count.yaml", kDirs);
    REQUIRE(l.errors.size() == 1);
    CHECK_MESSAGE(l.errors[0].str().find("count.yaml:7:") != std::string::npos, l.errors[0].str());
    CHECK(l.errors[0].message.find("more than 17 values once aliases are expanded: over the 17 limit") !=
          std::string::npos);
  }
}

TEST_CASE("pipeline: nesting deeper than the limit is one error") {
  std::string deep = "modules:\n  m:\n    plugin: working_memory\n    config:\n      x: ";
  for (int i = 0; i < 100; ++i) deep += "[";
  for (int i = 0; i < 100; ++i) deep += "]";
  const auto l = runtime::load_pipeline_text(deep + "\n", "deep.yaml", kDirs);
  CHECK_MESSAGE(errors_of(l).find("nested more than 64 levels deep: over the 64 limit for YAML nesting depth "
                                  "(LAL_MAX_YAML_DEPTH") != std::string::npos,
                errors_of(l));
}

TEST_CASE("pipeline: a key written twice is an error naming both positions") {
  const auto l =
      runtime::load_pipeline(fs::path(LAL_FUZZ_CORPUS) / "pipeline" / "repro-yaml-duplicate-key.yaml", kDirs);
  CHECK_MESSAGE(errors_of(l).find("repro-yaml-duplicate-key.yaml:6:5: key 'plugin' is written twice in one map; the "
                                  "first is at ") != std::string::npos,
                errors_of(l));
  CHECK(errors_of(l).find("repro-yaml-duplicate-key.yaml:5:5 (YAML keys must be unique") != std::string::npos);
  // Inside a module's config, in wiring, among module ids and at the top level too.
  const auto nested = runtime::load_pipeline_text(R"(modules:
  memory:
    plugin: working_memory
    config: {capacity: 7, capacity: 8}
    inputs: {percept: turn.input, percept: turn.input, recall: memory.recall}
  memory:
    plugin: transcript
modules: {}
)",
                                                  "dup.yaml", kDirs);
  const std::string e = errors_of(nested);
  CHECK_MESSAGE(e.find("dup.yaml:4:27: key 'capacity' is written twice in one map; the first is at dup.yaml:4:14") !=
                    std::string::npos,
                e);
  CHECK_MESSAGE(e.find("dup.yaml:5:35: key 'percept' is written twice") != std::string::npos, e);
  CHECK_MESSAGE(e.find("dup.yaml:6:3: key 'memory' is written twice in one map; the first is at dup.yaml:2:3") !=
                    std::string::npos,
                e);
  CHECK_MESSAGE(e.find("dup.yaml:8:1: key 'modules' is written twice") != std::string::npos, e);
}

TEST_CASE("pipeline: an empty plugin name is refused by validation, not first by the run") {
  const auto l = runtime::load_pipeline(fs::path(LAL_FUZZ_CORPUS) / "pipeline" / "repro-yaml-empty-plugin.yaml", kDirs);
  CHECK_MESSAGE(errors_of(l).find("repro-yaml-empty-plugin.yaml:27:13: module 'speaker': `plugin:` is empty") !=
                    std::string::npos,
                errors_of(l));
}

TEST_CASE("tokenizer.json: a normalizer Sequence nested 50 000 deep fails fast in little memory") {
  std::string deep;
  for (int i = 0; i < 50000; ++i) deep += R"({"type":"Sequence","normalizers":[)";
  deep += R"({"type":"Lowercase"})";
  for (int i = 0; i < 50000; ++i) deep += "]}";
  const std::string doc = R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"normalizer":)" + deep + "}";
  const auto path = scratch() / "tokenizer.json";
  std::ofstream(path) << doc;
  const long before = peak_rss_mib();
  const double t = seconds([&] {
    CHECK_THROWS_WITH_AS(lm::Tokenizer::from_file(path.string()),
                         doctest::Contains("tokenizer.json: JSON nested more than 128 levels deep is over the 128 "
                                           "limit for JSON nesting depth (LAL_MAX_JSON_DEPTH"),
                         lm::TokenizerError);
  });
  CHECK(t < 2.0);
  CHECK(peak_rss_mib() - before < 200);
  // Real nesting (a few levels) loads as before.
  const auto ok = lm::Tokenizer::from_json(
      R"({"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":[]},"normalizer":{"type":"Sequence","normalizers":[
        {"type":"Sequence","normalizers":[{"type":"Lowercase"}]}]}})",
      "nested.json");
  CHECK(ok.encode("AB") == std::vector<std::int32_t>{0, 1});
}

TEST_CASE("tokenizer.json over the size limit names the limit") {
  EnvVar small("LAL_MAX_TOKENIZER_BYTES", "1K");
  const auto path = scratch() / "large" / "tokenizer.json";
  fs::create_directories(path.parent_path());
  std::ofstream(path) << R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pad":")" << std::string(2000, 'x')
                      << "\"}";
  CHECK_THROWS_WITH_AS(lm::Tokenizer::from_file(path.string()),
                       doctest::Contains("is larger than the 1 KiB limit for tokenizer.json files "
                                         "(LAL_MAX_TOKENIZER_BYTES"),
                       lm::TokenizerError);
}

TEST_CASE("safetensors: a header length one byte short is refused (exact coverage)") {
  const std::string bytes = read(fs::path(LAL_FUZZ_CORPUS) / "safetensors" / "repro-header-one-byte-short");
  REQUIRE(bytes.size() > 1);
  CHECK_THROWS_WITH_AS(lm::SafetensorsFile::from_bytes(bytes.substr(1), "short.safetensors"),
                       doctest::Contains("the tensors cover 16 bytes but the data section"), lm::SafetensorsError);
  // The same file with the right length is accepted.
  std::string good = bytes.substr(1);
  good[0] = static_cast<char>(good[0] + 1);
  const auto f = lm::SafetensorsFile::from_bytes(good, "good.safetensors");
  CHECK(f.find("w")->nbytes == 16);
  // A gap between tensors and an unowned prefix are refused too.
  auto file = [](const std::string& header, std::size_t data) {
    std::string s(8, '\0');
    for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    return s + header + std::string(data, '\0');
  };
  CHECK_THROWS_WITH(
      lm::SafetensorsFile::from_bytes(
          file(
              R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}})",
              5),
          "gap"),
      doctest::Contains("leaves bytes"));
  CHECK_THROWS_WITH(
      lm::SafetensorsFile::from_bytes(file(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})", 3), "prefix"),
      doctest::Contains("leaves the first 1 bytes"));
}

TEST_CASE("option checks name the flag and the value") {
  using checks::OptionRangeError;
  CHECK_THROWS_WITH_AS(checks::require_non_negative("--temperature", std::nan("")),
                       "--temperature must be a finite number ≥ 0, got nan", OptionRangeError);
  CHECK_THROWS_WITH_AS(checks::require_positive("--repetition_penalty", std::nan("")),
                       "--repetition_penalty must be a finite number > 0, got nan", OptionRangeError);
  CHECK_THROWS_WITH_AS(checks::require_in_half_open_range("--top_p", std::nan(""), 0, 1),
                       "--top_p must be in (0, 1], got nan", OptionRangeError);
  CHECK_THROWS_WITH_AS(checks::require_at_least("--top_k", std::int64_t{-5}, 0),
                       "--top_k must be an integer ≥ 0, got -5", OptionRangeError);
  CHECK_THROWS_WITH_AS(checks::require_in_half_open_range("--learning_rate", 1e30, 0, 1),
                       "--learning_rate must be in (0, 1], got 1e+30", OptionRangeError);
  CHECK_THROWS_WITH_AS(checks::require_probability("--warmup_ratio", -0.1),
                       "--warmup_ratio must be in [0, 1], got -0.1", OptionRangeError);
  CHECK_THROWS_AS(checks::require_finite("x", INFINITY), OptionRangeError);
  CHECK_NOTHROW(checks::check_sampling({0.7, 0.95, 40, 0.05, 1.1, 128, 0}, "--"));
  CHECK_NOTHROW(checks::check_sampling({0.0, 1.0, 0, 0.0, 1.0, 1, 1}, "--"));  // greedy, everything off
  CHECK_THROWS_WITH(checks::check_sampling({0.7, 1.0, 0, 0.0, 1.0, 16, 17}, "--"),
                    "--min_new_tokens must be an integer in [0, 16], got 17");
  CHECK_THROWS_WITH(checks::check_sampling({0.7, 0.0, 0, 0.0, 1.0, 16, 0}, ""), "top_p must be in (0, 1], got 0");
}

// Found by fuzz_jinja (tests/fuzz/corpus/jinja/repro-int-power-overflow): integer arithmetic wrapped (undefined
// behaviour) and `**` stopped after 64 multiplications. Results are exact, or an error naming the operator.
TEST_CASE("jinja: integer arithmetic is exact or refused, never wrapped") {
  const auto render = [](const char* source) {
    return lal::lm::JinjaTemplate(source, "t.jinja").render(nlohmann::ordered_json::object());
  };
  CHECK(render("{{ 2 ** 62 }} {{ 3 ** 39 }} {{ (-2) ** 63 }} {{ 7 // -2 }} {{ -7 % 3 }}") ==
        "4611686018427387904 4052555153018976267 -9223372036854775808 -4 2");
  for (const char* overflow : {"{{ 'x' * 10001000000 ** 1000000 }}", "{{ 2 ** 64 }}", "{{ 9223372036854775807 + 1 }}",
                               "{{ -9223372036854775807 - 2 }}", "{{ 4294967296 * 4294967296 }}"}) {
    CAPTURE(overflow);
    CHECK_THROWS_WITH_AS(render(overflow), doctest::Contains("integer overflow in '"), lal::lm::JinjaError);
  }
  CHECK_THROWS_WITH_AS(render("{{ 'xx' * 9223372036854775807 }}"), doctest::Contains("repetition result is too large"),
                       lal::lm::JinjaError);
}

// Found by fuzz_jinja in CI's 60 s run (tests/fuzz/corpus/jinja/repro-empty-repetition-hang): an empty string or
// list repeated 10^17 times looped 10^17 times appending nothing (the output limit never tripped). Now at once.
TEST_CASE("jinja: repeating an empty string or list any number of times is empty, at once") {
  const auto render = [](const char* source) {
    return lal::lm::JinjaTemplate(source, "t.jinja").render(nlohmann::ordered_json::object());
  };
  const double t = seconds([&] {
    CHECK(render("[{{ '' * 9223372036854775807 }}] {{ [] * 9223372036854775807 }} {{ (() * 4611686018427387904) | "
                 "length }}") == "[] [] 0");
    CHECK(render("[{{ 'x' *0000 * 100000663333333330 }}]") == "[]");  // the reproducer
  });
  CHECK(t < 1.0);
  CHECK(render("{{ 'ab' * 3 }} {{ [1] * 2 }} {{ 'x' * -1 }}|") == "ababab [1, 1] |");
}

// Found by fuzz_jinja in CI's 60 s run: a float literal past the double range escaped as std::out_of_range.
TEST_CASE("jinja: float literals out of range are inf or 0, as in Python") {
  const auto render = [](const char* source) {
    return lal::lm::JinjaTemplate(source, "t.jinja").render(nlohmann::ordered_json::object());
  };
  CHECK(render("{{ 8E888888888 }} {{ -1e400 }} {{ 1e-400 }} {{ 1.5e3 }}") == "inf -inf 0.0 1500.0");
}

// Found by the device fuzz campaign (tests/fuzz/corpus/jinja/repro-namespace-holds-itself): `{% set ns.s = ns, ... %}`
// made a namespace hold itself, and printing it recursed until the stack overflowed. And a namespace attribute
// wrapped once per loop iteration (repro-namespace-nested-200000-deep) nested 200 000 lists deep: printing or merely
// destroying it overflowed the stack (`lal render` died with SIGSEGV). Both are refused with the position now.
TEST_CASE("jinja: a namespace cannot hold itself, and values nest at most 512 deep") {
  const auto render = [](const std::string& source) {
    return lal::lm::JinjaTemplate(source, "t.jinja").render(nlohmann::ordered_json::object());
  };
  CHECK_THROWS_WITH_AS(render("{% set ns = namespace(s='') %}{% set ns.s = ns, 'x' %}{{ ns.s }}"),
                       doctest::Contains("t.jinja:1:31: cannot store a namespace in 'ns.s'"), lal::lm::JinjaError);
  CHECK_THROWS_WITH_AS(render("{% set a = namespace() %}{% set b = namespace() %}{% set a.x = [b] %}"),
                       doctest::Contains("cannot store a namespace in 'a.x'"), lal::lm::JinjaError);
  const double t = seconds([&] {
    CHECK_THROWS_WITH_AS(render("{% set ns = namespace(s=0) %}{% for i in range(200000) %}{% set ns.s = [ns.s] %}"
                                "{% endfor %}{{ ns.s | length }}"),
                         doctest::Contains("a value nested more than 512 lists, dicts or namespaces deep"),
                         lal::lm::JinjaError);
  });
  CHECK(t < 1.0);
  // What real templates do with namespaces, nesting included, still works.
  CHECK(render("{% set ns = namespace(items=[], n=0) %}{% for i in range(3) %}{% set ns.items = ns.items + [[i]] %}"
               "{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.items }} {{ ns.n }}") == "[[0], [1], [2]] 3");
  CHECK(render("{% set ns = namespace(d=0) %}{% for i in range(500) %}{% set ns.d = [ns.d] %}{% endfor %}"
               "{{ (ns.d | string)[:6] }}") == "[[[[[[");
}

// Found by the device fuzz campaign (tests/fuzz/corpus/tokenizer/repro-vocab-id-87846156): one vocabulary id of
// 87 846 156 made the id → token table 2.8 GB (libFuzzer: out-of-memory). Ids are capped (LAL_MAX_TOKEN_ID).
TEST_CASE("tokenizer.json: a stray huge token id is refused, naming the limit") {
  const auto doc = [](const std::string& vocab_id, const std::string& added_id) {
    return R"({"model":{"type":"BPE","vocab":{"a":0,"b":)" + vocab_id + R"(},"merges":[]},"added_tokens":[{"id":)" +
           added_id + R"(,"content":"<x>","special":true}]})";
  };
  CHECK_THROWS_WITH_AS(lm::Tokenizer::from_json(doc("87846156", "2"), "big.json"),
                       doctest::Contains("model.vocab[\"b\"]: token id 87846156 is over the 16777216 limit for token "
                                         "ids in tokenizer.json files (LAL_MAX_TOKEN_ID"),
                       lm::TokenizerError);
  CHECK_THROWS_WITH_AS(lm::Tokenizer::from_json(doc("1", "2147483647"), "big.json"),
                       doctest::Contains("added_tokens[0].id: token id 2147483647 is over the 16777216 limit"),
                       lm::TokenizerError);
  const auto ok = lm::Tokenizer::from_json(doc("1", "2"), "ok.json");
  CHECK(ok.vocab_size() == 3);
  // The limit is the variable's (lowered here so that the test allocates nothing large): up to it is accepted.
  EnvVar lower("LAL_MAX_TOKEN_ID", "100");
  CHECK(lm::Tokenizer::from_json(doc("100", "2"), "ok.json").vocab_size() == 101);
  CHECK_THROWS_WITH_AS(lm::Tokenizer::from_json(doc("101", "2"), "big.json"),
                       doctest::Contains("token id 101 is over the 100 limit"), lm::TokenizerError);
}

// Found by the device fuzz campaign (tests/fuzz/corpus/jinja/repro-attribute-index-out-of-range): an attribute path
// with a number past the 64-bit range (`selectattr('777…7.7', …)`) escaped as std::out_of_range; `| int` of a float
// outside that range was undefined behaviour.
TEST_CASE("jinja: attribute indexes past the 64-bit range are undefined, int() of a huge float is refused") {
  const auto render = [](const std::string& source) {
    return lal::lm::JinjaTemplate(source, "t.jinja")
        .render(nlohmann::ordered_json::parse(R"({"xs": [{"a": [5, 6]}, {"a": [7]}]})"));
  };
  CHECK(render("{{ xs | selectattr('99999999999999999999999', 'equalto', 1) | list | count }}|"
               "{{ xs | map(attribute='a.99999999999999999999999') | list | length }}|"
               "{{ xs | map(attribute='a.1', default='-') | join(',') }}") == "0|2|6,-");
  CHECK_THROWS_WITH_AS(render("{{ 1e300 | int }}"),
                       doctest::Contains("int(): 1e+300 is out of the 64-bit integer range"), lal::lm::JinjaError);
  CHECK(render("{{ '1e300' | int(7) }} {{ 2.9 | int }} {{ -2.9 | int }} {{ '12' | int }}") == "7 2 -2 12");
}

// Found by the device fuzz campaign (tests/fuzz/corpus/pipeline/repro-output-override-into-non-map): overrides for
// the chosen output (`modules: {output: {...}}`) merged into an output declaration that was a scalar or a list
// threw YAML::BadSubscript out of pipeline validation (fuzz_pipeline aborted; `lal validate` printed a raw
// yaml-cpp error). Now that declaration is refused like any module declaration that is not a map.
TEST_CASE("pipeline: output overrides on an output declaration that is not a map are one clear error") {
  for (const char* decl : {"[1, 2]", "just text"}) {
    CAPTURE(decl);
    const auto l = runtime::load_pipeline_text(
        std::string("name: t\ninput: turn.input\nmodules:\n  output: {labels: en}\noutputs:\n  think_aloud: ") + decl +
            "\n",
        "o.yaml", kDirs);
    CHECK_FALSE(l.ok());
    CHECK_MESSAGE(
        errors_of(l).find("o.yaml:6:16: module 'output' must be a map with at least `plugin:`") != std::string::npos,
        errors_of(l));
  }
  const auto replay =
      runtime::load_pipeline(fs::path(LAL_FUZZ_CORPUS) / "pipeline" / "repro-output-override-into-non-map", kDirs);
  CHECK_FALSE(replay.ok());
}
