// The resource kinds this `lal` can create for a pipeline's `resources:` (see lal/runtime/resources.hpp). The
// runtime stays torch-free; this file, linked into the executable with the LibTorch engine, registers them at
// startup, so `lal run`, `lal chat`, `lal bench chat` and `lal validate` all know the same kinds.
#include <spdlog/spdlog.h>

#include <filesystem>

#include "chat_session.hpp"
#include "lal/lm/engine.hpp"
#include "lal/lm/torch_language_model.hpp"
#include "lal/runtime/resources.hpp"

namespace lal::cli {
namespace {

namespace fs = std::filesystem;

/// `default` (or empty) is the bundled demo model; anything else is passed to the engine as written.
std::string resolve_model(const std::string& path) {
  if (!path.empty() && path != "default") return path;
  const fs::path bundled = fs::path(data_dir()) / "models" / "lal-demo";
  if (!fs::exists(bundled / "config.json"))
    throw std::runtime_error(
        "no model: the bundled demo model is not at " + bundled.string() +
        ". Set resources.model.path (or pass --model_path DIR) to a Hugging Face model directory, e.g. one saved by "
        "`lal distill`, or a hub id (downloaded on first use), e.g. --model_path Qwen/Qwen2.5-7B-Instruct");
  return bundled.string();
}

std::shared_ptr<void> create_language_model(const std::string& name, const Config& config) {
  lm::ModelOptions mo;
  mo.model_path = resolve_model(config.get<std::string>("path"));
  mo.device = config.get<std::string>("device");
  mo.dtype = config.get<std::string>("dtype");
  mo.chat_template = config.get<std::string>("chat_template");
  mo.kernels = config.get<std::string>("kernels");
  mo.max_batch = static_cast<int>(config.get<std::int64_t>("max_batch"));
  mo.prefix_cache_mb = config.get<std::int64_t>("prefix_cache_mb");
  mo.warm_up = config.get<bool>("warm_up");
  spdlog::info("resource '{}': loading model {} ({}, {})", name, mo.model_path, mo.device, mo.dtype);
  std::shared_ptr<LanguageModel> model = lm::load_language_model(mo);
  return model;
}

ConfigKeySpec one_of(ConfigKeySpec key, std::vector<std::string> allowed) {
  key.one_of = std::move(allowed);
  return key;
}

ConfigKeySpec at_least(ConfigKeySpec key, double min) {
  key.min = min;
  return key;
}

const bool registered = [] {
  runtime::ResourceKind k;
  k.kind = "language_model";
  k.service_type = LanguageModel::kServiceName;
  k.also_serves = {LanguageModel::kServiceNameV1};
  k.description = "a LibTorch language model (Hugging Face checkpoint): lal::LanguageModel";
  // The same settings as `lal chat --model_path/--device/...` (those are overrides of these keys).
  k.keys = {
      ConfigKeySpec::optional("path", ConfigType::string, "\"default\"",
                              "model directory or hub id org/name[@rev] (fetched on first use); `default` = the "
                              "bundled demo model"),
      ConfigKeySpec::optional("device", ConfigType::string, "\"auto\"", "auto | cpu | cuda | cuda:N"),
      one_of(ConfigKeySpec::optional("dtype", ConfigType::string, "\"auto\"",
                                     "auto | float32 | bfloat16 | float16 | int8 | int4 (int8/int4: weight-only, "
                                     "groups of 32, int8 lm-head; CPU decode kernels)"),
             {"auto", "float32", "bfloat16", "float16", "int8", "int4"}),
      ConfigKeySpec::optional("chat_template", ConfigType::string, "\"\"",
                              "chat template: empty = the model's own; a built-in format (chatml, qwen2.5, qwen3, "
                              "llama2, llama3, phi4) or a Jinja file"),
      one_of(ConfigKeySpec::optional("kernels", ConfigType::string, "\"auto\"",
                                     "auto | fused | torch: fused CUDA kernels (auto: on a GPU when built)"),
             {"auto", "fused", "torch"}),
      at_least(ConfigKeySpec::optional("max_batch", ConfigType::integer, "0",
                                       "sequences decoded together (0: 16 on a GPU, 8 on the CPU; 1: one at a time)"),
               0),
      at_least(ConfigKeySpec::optional("prefix_cache_mb", ConfigType::integer, "-1",
                                       "conversation-prefix KV cache in MiB (-1: automatic, 0: off)"),
               -1),
      ConfigKeySpec::optional("warm_up", ConfigType::boolean, "true",
                              "on a GPU, capture the decode step's CUDA graphs and warm cuBLAS at load time, so "
                              "that the first turn does not wait for them")};
  k.create = create_language_model;
  runtime::resource_kinds().add(std::move(k));
  return true;
}();

}  // namespace
}  // namespace lal::cli
