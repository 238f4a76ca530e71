// `lal pull ID` — fetch a model from the Hugging Face Hub into the shared cache ahead of time (the same code path
// as download-on-first-use in chat/generate/bench/distill). Prints the snapshot directory on stdout.
#include <iostream>

#include "command.hpp"
#include "lal/hub/hub.hpp"

namespace lal::cli {
namespace {

int run_pull(const std::vector<std::string>& args) {
  po::options_description desc("lal pull");
  add_common_options(desc);
  desc.add_options()("model", po::value<std::string>(), "hub id org/name[@revision] (also positional)")(
      "revision", po::value<std::string>(), "branch, tag or commit (default: main, or the @revision of the id)")(
      "include", po::value<std::vector<std::string>>()->composing(),
      "fetch only files matching this glob (repeatable; `*` crosses '/'); default: what lal loads (config, "
      "generation config, tokenizer, chat template, safetensors weights)")(
      "offline", po::bool_switch(),
      "never touch the network: check that the model is in the cache (as HF_HUB_OFFLINE=1)")(
      "parallel", po::value<int>()->default_value(4), "files downloaded at once (1-32)")("quiet", po::bool_switch(),
                                                                                         "no progress output");
  po::positional_options_description positional;
  positional.add("model", 1);
  po::variables_map vm;
  if (!parse_command_line("pull",
                          "ID [--revision R] [--include GLOB]... [--offline]\n\n"
                          "Downloads org/name from the Hugging Face Hub (HF_ENDPOINT, default https://huggingface.co)\n"
                          "into the cache shared with Python tools ($HF_HUB_CACHE, else $HF_HOME/hub, else\n"
                          "~/.cache/huggingface/hub), resuming interrupted downloads and checking every file's\n"
                          "sha256. Gated models need HF_TOKEN (or ~/.cache/huggingface/token). Prints the local\n"
                          "snapshot directory, usable as --model_path. Other commands download on first use the same\n"
                          "way; HF_HUB_OFFLINE=1 makes them use the cache only.",
                          args, desc, positional, vm))
    return 0;
  if (!vm.count("model")) throw UsageError("which model? e.g. lal pull Qwen/Qwen2.5-7B-Instruct");
  const std::string spec = vm["model"].as<std::string>();
  auto id = hub::HubId::parse(spec);
  if (!id) throw UsageError(spec + ": not a hub id (expected org/name[@revision])");
  if (vm.count("revision")) {
    const std::string rev = vm["revision"].as<std::string>();
    if (spec.find('@') != std::string::npos && rev != id->revision)
      throw UsageError("--revision " + rev + " contradicts the revision in " + spec);
    id = hub::HubId::parse(id->repo + "@" + rev);
  }
  hub::HubSettings settings = hub::HubSettings::from_environment();
  if (vm["offline"].as<bool>()) settings.offline = true;
  settings.parallel_downloads = vm["parallel"].as<int>();
  if (settings.parallel_downloads < 1 || settings.parallel_downloads > 32)
    throw UsageError("--parallel must be between 1 and 32");
  if (vm["quiet"].as<bool>()) settings.progress = hub::ProgressMode::quiet;
  hub::PullRequest request{*id, {}};
  if (vm.count("include")) request.include = vm["include"].as<std::vector<std::string>>();
  const hub::PullResult result = hub::pull(request, settings);
  std::cout << result.snapshot_dir << std::endl;
  return 0;
}

LAL_COMMAND("pull", "download a model from the Hugging Face Hub into the shared cache", run_pull);

}  // namespace
}  // namespace lal::cli
