// Shared by `lal chat` and `lal bench chat`: find the pipeline, turn the command-line options into pipeline
// overrides (the app never rewrites the pipeline), and start the runtime, which creates the model from `resources:`.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "command.hpp"
#include "lal/runtime/runtime.hpp"
#include "lal/services/language_model.hpp"

namespace lal::cli {

struct ChatOptions {
  std::string config;        ///< pipeline file; empty = the installed/bundled configs/chat.yaml
  std::string model_path;    ///< overrides resources.model.path
  std::string device;        ///< overrides resources.model.device
  std::string dtype;         ///< overrides resources.model.dtype
  std::string chat_template;  ///< overrides resources.model.chat_template (a format name or a .jinja file)
  std::string kernels;       ///< overrides resources.model.kernels (auto | fused | torch)
  std::optional<int> max_batch;              ///< overrides resources.model.max_batch
  std::optional<long long> prefix_cache_mb;  ///< overrides resources.model.prefix_cache_mb
  std::string output;        ///< which of the pipeline's `outputs:` runs ("text", "jsonl"); "" = the pipeline's
  std::string memory_db;     ///< overrides config `path` of every module declaring it (the SQLite memory tiers)
  bool hide_thoughts = false;
  long long seed = -1;       ///< < 0: keep the pipeline's
  std::vector<std::string> plugin_dirs;
  std::vector<runtime::Override> extra_overrides;
  /// A model already loaded, used instead of loading resources.model (`lal serve` shares one among its sessions).
  std::shared_ptr<LanguageModel> model;
};

/// Options shared by chat and bench chat, added to `desc`.
void add_chat_options(po::options_description& desc);
ChatOptions chat_options_from(const po::variables_map& vm);

/// The directory holding lal's data files (configs/, models/): the installed share/lal, else the source tree.
std::string data_dir();

/// A started pipeline with its model services. Throws std::runtime_error with every validation error
/// (file:line:col) or a model that cannot be found/loaded, saying what to pass.
struct ChatSession {
  std::unique_ptr<runtime::Runtime> runtime;
  std::string config_file;
  std::string model_description;
  std::string emotion_topic;               ///< a topic carrying lal.EmotionState/1, if any
  std::vector<std::string> memory_topics;  ///< recall topics served by memory tiers
};

/// Load the model the pipeline's resources.model names, with the options' overrides (what start_chat_session loads
/// when ChatOptions::model is empty). Throws std::runtime_error like start_chat_session.
std::shared_ptr<LanguageModel> load_chat_model(const ChatOptions& options);

ChatSession start_chat_session(const ChatOptions& options, runtime::RuntimeOptions runtime_options = {});

}  // namespace lal::cli
