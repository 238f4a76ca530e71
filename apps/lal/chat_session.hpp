// Shared by `lal chat` and `lal bench chat`: find the pipeline and the model, apply command-line overrides, load
// the language-model services the pipeline's `resources:` name, and start the runtime.
#pragma once

#include <memory>
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
  std::string kernels;       ///< auto | fused | torch (lal::lm::ModelOptions::kernels); empty = auto
  int max_batch = 0;         ///< sequences decoded together (ModelOptions::max_batch); 0 = automatic
  long long prefix_cache_mb = -1;  ///< conversation-prefix KV cache (ModelOptions::prefix_cache_mb); -1 = automatic
  std::string output;        ///< "text" | "jsonl" | "" (keep the pipeline's)
  std::string memory_db;     ///< overrides config.path of every long_term / procedural module
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
  std::string emotion_topic;  ///< topic of the emotion module's `state` output, if any
  std::string memory_topic;   ///< topic served by the long_term module's `recall`, if any
};

/// Load the model the pipeline's resources.model names, with the options' overrides (what start_chat_session loads
/// when ChatOptions::model is empty). Throws std::runtime_error like start_chat_session.
std::shared_ptr<LanguageModel> load_chat_model(const ChatOptions& options);

ChatSession start_chat_session(const ChatOptions& options, runtime::RuntimeOptions runtime_options = {});

}  // namespace lal::cli
