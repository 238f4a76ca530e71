// lal chat — talk to the thinking pipeline: staged thoughts stream while the answer forms.
#include <boost/dll/runtime_symbol_info.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <iostream>
#include <mutex>

#include "chat_session.hpp"
#include "memory_cli.hpp"
#include "lal/lm/engine.hpp"
#include "lal/lm/torch_language_model.hpp"
#include "lal/messages.hpp"

namespace lal::cli {

namespace fs = std::filesystem;

void add_chat_options(po::options_description& desc) {
  desc.add_options()("config", po::value<std::string>(), "pipeline YAML (default: configs/chat.yaml)")(
      "model_path", po::value<std::string>(),
      "model directory or hub id org/name[@rev] (fetched on first use; default: resources.model.path; "
      "'default' = the bundled demo model)")("device", po::value<std::string>(), "auto | cpu | cuda | cuda:N")(
      "dtype", po::value<std::string>(), "auto | float32 | bfloat16 | float16")(
      "chat_template", po::value<std::string>(),
      "chat template: the model's own by default; a built-in format (chatml, qwen2.5, qwen3, llama2, llama3, phi4) "
      "or a Jinja file")(
      "kernels", po::value<std::string>(), "auto | fused | torch: fused CUDA kernels (auto: on a GPU when built)")(
      "max_batch", po::value<int>(),
      "sequences the model decodes together (0: 16 on a GPU, 8 on the CPU; 1: one generation at a time)")(
      "prefix_cache_mb", po::value<long long>(), "conversation-prefix KV cache in MiB (-1: automatic, 0: off)")(
      "output", po::value<std::string>(), "text (stage-labelled thoughts, then the answer) | jsonl (one event per line)")(
      "memory_db", po::value<std::string>(), "SQLite file for long-term and procedural memory")(
      "hide_thoughts", "show only the answer")("seed", po::value<long long>(), "seed for every module that samples")(
      "plugin_path", po::value<std::vector<std::string>>()->composing(), "extra plugin directory (repeatable)")(
      "set", po::value<std::vector<std::string>>()->composing(),
      "override a pipeline value: --set modules.left_brain.config.max_tokens=64 (repeatable)");
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
    if (o.max_batch < 0) throw UsageError("--max_batch must be >= 0 (0: automatic)");
  }
  if (vm.count("prefix_cache_mb")) {
    o.prefix_cache_mb = vm["prefix_cache_mb"].as<long long>();
    if (o.prefix_cache_mb < -1) throw UsageError("--prefix_cache_mb must be >= -1 (-1: automatic, 0: off)");
  }
  str("output", o.output);
  str("memory_db", o.memory_db);
  if (!o.output.empty() && o.output != "text" && o.output != "jsonl")
    throw UsageError("--output must be text or jsonl, not '" + o.output + "'");
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

/// The topic wired to `port` of the first module using `plugin`, or "".
std::string topic_of(const runtime::PipelineSpec& spec, const std::string& plugin, const std::string& port) {
  for (const auto& m : spec.modules)
    if (m.plugin == plugin)
      if (const auto* w = m.wire(port)) return w->topic;
  return {};
}

std::string resolve_model(std::string path) {
  if (path.empty() || path == "default") {
    const fs::path bundled = fs::path(data_dir()) / "models" / "lal-demo";
    if (!fs::exists(bundled / "config.json"))
      throw std::runtime_error(
          "no model: the bundled demo model is not at " + bundled.string() +
          ". Pass --model_path DIR (a Hugging Face model directory, e.g. one saved by `lal distill`) or a hub id "
          "(downloaded on first use), e.g. --model_path Qwen/Qwen2.5-7B-Instruct");
    return bundled.string();
  }
  return path;
}

/// The model resource: resources.model.{path,device,dtype}, with command-line overrides.
std::shared_ptr<LanguageModel> load_model(const runtime::PipelineSpec& spec, const ChatOptions& options) {
  std::string model_path, device = "auto", dtype = "auto", chat_template;
  if (auto it = spec.resources.find("model"); it != spec.resources.end()) {
    if (!it->second.is_map())
      throw std::runtime_error(it->second.where().str() + ": resources.model must be a map {path, device, dtype, chat_template}");
    const auto& m = it->second.as_map();
    auto get = [&](const char* key, std::string& out) {
      if (auto f = m.find(key); f != m.end()) {
        if (!f->second.is_string())
          throw std::runtime_error(f->second.where().str() + ": resources.model." + key + " must be a string");
        out = f->second.as_string();
      }
    };
    get("path", model_path);
    get("device", device);
    get("dtype", dtype);
    get("chat_template", chat_template);
  }
  if (!options.model_path.empty()) model_path = options.model_path;
  if (!options.device.empty()) device = options.device;
  if (!options.dtype.empty()) dtype = options.dtype;
  if (!options.chat_template.empty()) chat_template = options.chat_template;

  lm::ModelOptions mo;
  mo.model_path = resolve_model(model_path);
  mo.device = device;
  mo.dtype = dtype;
  mo.chat_template = chat_template;
  if (!options.kernels.empty()) mo.kernels = options.kernels;
  mo.max_batch = options.max_batch;
  mo.prefix_cache_mb = options.prefix_cache_mb;
  spdlog::info("loading model {} ({}, {})", mo.model_path, device, dtype);
  return lm::load_language_model(mo);
}

}  // namespace

