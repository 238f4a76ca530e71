// lal chat — talk to the thinking pipeline: staged thoughts stream while the answer forms.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <boost/dll/runtime_symbol_info.hpp>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <mutex>

#include "chat_session.hpp"
#include "lal/messages.hpp"
#include "lal/services/language_model.hpp"
#include "memory_cli.hpp"

namespace lal::cli {

namespace fs = std::filesystem;

void add_chat_options(po::options_description& desc) {
  desc.add_options()("config", po::value<std::string>(), "pipeline YAML (default: configs/chat.yaml)")(
      "model_path", po::value<std::string>(),
      "model directory or hub id org/name[@rev] (fetched on first use; default: resources.model.path; "
      "'default' = the bundled demo model)")("device", po::value<std::string>(), "auto | cpu | cuda | cuda:N")(
      "dtype", po::value<std::string>(), "auto | float32 | bfloat16 | float16 | int8 | int4")(
      "chat_template", po::value<std::string>(),
      "chat template: the model's own by default; a built-in format (chatml, qwen2.5, qwen3, llama2, llama3, phi4) "
      "or a Jinja file")("kernels", po::value<std::string>(),
                         "auto | fused | torch: fused CUDA kernels (auto: on a GPU when built)")(
      "max_batch", po::value<int>(),
      "sequences the model decodes together (0: 16 on a GPU, 8 on the CPU; 1: one generation at a time)")(
      "prefix_cache_mb", po::value<long long>(), "conversation-prefix KV cache in MiB (-1: automatic, 0: off)")(
      "output", po::value<std::string>(),
      "which of the pipeline's `outputs:` runs; configs/chat.yaml: text (stage-labelled thoughts, then the answer) | "
      "jsonl (one event per line)")("memory_db", po::value<std::string>(),
                                    "SQLite file for long-term and procedural memory")(
      "hide_thoughts", "show only the answer")("seed", po::value<long long>(), "seed for every module that samples")(
      "plugin_path", po::value<std::vector<std::string>>()->composing(), "extra plugin directory (repeatable)")(
      "set", po::value<std::vector<std::string>>()->composing(),
      "override a pipeline value: --set modules.left_brain.config.max_tokens=64, --set 'modules.*.config.seed=3' "
      "(every module declaring the key), --set output=jsonl (repeatable)");
}

ChatOptions chat_options_from(const po::variables_map& vm) {
  ChatOptions o;
  auto str = [&](const char* key, std::string& out) {
    if (vm.count(key)) out = vm[key].as<std::string>();
  };
  str("config", o.config);
  str("model_path", o.model_path);
  str("device", o.device);
  str("dtype", o.dtype);
  str("chat_template", o.chat_template);
  str("kernels", o.kernels);
  if (vm.count("max_batch")) {
    o.max_batch = vm["max_batch"].as<int>();
    if (*o.max_batch < 0) throw UsageError("--max_batch must be >= 0 (0: automatic)");
  }
  if (vm.count("prefix_cache_mb")) {
    o.prefix_cache_mb = vm["prefix_cache_mb"].as<long long>();
    if (*o.prefix_cache_mb < -1) throw UsageError("--prefix_cache_mb must be >= -1 (-1: automatic, 0: off)");
  }
  str("output", o.output);
  str("memory_db", o.memory_db);
  o.hide_thoughts = vm.count("hide_thoughts") != 0;
  if (vm.count("seed")) {
    o.seed = vm["seed"].as<long long>();
    if (o.seed < 0) throw UsageError("--seed must be ≥ 0");
  }
  if (vm.count("plugin_path")) o.plugin_dirs = vm["plugin_path"].as<std::vector<std::string>>();
  if (vm.count("set"))
    for (const auto& s : vm["set"].as<std::vector<std::string>>()) {
      const auto eq = s.find('=');
      if (eq == std::string::npos || eq == 0) throw UsageError("--set wants PATH=VALUE, got '" + s + "'");
      o.extra_overrides.push_back({s.substr(0, eq), s.substr(eq + 1)});
    }
  return o;
}

std::string data_dir() {
  boost::dll::fs::error_code ec;
  const auto exe = boost::dll::program_location(ec);
  if (!ec) {
    const fs::path share = fs::path(exe.parent_path().string()) / ".." / "share" / "lal";
    if (fs::exists(share / "configs")) return fs::weakly_canonical(share).string();
  }
  return LAL_SOURCE_DIR;
}

namespace {

std::string describe_errors(const runtime::PipelineLoad& load) {
  std::string s;
  for (const auto& e : load.errors) s += "\n  " + e.str();
  return s;
}

/// `text` as a YAML double-quoted scalar, so a path with `:` or `#` stays one string.
std::string yaml_quote(const std::string& text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

/// The topic carrying `type` that some module publishes (output port), or "".
std::string topic_carrying(const runtime::PipelineSpec& spec, const char* type) {
  for (const auto& m : spec.modules)
    for (const auto& w : m.wires)
      if (const PortSpec* p = m.loaded->descriptor->find_port(w.port))
        if (p->direction == PortDirection::output && p->type == type) return w.topic;
  return {};
}

/// Every option is a pipeline override: the pipeline stays what the file says, plus these values. Options that apply
/// to "every module that has X" use `modules.*.config.X` (applied where the plugin declares X).
std::vector<runtime::Override> chat_overrides(const ChatOptions& options) {
  std::vector<runtime::Override> overrides;
  if (!options.output.empty()) overrides.push_back({"output", options.output});
  if (options.hide_thoughts) {
    if (options.output == "jsonl")
      throw UsageError("--hide_thoughts applies to --output text; jsonl always carries every event");
    overrides.push_back({"modules.*.config.hide_thoughts", "true"});
  }
  if (!options.memory_db.empty()) overrides.push_back({"modules.*.config.path", yaml_quote(options.memory_db)});
  if (options.seed >= 0) overrides.push_back({"modules.*.config.seed", std::to_string(options.seed)});
  if (!options.model_path.empty()) overrides.push_back({"resources.model.path", yaml_quote(options.model_path)});
  if (!options.device.empty()) overrides.push_back({"resources.model.device", yaml_quote(options.device)});
  if (!options.dtype.empty()) overrides.push_back({"resources.model.dtype", yaml_quote(options.dtype)});
  if (!options.chat_template.empty())
    overrides.push_back({"resources.model.chat_template", yaml_quote(options.chat_template)});
  if (!options.kernels.empty()) overrides.push_back({"resources.model.kernels", yaml_quote(options.kernels)});
  if (options.max_batch) overrides.push_back({"resources.model.max_batch", std::to_string(*options.max_batch)});
  if (options.prefix_cache_mb)
    overrides.push_back({"resources.model.prefix_cache_mb", std::to_string(*options.prefix_cache_mb)});
  overrides.insert(overrides.end(), options.extra_overrides.begin(), options.extra_overrides.end());
  return overrides;
}

std::string config_file_of(const ChatOptions& options) {
  return options.config.empty() ? (fs::path(data_dir()) / "configs" / "chat.yaml").string() : options.config;
}

}  // namespace

std::shared_ptr<LanguageModel> load_chat_model(const ChatOptions& options) {
  const std::string file = config_file_of(options);
  std::vector<runtime::fs::path> dirs(options.plugin_dirs.begin(), options.plugin_dirs.end());
  auto load = runtime::load_pipeline(file, dirs, chat_overrides(options));
  if (!load.ok()) throw std::runtime_error("invalid pipeline " + file + ":" + describe_errors(load));
  const auto resources = runtime::create_resources(load.spec);  // as the runtime would, from `resources:`
  auto it = resources.find("model");
  if (it == resources.end() || it->second.kind->service_type != LanguageModel::kServiceName)
    throw std::runtime_error(file + ": the pipeline declares no language_model resource named `model`");
  return std::static_pointer_cast<LanguageModel>(it->second.service);
}

ChatSession start_chat_session(const ChatOptions& options, runtime::RuntimeOptions runtime_options) {
  ChatSession session;
  session.config_file = config_file_of(options);
  std::vector<runtime::fs::path> dirs(options.plugin_dirs.begin(), options.plugin_dirs.end());

  const std::vector<runtime::Override> overrides = chat_overrides(options);
  auto load = runtime::load_pipeline(session.config_file, dirs, overrides);
  if (!load.ok()) {
    const auto& choices = load.spec.output_choices;
    if (!options.output.empty() && !choices.empty() &&
        std::find(choices.begin(), choices.end(), options.output) == choices.end()) {
      std::string list;
      for (const auto& c : choices) list += (list.empty() ? "" : " or ") + c;
      throw UsageError("--output must be " + list + ", not '" + options.output + "'");
    }
    throw std::runtime_error("invalid pipeline " + session.config_file + ":" + describe_errors(load));
  }
  if (!options.output.empty() && load.spec.output_choices.empty())
    throw UsageError("--output: " + session.config_file + " declares no `outputs:` to choose from");
  session.emotion_topic = topic_carrying(load.spec, EmotionState::kTypeName);
  for (const auto& m : load.spec.modules)
    if (m.loaded->descriptor->kind == ModuleKind::memory_tier)
      for (const auto& w : m.wires)
        if (const PortSpec* p = m.loaded->descriptor->find_port(w.port))
          if (p->direction == PortDirection::server && p->type == RecallRequest::kTypeName)
            session.memory_topics.push_back(w.topic);

  // The runtime creates the model from `resources:` (lal/runtime/resources.hpp), as `lal run` does — unless the
  // caller shares one it already has (`lal serve`: one model, one runtime per user).
  if (options.model)
    runtime_options.resources["model"] =
        runtime::Resource{"model", runtime::resource_kinds().find("language_model"), options.model};
  session.runtime = std::make_unique<runtime::Runtime>(std::move(load.spec), std::move(runtime_options));
  session.runtime->start();
  for (const auto& [name, r] : session.runtime->resources())
    if (r.kind && r.kind->service_type == LanguageModel::kServiceName)
      session.model_description += (session.model_description.empty() ? "" : ", ") +
                                   std::static_pointer_cast<LanguageModel>(r.service)->describe();
  return session;
}

namespace {

volatile std::sig_atomic_t g_interrupts = 0;
volatile std::sig_atomic_t g_terminate = 0;
extern "C" void on_chat_sigint(int) { g_interrupts = g_interrupts + 1; }
// SIGTERM ends the session like EOF: the running turn finishes, then the pipeline stops (memories consolidate).
extern "C" void on_chat_sigterm(int) { g_terminate = 1; }

/// The long_term module's database file in the running pipeline, or "".
std::string memory_db_of(const runtime::PipelineSpec& spec) {
  for (const auto& m : spec.modules)
    if (m.plugin == "long_term")
      if (auto it = m.config.find("path"); it != m.config.end() && it->second.is_string())
        return memory::expand_home(it->second.as_string());
  return {};
}

/// /memory search TEXT and /forget ID|--all|--match TEXT, through the same code as `lal memory`.
void memory_repl_command(const std::string& db, const std::string& user, const std::string& cmd,
                         const std::string& arg) {
  if (db.empty()) {
    std::cout << "このパイプラインには long_term 記憶がありません\n";
    return;
  }
  try {
    memory::DbOptions o;
    o.path = db;
    o.owner = "memory";
    memory::MemoryStore store(o);
    if (cmd == "/memory") {
      const auto found = search_memories(load_index(store, user), arg, 10);
      if (found.empty()) std::cout << "（思い出せるものはありません）\n";
      print_recalled(std::cout, found);
      return;
    }
    std::vector<std::int64_t> ids;
    const bool all = arg == "--all";
    const std::string match = arg.rfind("--match ", 0) == 0 ? arg.substr(8) : "";
    if (!all && match.empty()) {
      std::size_t used = 0;
      try {
        ids.push_back(std::stoll(arg, &used));
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != arg.size()) {
        std::cout << "使い方: /forget ID | /forget --all | /forget --match テキスト\n";
        return;
      }
    }
    std::cout << store.forget(user, ids, match, all) << " 件の記憶を忘れました\n";
  } catch (const std::exception& e) {
    std::cout << "記憶を操作できませんでした: " << e.what() << "\n";
  }
}

const char* kHelpJa =
    "/help     このヘルプ\n"
    "/memory   長期記憶で活性の高いもの（/memory search テキスト で検索）\n"
    "/forget   記憶を忘れる: /forget ID | /forget --all | /forget --match テキスト\n"
    "/emotion  いまの感情状態\n"
    "/exit     終了（Ctrl-D でも）\n"
    "Ctrl-C    考えている途中のターンを中断（チャットは続きます）\n";

void show_emotion(const std::shared_ptr<const EmotionState>& state) {
  if (!state) {
    std::cout << "（感情状態はまだありません）\n";
    return;
  }
  std::cout << "感情: " << state->label << "  valence " << state->valence << ", arousal " << state->arousal
            << ", dominance " << state->dominance << "\n";
}

int chat_command(const std::vector<std::string>& args) {
  po::options_description desc("Options");
  add_common_options(desc);
  add_chat_options(desc);
  desc.add_options()("user", po::value<std::string>()->default_value("default"),
                     "whose conversation this is: memories are kept per user");
  po::variables_map vm;
  if (!parse_command_line("chat",
                          "[--config FILE] [--model_path DIR] [--output text|jsonl] [--memory_db FILE] "
                          "[--user NAME] [--hide_thoughts] [--seed N] [--device auto|cpu|cuda] "
                          "[--plugin_path DIR] [--set PATH=VALUE]",
                          args, desc, {}, vm))
    return 0;
  const ChatOptions options = chat_options_from(vm);
  const std::string user = vm["user"].as<std::string>();
  if (user.empty()) throw UsageError("--user must not be empty");

  ChatSession session = start_chat_session(options);
  runtime::Runtime& rt = *session.runtime;

  std::mutex emotion_mu;
  std::shared_ptr<const EmotionState> emotion;
  if (!session.emotion_topic.empty())
    rt.observe<EmotionState>(session.emotion_topic, [&](const Delivery<EmotionState>& m) {
      std::lock_guard<std::mutex> lk(emotion_mu);
      if (m.header.user == user) emotion = m.body;
    });

  const bool interactive = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  struct sigaction sa {};
  sa.sa_handler = on_chat_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);  // no SA_RESTART: Ctrl-C interrupts the read at the prompt too
  struct sigaction term {};
  term.sa_handler = on_chat_sigterm;
  sigemptyset(&term.sa_mask);
  sigaction(SIGTERM, &term, nullptr);
  const std::string memory_db = memory_db_of(rt.spec());

