// lal tokenize / lal detokenize / lal bench tokenize — text ↔ token ids with a Hugging Face tokenizer.json.
//
//   lal tokenize   --tokenizer PATH [--jsonl] [--add_special_tokens]   stdin lines → ids
//   lal detokenize --tokenizer PATH [--jsonl] [--skip_special_tokens]  stdin ids → text
//   lal bench tokenize --tokenizer PATH --input FILE [--repeat N]      encode/decode throughput
//
// One output line per input line, flushed as it is written (usable as a co-process). With --jsonl every input line
// is one JSON value (a string for tokenize, an array of ids for detokenize) and every output line one JSON value;
// without it, tokenize reads plain text lines and writes space-separated ids, detokenize the reverse.
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "command.hpp"
#include "lal/lm/tokenizer.hpp"

namespace lal::cli {

namespace {

lal::lm::Tokenizer load_tokenizer(const po::variables_map& vm) {
  if (!vm.count("tokenizer")) throw UsageError("--tokenizer PATH is required (a tokenizer.json or a model directory)");
  return lal::lm::Tokenizer::from_file(vm["tokenizer"].as<std::string>());
}

std::string where(std::size_t line) { return "stdin line " + std::to_string(line); }

nlohmann::json parse_json_line(const std::string& line, std::size_t n) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(where(n) + ": invalid JSON: " + e.what());
  }
}

int tokenize(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("tokenizer", po::value<std::string>(), "tokenizer.json, or a model directory containing one")(
      "jsonl", "each input line is a JSON string; each output line the JSON array of its ids")(
      "add_special_tokens", "add the post-processor's special tokens (e.g. Llama-2's BOS)");
  po::variables_map vm;
  if (!parse_command_line("tokenize", "--tokenizer PATH [--jsonl] [--add_special_tokens] < text", args, desc, {}, vm))
    return 0;
  const auto tokenizer = load_tokenizer(vm);
  const bool jsonl = vm.count("jsonl") > 0, add_special = vm.count("add_special_tokens") > 0;

  std::string line;
  for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
    std::string text;
    if (jsonl) {
      const nlohmann::json value = parse_json_line(line, n);
      if (!value.is_string())
        throw std::runtime_error(where(n) + ": expected a JSON string, found " + std::string(value.type_name()));
      text = value.get<std::string>();
    } else {
      text = std::move(line);
    }
    std::vector<std::int32_t> ids;
    try {
      ids = tokenizer.encode(text, add_special);
    } catch (const lal::lm::TokenizerError& e) {
      throw std::runtime_error(where(n) + ": " + e.what());
    }
    if (jsonl) {
      std::cout << nlohmann::json(ids).dump() << std::endl;
    } else {
      for (std::size_t i = 0; i < ids.size(); ++i) std::cout << (i ? " " : "") << ids[i];
      std::cout << std::endl;
    }
  }
  return 0;
}

int detokenize(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("tokenizer", po::value<std::string>(), "tokenizer.json, or a model directory containing one")(
      "jsonl", "each input line is a JSON array of ids; each output line a JSON string")(
      "skip_special_tokens", "leave special tokens out of the text");
  po::variables_map vm;
  if (!parse_command_line("detokenize", "--tokenizer PATH [--jsonl] [--skip_special_tokens] < ids", args, desc, {}, vm))
    return 0;
  const auto tokenizer = load_tokenizer(vm);
  const bool jsonl = vm.count("jsonl") > 0, skip = vm.count("skip_special_tokens") > 0;

  std::string line;
  for (std::size_t n = 1; std::getline(std::cin, line); ++n) {
    std::vector<std::int32_t> ids;
    if (jsonl) {
      const nlohmann::json value = parse_json_line(line, n);
      if (!value.is_array()) throw std::runtime_error(where(n) + ": expected a JSON array of token ids");
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (!value[i].is_number_integer() || value[i].get<std::int64_t>() < INT32_MIN ||
            value[i].get<std::int64_t>() > INT32_MAX)
          throw std::runtime_error(where(n) + ": element " + std::to_string(i) + " is not an integer token id");
        ids.push_back(value[i].get<std::int32_t>());
      }
    } else {
      std::istringstream in(line);
      std::string word;
      while (in >> word) {
        std::size_t used = 0;
        long long id = 0;
        try {
          id = std::stoll(word, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != word.size() || id < INT32_MIN || id > INT32_MAX)
          throw std::runtime_error(where(n) + ": \"" + word + "\" is not an integer token id");
        ids.push_back(static_cast<std::int32_t>(id));
      }
    }
    std::string text;
    try {
      text = tokenizer.decode(ids, skip);
    } catch (const lal::lm::TokenizerError& e) {
      throw std::runtime_error(where(n) + ": " + e.what());
    }
    if (jsonl)
      std::cout << nlohmann::json(text).dump() << std::endl;
    else
      std::cout << text << std::endl;
  }
  return 0;
}

