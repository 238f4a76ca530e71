// `lal generate` — stream a continuation of one prompt from a Hugging Face model directory or hub id.
#include <spdlog/spdlog.h>

#include <climits>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "command.hpp"
#include "lal/lm/engine.hpp"
#if LAL_LM_HAVE_TOKENIZER
#include "lal/lm/chat_template.hpp"
#include "lal/lm/tokenizer.hpp"
#endif

namespace lal::cli {
namespace {

std::vector<std::int32_t> parse_ids(const std::string& s) {
  std::vector<std::int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    std::size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0 || v > INT32_MAX)
      throw UsageError("--prompt_ids: '" + item + "' is not a token id (expected e.g. 1,2,3)");
    ids.push_back(static_cast<std::int32_t>(v));
  }
  if (ids.empty()) throw UsageError("--prompt_ids: no ids");
  return ids;
}

int run_generate(const std::vector<std::string>& args) {
  po::options_description desc("lal generate");
  add_common_options(desc);
  desc.add_options()("model_path", po::value<std::string>()->required(),
                     "model directory or hub id org/name[@rev] (downloaded on first use)")(
      "prompt", po::value<std::string>(), "prompt text (needs tokenizer.json)")("prompt_ids", po::value<std::string>(),
                                                                                "prompt as comma-separated token ids")(
      "max_new_tokens", po::value<int>()->default_value(128), "tokens to generate at most")(
      "min_new_tokens", po::value<int>()->default_value(0), "no end-of-sequence/stop token before this many tokens")(
      "greedy", po::bool_switch(), "argmax decoding")("temperature", po::value<float>()->default_value(0.7f),
                                                      "sampling temperature (<= 0: greedy)")(
      "top_p", po::value<float>()->default_value(1.0f), "nucleus sampling mass (1 = off)")(
      "top_k", po::value<int>()->default_value(0), "keep the k most likely tokens (0 = off)")(
      "min_p", po::value<float>()->default_value(0.0f), "drop tokens below min_p x top probability (0 = off)")(
      "repetition_penalty", po::value<float>()->default_value(1.0f), "penalise prompt/generated tokens (1 = off)")(
      "seed", po::value<std::uint64_t>()->default_value(0), "sampling seed")(
      "stop", po::value<std::vector<std::string>>()->composing(), "stop string (repeatable)")(
      "chat", po::bool_switch(), "wrap --prompt as a user message in the model's chat template")(
      "ids", po::bool_switch(), "print the new token ids as one JSON array instead of text")(
      "device", po::value<std::string>()->default_value("auto"), "auto|cpu|cuda|cuda:N")(
      "dtype", po::value<std::string>()->default_value("auto"), "auto|float32|bfloat16|float16")(
      "decode_mode", po::value<std::string>()->default_value("auto"), "auto|dynamic|static|graph (graph: CUDA graphs)");
  po::variables_map vm;
  if (!parse_command_line("generate", "--model_path DIR (--prompt TEXT | --prompt_ids 1,2,3) [options]", args, desc, {},
                          vm))
    return 0;
  if (vm.count("prompt") == vm.count("prompt_ids")) throw UsageError("give exactly one of --prompt and --prompt_ids");
  if (vm.count("prompt_ids") && vm["chat"].as<bool>()) throw UsageError("--chat needs --prompt, not --prompt_ids");
  const bool want_ids = vm["ids"].as<bool>();

  lal::lm::ModelOptions mo;
  mo.model_path = vm["model_path"].as<std::string>();
  mo.device = vm["device"].as<std::string>();
  mo.dtype = vm["dtype"].as<std::string>();
  mo.decode_mode = vm["decode_mode"].as<std::string>();
  auto engine = lal::lm::Engine::load(mo);
  const auto* tok = engine->tokenizer();

  lal::lm::GenerateOptions go;
  go.max_new_tokens = vm["max_new_tokens"].as<int>();
  go.min_new_tokens = vm["min_new_tokens"].as<int>();
  if (go.min_new_tokens < 0) throw UsageError("--min_new_tokens must be ≥ 0");
  go.sampling.greedy = vm["greedy"].as<bool>();
  go.sampling.temperature = vm["temperature"].as<float>();
  go.sampling.top_p = vm["top_p"].as<float>();
  go.sampling.top_k = vm["top_k"].as<int>();
  go.sampling.min_p = vm["min_p"].as<float>();
  go.sampling.repetition_penalty = vm["repetition_penalty"].as<float>();
  go.sampling.seed = vm["seed"].as<std::uint64_t>();
  if (vm.count("stop")) go.stop_strings = vm["stop"].as<std::vector<std::string>>();

  std::vector<std::int32_t> prompt;
  if (vm.count("prompt_ids")) {
    prompt = parse_ids(vm["prompt_ids"].as<std::string>());
  } else {
    if (!tok) throw std::runtime_error(engine->model_dir() + " has no tokenizer.json: use --prompt_ids and --ids");
#if LAL_LM_HAVE_TOKENIZER
    std::string text = vm["prompt"].as<std::string>();
    if (vm["chat"].as<bool>()) {
      const auto chat = lal::lm::ChatTemplate::detect(engine->model_dir());
      text = chat.render({{"user", text}});
      for (const auto& s : chat.stop_texts()) go.stop_strings.push_back(s);
    }
    prompt = tok->encode(text, /*add_special_tokens=*/true);
#endif
  }
  if (!want_ids && !tok)
    throw std::runtime_error(engine->model_dir() + " has no tokenizer.json, so text cannot be shown: add --ids");

  spdlog::debug("prompt ids ({}): {}", prompt.size(), nlohmann::json(prompt).dump());

  lal::lm::GenerateStats stats;
  auto out = engine->generate(
      {prompt}, go,
      [&](const lal::lm::TokenStep& s) {
        if (!want_ids && !s.text.empty()) std::cout << s.text << std::flush;
        return true;
      },
      {}, &stats);
  if (want_ids) {
    std::cout << nlohmann::json(out[0].ids).dump() << "\n";
  } else {
    std::cout << "\n";
  }
  spdlog::info("{} prompt tokens, {} new ({}), prefill {:.1f} ms, decode {:.1f} tok/s", stats.prompt_tokens,
               stats.generated_tokens, out[0].finish_reason, stats.prefill_seconds * 1e3,
               stats.decode_seconds > 0 ? stats.generated_tokens / stats.decode_seconds : 0.0);
  return 0;
}

}  // namespace

LAL_COMMAND("generate", "generate text from a language model (LibTorch engine)", run_generate);

}  // namespace lal::cli