  // The model and the dtype chosen (and why: `--dtype auto`) go to stderr at start also when stdin is not a
  // terminal (scripts, `--output jsonl`): stdout stays the conversation.
  std::cerr << "lal chat — " << session.model_description << "\n";
  if (interactive) std::cerr << "/help でコマンド一覧、/exit で終了\n";
  int exit_code = 0;
  while (true) {
    if (interactive) std::cout << "\nあなた> " << std::flush;
    std::string line;
    g_interrupts = 0;
    if (g_terminate || !std::getline(std::cin, line)) {
      if (g_interrupts && interactive && !g_terminate) {  // Ctrl-C at the prompt: keep chatting
        std::cin.clear();
        clearerr(stdin);
        std::cout << "\n（/exit で終了します）";
        continue;
      }
      break;  // EOF
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    if (line[0] == '/') {
      const std::string cmd = line.substr(0, line.find(' '));
      if (cmd == "/exit" || cmd == "/quit") break;
      if (cmd == "/help") {
        std::cout << kHelpJa;
      } else if (cmd == "/emotion") {
        std::lock_guard<std::mutex> lk(emotion_mu);
        if (session.emotion_topic.empty())
          std::cout << "このパイプラインには感情状態を出すモジュールがありません\n";
        else
          show_emotion(emotion);
      } else if (cmd == "/forget" || (cmd == "/memory" && line.rfind("/memory search ", 0) == 0)) {
        memory_repl_command(memory_db, user, cmd, line.substr(cmd == "/forget" ? std::min(line.size(), cmd.size() + 1)
                                                                                : std::string("/memory search ").size()));
      } else if (cmd == "/memory") {
        if (session.memory_topics.empty()) {
          std::cout << "このパイプラインには記憶モジュールがありません\n";
        } else {
          RecallRequest req;  // an empty cue asks each tier for its most active memories
          req.limit = 10;
          std::size_t shown = 0;
          for (const auto& topic : session.memory_topics) {
            try {
              auto reply = rt.request<RecallRequest, RecallReply>(topic, req, user, std::chrono::seconds(5));
              for (const auto& item : reply->items) {
                ++shown;
                std::cout << "- [" << item.tier << "/" << item.kind << "] " << item.text << "  (activation "
                          << item.activation << ")\n";
              }
            } catch (const std::exception& e) {
              std::cout << "記憶を読めませんでした (" << topic << "): " << e.what() << "\n";
            }
          }
          if (!shown) std::cout << "（まだ何も覚えていません）\n";
        }
      } else {
        std::cout << "知らないコマンドです: " << cmd << "（/help で一覧）\n";
      }
      continue;
    }
    const TurnId turn = rt.submit(line, user);
    bool cancelled = false;
    while (!rt.wait_idle(std::chrono::milliseconds(50))) {
      if (g_interrupts && !cancelled) {
        rt.cancel_turn(turn);
        cancelled = true;
        std::cout << "\n（中断しました）" << std::flush;
      }
    }
    std::cout << std::flush;
    if (rt.failed()) {
      std::cerr << "lal chat: the pipeline stopped: " << rt.failure() << "\n";
      exit_code = 1;
      break;
    }
  }
  if (interactive) std::cout << "\n";
  rt.stop();
  // A memory that could not be written is kept for the next start, and the user is told (lal/memory/write_queue.hpp).
  if (!memory_db.empty() && fs::exists(memory::pending_file_of(memory_db))) {
    std::cerr << "lal chat: some memories could not be written to " << memory_db << "; they are kept in "
              << memory::pending_file_of(memory_db) << " and will be stored at the next start\n";
    exit_code = exit_code ? exit_code : 3;
  }
  return exit_code;
}

}  // namespace

LAL_COMMAND("chat", "chat with the thinking pipeline (staged thoughts, then the answer)", chat_command);

}  // namespace lal::cli