std::shared_ptr<LanguageModel> load_chat_model(const ChatOptions& options) {
  const std::string file =
      options.config.empty() ? (fs::path(data_dir()) / "configs" / "chat.yaml").string() : options.config;
  std::vector<runtime::fs::path> dirs(options.plugin_dirs.begin(), options.plugin_dirs.end());
  auto load = runtime::load_pipeline(file, dirs, options.extra_overrides);
  if (!load.ok()) throw std::runtime_error("invalid pipeline " + file + ":" + describe_errors(load));
  return load_model(load.spec, options);
}

ChatSession start_chat_session(const ChatOptions& options, runtime::RuntimeOptions runtime_options) {
  ChatSession session;
  session.config_file = options.config.empty() ? (fs::path(data_dir()) / "configs" / "chat.yaml").string()
                                               : options.config;
  std::vector<runtime::fs::path> dirs(options.plugin_dirs.begin(), options.plugin_dirs.end());

  // First pass: find which modules the options apply to (by plugin and by declared config keys).
  auto first = runtime::load_pipeline(session.config_file, dirs, options.extra_overrides);
  if (!first.ok()) throw std::runtime_error("invalid pipeline " + session.config_file + ":" + describe_errors(first));
  std::vector<runtime::Override> overrides = options.extra_overrides;
  bool has_output = false;
  for (const auto& m : first.spec.modules) {
    const auto& d = *m.loaded->descriptor;
    const std::string base = "modules." + m.id + ".";
    if (d.kind == ModuleKind::output_strategy) {
      has_output = true;
      if (options.output == "jsonl" && m.plugin != "jsonl") {
        overrides.push_back({base + "plugin", "jsonl"});
        // jsonl times events from the turn's percept (t_ms); other outputs have no such port.
        overrides.push_back({base + "inputs.percept", first.spec.input_topic});
      }
      if (options.output == "text" && m.plugin != "think_aloud" && m.plugin != "answer_only")
        overrides.push_back({base + "plugin", "think_aloud"});
      if (options.hide_thoughts) overrides.push_back({base + "config.hide_thoughts", "true"});
    }
    if (!options.memory_db.empty() && d.find_config("path") && d.kind == ModuleKind::memory_tier)
      overrides.push_back({base + "config.path", "\"" + options.memory_db + "\""});
    if (options.seed >= 0 && d.find_config("seed"))
      overrides.push_back({base + "config.seed", std::to_string(options.seed)});
  }
  if (!has_output) throw std::runtime_error(session.config_file + ": the pipeline has no output strategy module");
  if (options.hide_thoughts && options.output == "jsonl")
    throw UsageError("--hide_thoughts applies to --output text; jsonl always carries every event");

  auto load = runtime::load_pipeline(session.config_file, dirs, overrides);
  if (!load.ok()) throw std::runtime_error("invalid pipeline " + session.config_file + ":" + describe_errors(load));
  session.emotion_topic = topic_of(load.spec, "emotion", "state");
  session.memory_topic = topic_of(load.spec, "long_term", "recall");

  std::shared_ptr<LanguageModel> model = options.model ? options.model : load_model(first.spec, options);
  session.model_description = model->describe();

  session.runtime = std::make_unique<runtime::Runtime>(std::move(load.spec), std::move(runtime_options));
  session.runtime->register_service<LanguageModel>("model", model);
  session.runtime->start();
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
                          "[--user NAME] [--hide_thoughts] [--seed N] [--device auto|cpu|cuda]",
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

  if (interactive)
    std::cerr << "lal chat — " << session.model_description << "\n/help でコマンド一覧、/exit で終了\n";
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
          std::cout << "このパイプラインには emotion モジュールがありません\n";
        else
          show_emotion(emotion);
      } else if (cmd == "/forget" || (cmd == "/memory" && line.rfind("/memory search ", 0) == 0)) {
        memory_repl_command(memory_db, user, cmd, line.substr(cmd == "/forget" ? std::min(line.size(), cmd.size() + 1)
                                                                                : std::string("/memory search ").size()));
      } else if (cmd == "/memory") {
        if (session.memory_topic.empty()) {
          std::cout << "このパイプラインには long_term 記憶がありません\n";
        } else {
          RecallRequest req;  // an empty cue asks for the most active memories
          req.limit = 10;
          try {
            auto reply = rt.request<RecallRequest, RecallReply>(session.memory_topic, req, user,
                                                                std::chrono::seconds(5));
            if (reply->items.empty()) std::cout << "（まだ何も覚えていません）\n";
            for (const auto& item : reply->items)
              std::cout << "- [" << item.kind << "] " << item.text << "  (activation " << item.activation << ")\n";
          } catch (const std::exception& e) {
            std::cout << "記憶を読めませんでした: " << e.what() << "\n";
          }
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