int bench_tokenize(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  desc.add_options()("tokenizer", po::value<std::string>(), "tokenizer.json, or a model directory containing one")(
      "input", po::value<std::string>(), "UTF-8 text file; encoded line by line")(
      "repeat", po::value<int>()->default_value(1), "passes over the input");
  po::variables_map vm;
  if (!parse_command_line("bench tokenize", "--tokenizer PATH --input FILE [--repeat N]", args, desc, {}, vm)) return 0;
  if (!vm.count("input")) throw UsageError("--input FILE is required");
  const int repeat = vm["repeat"].as<int>();
  if (repeat < 1) throw UsageError("--repeat must be at least 1");

  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const auto tokenizer = load_tokenizer(vm);
  const double load_s = std::chrono::duration<double>(clock::now() - t0).count();

  std::ifstream file(vm["input"].as<std::string>(), std::ios::binary);
  if (!file) throw std::runtime_error(vm["input"].as<std::string>() + ": cannot open for reading");
  std::vector<std::string> lines;
  std::size_t bytes = 0;
  for (std::string line; std::getline(file, line);) {
    bytes += line.size() + 1;
    lines.push_back(line + "\n");
  }

  std::size_t tokens = 0;
  std::vector<std::vector<std::int32_t>> encoded(lines.size());
  const auto t1 = clock::now();
  for (int r = 0; r < repeat; ++r)
    for (std::size_t i = 0; i < lines.size(); ++i) {
      encoded[i] = tokenizer.encode(lines[i]);
      tokens += encoded[i].size();
    }
  const double encode_s = std::chrono::duration<double>(clock::now() - t1).count();
  const auto t2 = clock::now();
  std::size_t decoded_bytes = 0;
  for (int r = 0; r < repeat; ++r)
    for (const auto& ids : encoded) decoded_bytes += tokenizer.decode(ids).size();
  const double decode_s = std::chrono::duration<double>(clock::now() - t2).count();

  const double mb = static_cast<double>(bytes) * repeat / 1e6;
  std::cout << "tokenizer      " << tokenizer.source_path() << " (loaded in " << load_s << " s)\n"
            << "input          " << vm["input"].as<std::string>() << ": " << lines.size() << " lines, " << bytes
            << " bytes, x" << repeat << "\n"
            << "encode         " << tokens << " tokens in " << encode_s << " s: " << tokens / encode_s << " tokens/s, "
            << mb / encode_s << " MB/s\n"
            << "decode         " << decoded_bytes << " bytes in " << decode_s << " s: " << tokens / decode_s
            << " tokens/s\n";
  return 0;
}

}  // namespace

LAL_COMMAND("tokenize", "text lines → token ids with a tokenizer.json (plain or --jsonl)", tokenize);
LAL_COMMAND("detokenize", "token ids → text with a tokenizer.json (plain or --jsonl)", detokenize);
LAL_COMMAND("bench tokenize", "tokenizer encode/decode throughput on a text file", bench_tokenize);

}  // namespace lal::cli
