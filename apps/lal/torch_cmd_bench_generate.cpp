// `lal bench generate` — prefill and decode throughput and peak memory of the LibTorch engine, on random prompt
// ids (greedy, no early stop), so that the numbers depend on shapes only.
#include <spdlog/spdlog.h>

#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>

#include "command.hpp"
#include "lal/lm/engine.hpp"

namespace lal::cli {
namespace {

void bench_one(lal::lm::Engine& e, const lal::lm::ModelOptions& mo, const po::variables_map& vm, int batch,
               int prompt_len, int new_tokens, std::optional<double>& bandwidth);

int run_bench_generate(const std::vector<std::string>& args) {
  po::options_description desc("lal bench generate");
  add_common_options(desc);
  desc.add_options()("model_path", po::value<std::string>()->required(),
                     "model directory or hub id org/name[@rev] (downloaded on first use)")(
      "batch", po::value<std::string>()->default_value("1"),
      "prompts decoded together; a list (1,8) runs each in turn")("prompt_len", po::value<int>()->default_value(128),
                                                                  "prompt tokens per sequence")(
      "new_tokens", po::value<int>()->default_value(128), "tokens generated per sequence")(
      "warmup", po::value<int>()->default_value(1), "untimed warm-up runs")(
      "temperature", po::value<float>()->default_value(0.0f), "0: greedy; > 0: sample at this temperature (seed 1)")(
      "top_p", po::value<float>()->default_value(1.0f), "nucleus sampling threshold when sampling (1 = off)")(
      "top_k", po::value<int>()->default_value(0), "keep the k most likely tokens when sampling (0 = off)")(
      "repeat", po::value<int>()->default_value(1), "timed runs (the best is reported; JSON lists every run)")(
      "bandwidth", po::bool_switch(), "also measure device memory bandwidth and the weight-read floor per step")(
      "device", po::value<std::string>()->default_value("auto"), "auto|cpu|cuda|cuda:N")(
      "dtype", po::value<std::string>()->default_value("auto"),
      "auto|float32|bfloat16|float16|int8|int4 (auto on the CPU: bfloat16 for a bfloat16 checkpoint on "
      "an AVX-512 CPU, else float32; int8/int4: weight-only, groups of 32, int8 lm-head)")(
      "decode_mode", po::value<std::string>()->default_value("auto"), "auto|dynamic|static|graph (graph: CUDA graphs)")(
      "dequantized_cache_mb", po::value<std::int64_t>()->default_value(0),
      "int8/int4 on a GPU: keep the first layers dequantized in up to this many MiB of device memory (what "
      "lal distill does with the teacher's spare memory; 0 = none)")(
      "kernels", po::value<std::string>()->default_value("auto"),
      "auto|fused|torch: fused CUDA kernels (auto: on a GPU when built) or LibTorch ops")("json", po::bool_switch(),
                                                                                          "print one JSON object")(
      "profile", po::bool_switch(),
      "after the timed runs, run once more under LibTorch's profiler and print a per-operator table (self time, "
      "calls) of that run's prefill + decode to stderr")(
      "trace", po::value<std::string>()->default_value(""),
      "after the timed runs, run once more under torch's profiler (Kineto) and save a Chrome trace of its CPU "
      "operators and CUDA kernels to this file (one file per batch size: .bN is added before the extension when "
      "--batch lists several); tests/reference/gpu/trace_decode.py summarises the decode steps");
  po::variables_map vm;
  if (!parse_command_line("bench generate", "--model_path DIR [--batch N] [--prompt_len N] [--new_tokens N]", args,
                          desc, {}, vm))
    return 0;
  std::vector<int> batches;
  {
    std::stringstream list(vm["batch"].as<std::string>());
    for (std::string item; std::getline(list, item, ',');) {
      std::size_t used = 0;
      int b = 0;
      try {
        b = std::stoi(item, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != item.size() || b < 1)
        throw UsageError("--batch: '" + item + "' is not a batch size >= 1 (expected e.g. 1 or 1,8)");
      batches.push_back(b);
    }
    if (batches.empty()) throw UsageError("--batch: no batch size");
  }
  const int prompt_len = vm["prompt_len"].as<int>(), new_tokens = vm["new_tokens"].as<int>();
  if (prompt_len < 1 || new_tokens < 2) throw UsageError("need --prompt_len >= 1, --new_tokens >= 2");
  const float temperature = vm["temperature"].as<float>(), top_p = vm["top_p"].as<float>();
  if (!(temperature >= 0.0f)) throw UsageError("--temperature must be >= 0 (0: greedy)");
  if (!(top_p > 0.0f && top_p <= 1.0f)) throw UsageError("--top_p must be in (0, 1]");
  if (vm["top_k"].as<int>() < 0) throw UsageError("--top_k must be >= 0 (0: off)");

  lal::lm::ModelOptions mo;
  mo.model_path = vm["model_path"].as<std::string>();
  mo.device = vm["device"].as<std::string>();
  mo.dtype = vm["dtype"].as<std::string>();
  mo.decode_mode = vm["decode_mode"].as<std::string>();
  mo.kernels = vm["kernels"].as<std::string>();
  const auto cache_mb = vm["dequantized_cache_mb"].as<std::int64_t>();
  if (cache_mb < 0 || cache_mb > (std::int64_t{1} << 30))
    throw UsageError("--dequantized_cache_mb must be between 0 and 2^30 MiB, got " + std::to_string(cache_mb));
  mo.dequantized_cache_bytes = cache_mb << 20;
  mo.load_tokenizer = true;
  auto engine = lal::lm::Engine::load(mo);
  std::optional<double> bandwidth;
  for (const int batch : batches) bench_one(*engine, mo, vm, batch, prompt_len, new_tokens, bandwidth);
  return 0;
}

/// One batch size: warm-up, timed runs, one report (JSON line or text).
void bench_one(lal::lm::Engine& e, const lal::lm::ModelOptions& mo, const po::variables_map& vm, int batch,
               int prompt_len, int new_tokens, std::optional<double>& bandwidth) {
  auto* engine = &e;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<std::int32_t> pick(0, static_cast<std::int32_t>(engine->usable_vocab() - 1));
  std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(batch));
  for (auto& p : prompts)
    for (int i = 0; i < prompt_len; ++i) p.push_back(pick(rng));
  lal::lm::GenerateOptions go;
  go.sampling.temperature = vm["temperature"].as<float>();
  go.sampling.greedy = go.sampling.temperature <= 0.0f;
  go.sampling.top_p = vm["top_p"].as<float>();
  go.sampling.top_k = vm["top_k"].as<int>();
  go.sampling.seed = 1;
  go.stop_at_eos = false;
  go.max_new_tokens = new_tokens;

  for (int i = 0; i < vm["warmup"].as<int>(); ++i) engine->generate(prompts, go);
  engine->reset_peak_memory();
  lal::lm::GenerateStats best;
  nlohmann::json runs = nlohmann::json::array();
  // The first new token comes from the prefill logits; the other new_tokens-1 each cost one decode step.
  auto step_seconds = [](const lal::lm::GenerateStats& st) {
    return st.decode_seconds / static_cast<double>(std::max<std::int64_t>(1, st.decode_steps - 1));
  };
  for (int i = 0; i < std::max(1, vm["repeat"].as<int>()); ++i) {
    lal::lm::GenerateStats st;
    engine->generate(prompts, go, {}, {}, &st);
    if (i == 0 || st.decode_seconds < best.decode_seconds) best = st;
    runs.push_back({{"prefill_tokens_per_s", st.prompt_tokens / st.prefill_seconds},
                    {"decode_tokens_per_s", batch / step_seconds(st)},
                    {"decode_ms_per_step", step_seconds(st) * 1e3}});
  }
  if (vm["profile"].as<bool>()) {
    lal::lm::GenerateStats st;
    const auto table = lal::lm::profile_operators([&] { engine->generate(prompts, go, {}, {}, &st); });
    std::cerr << "LibTorch profile of one generate() (batch " << batch << ", prompt " << prompt_len << ", "
              << new_tokens << " new tokens; prefill " << st.prefill_seconds * 1e3 << " ms, decode "
              << st.decode_seconds * 1e3 << " ms under the profiler):\n"
              << table;
  }
  if (const auto& trace = vm["trace"].as<std::string>(); !trace.empty()) {
    std::string path = trace;
    if (vm["batch"].as<std::string>().find(',') != std::string::npos) {
      const auto dot = path.rfind('.'), slash = path.rfind('/');
      const auto at = dot != std::string::npos && (slash == std::string::npos || dot > slash) ? dot : path.size();
      path.insert(at, ".b" + std::to_string(batch));
    }
    const bool cuda = engine->device_name().rfind("cuda", 0) == 0;
    lal::lm::start_trace(cuda, "--trace");
    lal::lm::GenerateStats st;
    engine->generate(prompts, go, {}, {}, &st);
    lal::lm::stop_trace(cuda, path);
    std::cerr << "trace of one generate() (batch " << batch << ", " << st.decode_steps << " decode steps, "
              << st.decode_seconds * 1e3 << " ms of decode under the profiler): " << path << "\n";
  }
  const double prefill_tps = best.prompt_tokens / best.prefill_seconds;
  const double step_s = step_seconds(best);
  const double decode_tps = batch / step_s;
  nlohmann::json r = {
      {"model", engine->describe()},
      {"device", engine->device_name()},
      {"dtype", engine->dtype_name()},
      {"decode_mode", mo.decode_mode},
      {"fused_kernels", engine->fused_kernels()},
      {"batch", batch},
      {"prompt_len", prompt_len},
      {"new_tokens", new_tokens},
      {"sampling", go.sampling.greedy
                       ? "greedy"
                       : "temperature " + std::to_string(go.sampling.temperature) + ", top_k " +
                             std::to_string(go.sampling.top_k) + ", top_p " + std::to_string(go.sampling.top_p)},
      {"weight_bytes", engine->parameter_bytes()},
      {"prefill_seconds", best.prefill_seconds},
      {"prefill_tokens_per_s", prefill_tps},
      {"decode_ms_per_step", step_s * 1e3},
      {"decode_tokens_per_s", decode_tps},
      {"decode_tokens_per_s_per_sequence", 1.0 / step_s},
      {"peak_memory_bytes", engine->peak_memory_bytes()},
      {"runs", runs},
      {"peak_memory_kind", engine->device_name().rfind("cuda", 0) == 0 ? "cuda max allocated" : "process peak RSS"}};
  if (vm["bandwidth"].as<bool>()) {
    if (!bandwidth) bandwidth = engine->measure_memory_bandwidth();
    const double bw = *bandwidth;
    r["memory_bandwidth_bytes_per_s"] = bw;
    r["weight_read_floor_ms_per_step"] = 1e3 * static_cast<double>(engine->parameter_bytes()) / bw;
  }
  if (vm["json"].as<bool>()) {
    std::cout << r.dump() << std::endl;
    return;
  }
  std::cout << std::fixed << std::setprecision(1) << r["model"].get<std::string>() << "\n"
            << "  batch " << batch << ", prompt " << prompt_len << ", new " << new_tokens << "\n"
            << "  prefill: " << prefill_tps << " tok/s (" << best.prefill_seconds * 1e3 << " ms)\n"
            << "  decode:  " << decode_tps << " tok/s (" << step_s * 1e3 << " ms/step, " << 1.0 / step_s
            << " tok/s per sequence)\n"
            << "  peak memory: " << static_cast<double>(engine->peak_memory_bytes()) / (1 << 20) << " MiB ("
            << r["peak_memory_kind"].get<std::string>() << "), weights "
            << static_cast<double>(engine->parameter_bytes()) / (1 << 20) << " MiB\n";
  if (r.contains("memory_bandwidth_bytes_per_s"))
    std::cout << "  bandwidth: " << r["memory_bandwidth_bytes_per_s"].get<double>() / 1e9 << " GB/s, weight-read floor "
              << r["weight_read_floor_ms_per_step"].get<double>() << " ms/step\n";
}

}  // namespace

LAL_COMMAND("bench generate", "prefill/decode tokens per second and peak memory of the LibTorch engine",
            run_bench_generate);

}  // namespace lal::cli
