// `lal generate` — stream a continuation of one prompt from a Hugging Face model directory or hub id.
#include <spdlog/spdlog.h>

#include <climits>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "command.hpp"
#include "lal/checks/option_checks.hpp"
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

/// The sampling and length flags given, checked by the rules every front end shares (lal/checks/option_checks.hpp)
/// before a model is loaded. Flags not given come from generation_config.json (checked when it is read).
void check_sampling_flags(const po::variables_map& vm) {
  namespace c = checks;
  try {
    if (vm.count("temperature")) c::require_non_negative("--temperature", vm["temperature"].as<float>());
    if (vm.count("top_p")) c::require_in_half_open_range("--top_p", vm["top_p"].as<float>(), 0.0, 1.0);
    if (vm.count("top_k")) c::require_at_least("--top_k", std::int64_t{vm["top_k"].as<int>()}, 0);
    if (vm.count("min_p")) c::require_probability("--min_p", vm["min_p"].as<float>());
    if (vm.count("repetition_penalty"))
      c::require_positive("--repetition_penalty", vm["repetition_penalty"].as<float>());
    if (vm.count("max_new_tokens"))
      c::require_at_least("--max_new_tokens", std::int64_t{vm["max_new_tokens"].as<int>()}, 0);
    if (vm.count("min_new_tokens"))
      c::require_at_least("--min_new_tokens", std::int64_t{vm["min_new_tokens"].as<int>()}, 0);
  } catch (const c::OptionRangeError& e) {
    throw UsageError(e.what());
  }
}

int run_generate(const std::vector<std::string>& args) {
  po::options_description desc("lal generate");
  add_common_options(desc);
  desc.add_options()("model_path", po::value<std::string>()->required(),
                     "model directory or hub id org/name[@rev] (downloaded on first use)")(
      "prompt", po::value<std::string>(), "prompt text (needs tokenizer.json)")("prompt_ids", po::value<std::string>(),
                                                                                "prompt as comma-separated token ids")(
      "max_new_tokens", po::value<int>(),
      "tokens to generate at most (default: generation_config.json's max_new_tokens, else 128)")(
      "min_new_tokens", po::value<int>(),
      "no end-of-sequence/stop token before this many tokens (default: generation_config.json's, else 0)")(
      "greedy", po::bool_switch(), "argmax decoding")("sample", po::bool_switch(),
                                                      "sample even where generation_config.json says do_sample: false")(
      "temperature", po::value<float>(), "sampling temperature (0: greedy); giving it asks for sampling")(
      "top_p", po::value<float>(), "nucleus sampling mass (1 = off)")("top_k", po::value<int>(),
                                                                      "keep the k most likely tokens (0 = off)")(
      "min_p", po::value<float>(), "drop tokens below min_p x top probability (0 = off)")(
      "repetition_penalty", po::value<float>(), "penalise prompt/generated tokens (1 = off)")(
      "seed", po::value<std::uint64_t>()->default_value(0), "sampling seed")(
      "stop", po::value<std::vector<std::string>>()->composing(), "stop string (repeatable)")(
      "chat", po::bool_switch(), "wrap --prompt as a user message in the model's chat template")(
      "chat_template", po::value<std::string>(),
      "with --chat: a built-in format (chatml, qwen2.5, qwen3, llama2, llama3, phi4) or a Jinja file instead of the "
      "model's own template")("ids", po::bool_switch(), "print the new token ids as one JSON array instead of text")(
      "logits", po::bool_switch(),
      "generate nothing: print the prompt's float32 logits as JSON {\"shape\": [T, vocab], \"logits\": [[...]]} "
      "(one forward over the prompt; for parity checks against transformers)")(
      "device", po::value<std::string>()->default_value("auto"), "auto|cpu|cuda|cuda:N")(
      "dtype", po::value<std::string>()->default_value("auto"),
      "auto|float32|bfloat16|float16|int8|int4 (auto on the CPU: bfloat16 for a bfloat16 checkpoint on "
      "an AVX-512 CPU, else float32; int8/int4: weight-only, groups of 32, int8 lm-head)")(
      "decode_mode", po::value<std::string>()->default_value("auto"), "auto|dynamic|static|graph (graph: CUDA graphs)")(
      "kernels", po::value<std::string>()->default_value("auto"),
      "auto|fused|torch: fused CUDA kernels (auto: on a GPU when built) or LibTorch ops")(
      "allow_nonfinite", po::bool_switch(), "load weights holding NaN/inf (refused by default)");
  po::variables_map vm;
  if (!parse_command_line("generate",
                          "--model_path DIR (--prompt TEXT | --prompt_ids 1,2,3) [options]\n\n"
                          "Sampling settings not given here come from the model's generation_config.json, as "
                          "transformers applies it: greedy unless it says do_sample (or --sample, --temperature, "
                          "--top_p, --top_k or --min_p is given); temperature, top_k (50 where the file is silent), "
                          "top_p, repetition_penalty, max_new_tokens, min_new_tokens.",
                          args, desc, {}, vm))
    return 0;
  if (vm.count("prompt") == vm.count("prompt_ids")) throw UsageError("give exactly one of --prompt and --prompt_ids");
  if (vm.count("prompt_ids") && vm["chat"].as<bool>()) throw UsageError("--chat needs --prompt, not --prompt_ids");
  if (vm["greedy"].as<bool>() && vm["sample"].as<bool>()) throw UsageError("give at most one of --greedy and --sample");
  const bool want_ids = vm["ids"].as<bool>();
  const bool want_logits = vm["logits"].as<bool>();
  if (want_logits && want_ids) throw UsageError("give at most one of --ids and --logits");
  check_sampling_flags(vm);

  lal::lm::ModelOptions mo;
  mo.model_path = vm["model_path"].as<std::string>();
  mo.device = vm["device"].as<std::string>();
  mo.dtype = vm["dtype"].as<std::string>();
  mo.decode_mode = vm["decode_mode"].as<std::string>();
  mo.kernels = vm["kernels"].as<std::string>();
  mo.allow_nonfinite = vm["allow_nonfinite"].as<bool>();
  auto engine = lal::lm::Engine::load(mo);
  if (mo.dtype == "auto" || mo.dtype == "int8" || mo.dtype == "int4")
    std::cerr << "lal generate: " << engine->describe() << std::endl;  // the dtype chosen, and why
  const auto* tok = engine->tokenizer();

  const auto& defaults = engine->config().generation;
  lal::lm::GenerateOptions go;
  go.max_new_tokens = vm.count("max_new_tokens")
                          ? vm["max_new_tokens"].as<int>()
                          : (defaults.max_new_tokens > 0 ? static_cast<int>(defaults.max_new_tokens) : 128);
  go.min_new_tokens =
      vm.count("min_new_tokens") ? vm["min_new_tokens"].as<int>() : static_cast<int>(defaults.min_new_tokens);
  if (go.max_new_tokens < 0) throw UsageError("--max_new_tokens must be ≥ 0");
  if (go.min_new_tokens < 0) throw UsageError("--min_new_tokens must be ≥ 0");
  lal::lm::SamplingRequest sampling;
  if (vm["greedy"].as<bool>()) sampling.greedy = true;
  if (vm["sample"].as<bool>()) sampling.greedy = false;
  if (vm.count("temperature")) sampling.temperature = vm["temperature"].as<float>();
  if (vm.count("top_p")) sampling.top_p = vm["top_p"].as<float>();
  if (vm.count("top_k")) sampling.top_k = vm["top_k"].as<int>();
  if (vm.count("min_p")) sampling.min_p = vm["min_p"].as<float>();
  if (vm.count("repetition_penalty")) sampling.repetition_penalty = vm["repetition_penalty"].as<float>();
  sampling.seed = vm["seed"].as<std::uint64_t>();
  try {
    go.sampling = lal::lm::resolve_sampling(defaults, sampling);
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--") + e.what());
  }
  spdlog::debug(
      "sampling: {} temperature {} top_k {} top_p {} min_p {} repetition_penalty {} (generation_config.json: {})",
      go.sampling.greedy ? "greedy" : "sampled", go.sampling.temperature, go.sampling.top_k, go.sampling.top_p,
      go.sampling.min_p, go.sampling.repetition_penalty, defaults.from_file ? "read" : "absent");
  if (vm.count("stop")) go.stop_strings = vm["stop"].as<std::vector<std::string>>();

  std::vector<std::int32_t> prompt;
  if (vm.count("prompt_ids")) {
    prompt = parse_ids(vm["prompt_ids"].as<std::string>());
  } else {
    if (!tok) throw std::runtime_error(engine->model_dir() + " has no tokenizer.json: use --prompt_ids and --ids");
#if LAL_LM_HAVE_TOKENIZER
    std::string text = vm["prompt"].as<std::string>();
    if (vm["chat"].as<bool>()) {
      const auto chat = lal::lm::ChatTemplate::load(
          engine->model_dir(), vm.count("chat_template") ? vm["chat_template"].as<std::string>() : "");
      spdlog::info("chat template: {}", chat.origin());
      text = chat.render({{"user", text}});
      for (const auto& s : chat.stop_texts()) go.stop_strings.push_back(s);
    }
    prompt = tok->encode(text, /*add_special_tokens=*/true);
#endif
  }
  if (!want_ids && !want_logits && !tok)
    throw std::runtime_error(engine->model_dir() + " has no tokenizer.json, so text cannot be shown: add --ids");

  spdlog::debug("prompt ids ({}): {}", prompt.size(), nlohmann::json(prompt).dump());
  if (want_logits) {
    const auto logits = engine->prompt_logits(prompt);
    const auto V = engine->config().vocab_size;
    // Shortest round-trip text of each float32 (nlohmann writes floats with max_digits10).
    nlohmann::json rows = nlohmann::json::array();
    for (std::size_t t = 0; t < prompt.size(); ++t)
      rows.push_back(std::vector<float>(logits.begin() + static_cast<std::ptrdiff_t>(t * V),
                                        logits.begin() + static_cast<std::ptrdiff_t>((t + 1) * V)));
    std::cout << nlohmann::json{{"shape", {prompt.size(), V}}, {"logits", rows}}.dump() << "\n";
    return 0;
  }

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
