// The hub client: model info → the files lal needs → blobs (resume, verify, rename) → snapshot symlinks → refs.
#include "lal/hub/hub.hpp"

#include <fcntl.h>
#include <fnmatch.h>
#include <openssl/evp.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "http.hpp"
#include "progress.hpp"

namespace lal::hub {

namespace fs = std::filesystem;
using json = nlohmann::json;
using detail::HttpResponse;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : "";
}

bool env_true(const char* name) {
  std::string v = env(name);
  for (auto& c : v) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return v == "1" || v == "ON" || v == "YES" || v == "TRUE";
}

bool is_hex(const std::string& s, std::size_t length) {
  return s.size() == length && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f');
         });
}

std::string hf_home() {
  if (!env("HF_HOME").empty()) return env("HF_HOME");
  if (!env("XDG_CACHE_HOME").empty()) return (fs::path(env("XDG_CACHE_HOME")) / "huggingface").string();
  return (fs::path(env("HOME")) / ".cache" / "huggingface").string();
}

std::string token_path() {
  return env("HF_TOKEN_PATH").empty() ? (fs::path(hf_home()) / "token").string() : env("HF_TOKEN_PATH");
}

std::string read_first_line(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  return line;
}

/// Hex digest of a file: sha256, or git's blob sha1 ("blob <size>\0" + content) for files stored without LFS.
std::string file_digest(const fs::path& path, bool git_blob_sha1) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw HubError(path.string() + ": cannot read to verify it");
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), git_blob_sha1 ? EVP_sha1() : EVP_sha256(), nullptr);
  if (git_blob_sha1) {
    const std::string header = "blob " + std::to_string(fs::file_size(path)) + std::string(1, '\0');
    EVP_DigestUpdate(ctx.get(), header.data(), header.size());
  }
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &n);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < n; ++i) out += hex[md[i] >> 4], out += hex[md[i] & 15];
  return out;
}

void check_name_part(const std::string& spec, const std::string& part, const char* what) {
  const bool chars_ok = std::all_of(part.begin(), part.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
  if (!chars_ok || part.size() > 96 || part.find("--") != std::string::npos || part.find("..") != std::string::npos ||
      part.front() == '-' || part.front() == '.' || part.back() == '-' || part.back() == '.')
    throw HubError(spec + ": not a valid hub id: the " + what + " \"" + part +
                   "\" may use letters, digits, '-', '_' and '.', not '--' or '..', and not start or end with '-' "
                   "or '.' (expected org/name[@revision])");
}

/// A repository path from the server, safe to place under the snapshot directory.
bool safe_repo_path(const std::string& p) {
  if (p.empty() || p.front() == '/' || p.find('\\') != std::string::npos || p.find('\0') != std::string::npos)
    return false;
  std::stringstream ss(p);
  for (std::string part; std::getline(ss, part, '/');)
    if (part.empty() || part == "." || part == "..") return false;
  return true;
}

/// One file of the repository at a commit, as the model-info API describes it.
struct RepoFile {
  std::string path;     ///< in the repository ("config.json", "sub/dir/x")
  std::string blob_id;  ///< git blob sha1
  std::string sha256;   ///< LFS files only
  std::uint64_t size = 0;
  std::string cache_blob() const { return sha256.empty() ? blob_id : sha256; }
};

/// Paths of one repository in the cache.
struct CacheRepo {
  fs::path root, blobs, snapshots, refs, locks;
  CacheRepo(const HubSettings& settings, const HubId& id) {
    const fs::path cache(settings.cache_dir);
    root = cache / id.cache_folder();
    blobs = root / "blobs";
    snapshots = root / "snapshots";
    refs = root / "refs";
    locks = cache / ".locks" / id.cache_folder();
  }
};

std::string relative_blob_target(const std::string& repo_path, const std::string& blob) {
  // snapshots/<commit>/<repo_path> → ../../blobs/<blob>, one more ../ per directory in repo_path.
  std::string up = "../../";
  for (char c : repo_path)
    if (c == '/') up += "../";
  return up + "blobs/" + blob;
}

/// Files of the snapshot that a loadable model still lacks ({} when it is complete).
std::vector<std::string> missing_model_files(const fs::path& snapshot) {
  std::vector<std::string> missing;
  if (!fs::exists(snapshot / "config.json")) missing.push_back("config.json");
  const fs::path index = snapshot / "model.safetensors.index.json";
  if (fs::exists(index)) {
    try {
      std::ifstream in(index);
      const json j = json::parse(in);
      std::set<std::string> shards;
      for (const auto& [tensor, shard] : j.at("weight_map").items())
        if (shard.is_string()) shards.insert(shard.get<std::string>());
      for (const auto& s : shards)
        if (!fs::exists(snapshot / s)) missing.push_back(s);
    } catch (const std::exception&) {
      missing.push_back("model.safetensors.index.json (unreadable)");
    }
  } else if (!fs::exists(snapshot / "model.safetensors")) {
    missing.push_back("model.safetensors (or model.safetensors.index.json)");
  }
  return missing;
}

/// The commit a revision points at in the cache, or "".
std::string cached_commit(const CacheRepo& repo, const HubId& id) {
  if (is_hex(id.revision, 40)) return id.revision;
  const fs::path ref = repo.refs / id.revision;
  if (!fs::is_regular_file(ref)) return "";
  const std::string commit = read_first_line(ref);
  return is_hex(commit, 40) ? commit : "";
}

std::string model_page(const HubSettings& settings, const HubId& id) { return settings.endpoint + "/" + id.repo; }

std::string token_source(const HubSettings& settings) {
  if (settings.token.empty()) return "no token was sent";
  return !env("HF_TOKEN").empty() ? "with the token from HF_TOKEN" : "with the token from " + token_path();
}

/// The message for a refused request: names the model page, the token used, and what to do.
std::string http_failure(const HubSettings& settings, const HubId& id, const std::string& what, const HttpResponse& r) {
  std::string server = r.error_text;
  if (server.empty() && !r.body.empty() && r.body.size() < 500) {
    try {
      const json j = json::parse(r.body);
      if (j.is_object() && j.contains("error") && j["error"].is_string()) server = j["error"].get<std::string>();
    } catch (const std::exception&) {
    }
  }
  std::string msg =
      id.repo + ": " + what + " failed (HTTP " + std::to_string(r.status) + (server.empty() ? "" : ": " + server) + ")";
  if (r.status == 401 || r.status == 403 || r.error_code == "GatedRepo") {
    msg += ", " + token_source(settings) + ". ";
    if (r.status == 401 && settings.token.empty())
      msg += "The model is gated or private (or does not exist). If it is gated, accept its licence at " +
             model_page(settings, id) + " and set HF_TOKEN=hf_... (or put the token in " + token_path() + ")";
    else
      msg += "Your token has no access to this model: accept its licence at " + model_page(settings, id) +
             " with the account of that token (or check that the token is valid and may read gated repositories)";
  } else if (r.status == 404 || r.error_code == "RepoNotFound" || r.error_code == "RevisionNotFound") {
    msg += ". Check the model id and revision (" + model_page(settings, id) + ")";
  }
  return msg;
}

std::string offline_hint(const HubSettings& settings, const HubId& id, const CacheRepo& repo) {
  return "On a machine with network run `lal pull " + id.repo +
         (id.revision == "main" ? "" : " --revision " + id.revision) + "` (or `huggingface-cli download " + id.repo +
         "`) and copy " + repo.root.string() +
         " to the same place here (the cache is $HF_HUB_CACHE, else $HF_HOME/hub; now " + settings.cache_dir +
         "), or pass --model_path DIR";
}

/// Everything one pull needs: settings, id, cache paths, the commit, the files being fetched.
class Puller {
 public:
  Puller(const PullRequest& request, const HubSettings& settings)
      : request_(request), settings_(settings), repo_(settings, request.id) {}

  PullResult run() {
    if (settings_.offline) return from_cache_only();
    detail::Http http(settings_, &cancel_);
    fetch_info(http);
    result_.network_used = true;
    fs::create_directories(repo_.blobs);
    fs::create_directories(repo_.locks);
    std::vector<RepoFile> files = select();
    std::uint64_t needed = 0;
    std::vector<RepoFile> to_fetch;
    for (const auto& f : files) {
      const fs::path blob = repo_.blobs / f.cache_blob();
      if (fs::exists(blob)) continue;
      to_fetch.push_back(f);
      const fs::path partial = blob.string() + ".incomplete";
      const std::uint64_t have = fs::exists(partial) ? fs::file_size(partial) : 0;
      if (f.size > have) needed += f.size - have;
    }
    check_disk_space(repo_.blobs.string(), needed);
    if (!to_fetch.empty())
      board_.note("downloading " + std::to_string(to_fetch.size()) + " file(s) of " + request_.id.repo + "@" +
                  request_.id.revision + " (" + detail::human_bytes(needed) + ") into " + repo_.root.string());
    fetch_all(to_fetch);
    for (const auto& f : files) link(f);
    write_ref();
    result_.snapshot_dir = snapshot().string();
    for (const auto& f : files) result_.files.push_back(f.path);
    if (!to_fetch.empty())
      board_.note("done: " + std::to_string(result_.files_downloaded) + " file(s), " +
                  detail::human_bytes(result_.bytes_downloaded) + " → " + result_.snapshot_dir);
    return result_;
  }

 private:
  fs::path snapshot() const { return repo_.snapshots / result_.commit; }

  PullResult from_cache_only() {
    const HubId& id = request_.id;
    const std::string commit = cached_commit(repo_, id);
    const fs::path snap = repo_.snapshots / commit;
    const std::string why = " and offline mode is on (HF_HUB_OFFLINE=1 or --offline), so nothing is downloaded. ";
    if (commit.empty() || !fs::is_directory(snap))
      throw HubError(id.repo + "@" + id.revision + ": not in the local Hugging Face cache (looked for " +
                     (commit.empty() ? (repo_.refs / id.revision).string() : snap.string()) + ")," + why +
                     offline_hint(settings_, id, repo_));
    result_.commit = commit;
    result_.snapshot_dir = snap.string();
    if (request_.include.empty()) {
      const auto missing = missing_model_files(snap);
      if (!missing.empty()) {
        std::string list;
        for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
        throw HubError(id.repo + "@" + id.revision + ": the cached snapshot " + snap.string() + " lacks " + list + "," +
                       why + offline_hint(settings_, id, repo_));
      }
    }
    for (auto it = fs::recursive_directory_iterator(snap); it != fs::recursive_directory_iterator(); ++it) {
      if (it->is_directory()) continue;
      const std::string rel = fs::relative(it->path(), snap).generic_string();
      if (request_.include.empty() || matches_include(rel)) result_.files.push_back(rel);
    }
    std::sort(result_.files.begin(), result_.files.end());
    if (result_.files.empty())
      throw HubError(id.repo + ": no cached file matches --include," + why + offline_hint(settings_, id, repo_));
    return result_;
  }

  void fetch_info(detail::Http& http) {
    const HubId& id = request_.id;
    const std::string url =
        settings_.endpoint + "/api/models/" + id.repo + "/revision/" + http.escape(id.revision) + "?blobs=true";
    const HttpResponse r = http.get(url);
    if (r.status != 200) throw HubError(http_failure(settings_, id, "model info " + url, r));
    json info;
    try {
      info = json::parse(r.body);
    } catch (const json::parse_error& e) {
      throw HubError(url + ": the model info is not JSON (" + e.what() + "); is HF_ENDPOINT (" + settings_.endpoint +
                     ") a Hugging Face Hub?");
    }
    auto bad = [&](const std::string& what) {
      return HubError(url + ": unexpected model info: " + what + " (is HF_ENDPOINT a Hugging Face Hub?)");
    };
    if (!info.is_object() || !info.contains("sha") || !info["sha"].is_string() ||
        !is_hex(info["sha"].get<std::string>(), 40))
      throw bad("no 40-digit commit \"sha\"");
    result_.commit = info["sha"].get<std::string>();
    if (!info.contains("siblings") || !info["siblings"].is_array()) throw bad("no \"siblings\" list");
    for (const auto& s : info["siblings"]) {
      if (!s.is_object() || !s.contains("rfilename") || !s["rfilename"].is_string())
        throw bad("a sibling without \"rfilename\"");
      RepoFile f;
      f.path = s["rfilename"].get<std::string>();
      if (s.contains("blobId") && s["blobId"].is_string()) f.blob_id = s["blobId"].get<std::string>();
      if (s.contains("size") && s["size"].is_number_unsigned()) f.size = s["size"].get<std::uint64_t>();
      if (s.contains("lfs") && s["lfs"].is_object()) {
        const json& lfs = s["lfs"];
        if (!lfs.contains("sha256") || !lfs["sha256"].is_string() || !is_hex(lfs["sha256"].get<std::string>(), 64))
          throw bad(f.path + ": \"lfs\" without a sha256");
        f.sha256 = lfs["sha256"].get<std::string>();
        if (lfs.contains("size") && lfs["size"].is_number_unsigned()) f.size = lfs["size"].get<std::uint64_t>();
      }
      available_[f.path] = f;
    }
  }

  bool matches_include(const std::string& path) const {
    for (const auto& g : request_.include)
      if (fnmatch(g.c_str(), path.c_str(), 0) == 0) return true;
    return false;
  }

  const RepoFile& checked(const std::string& path) const {
    const RepoFile& f = available_.at(path);
    if (!safe_repo_path(f.path))
      throw HubError(request_.id.repo + ": the model info lists the file \"" + f.path +
                     "\", which is not a safe relative path; refusing it");
    if (!is_hex(f.blob_id, 40))
      throw HubError(request_.id.repo + ": the model info gives no git blob id for " + f.path +
                     " (is HF_ENDPOINT a Hugging Face Hub?)");
    return f;
  }

  std::string listing() const {
    std::string s;
    std::size_t n = 0;
    for (const auto& [path, f] : available_) {
      if (n++ == 12) return s + ", ...";
      s += (s.empty() ? "" : ", ") + path;
    }
    return s.empty() ? "(no files)" : s;
  }

  /// The files to fetch: --include globs, or what lal loads.
  std::vector<RepoFile> select() {
    const std::string where = request_.id.repo + "@" + request_.id.revision;
    std::vector<RepoFile> files;
    if (!request_.include.empty()) {
      for (const auto& [path, f] : available_)
        if (matches_include(path)) files.push_back(checked(path));
      if (files.empty()) throw HubError(where + ": no file matches --include; the repository has " + listing());
      return files;
    }
    static const char* kTextFiles[] = {"config.json",           "generation_config.json",  "tokenizer.json",
                                       "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                                       "chat_template.json"};
    if (!available_.count("config.json"))
      throw HubError(where + ": no config.json; this is not a transformers model (files: " + listing() + ")");
    for (const char* name : kTextFiles)
      if (available_.count(name)) files.push_back(checked(name));
    const std::string index = "model.safetensors.index.json";
    if (available_.count(index)) {
      // The index says which shards hold the weights; fetch it first to know them.
      const RepoFile& f = checked(index);
      fetch_all({f});
      link(f);
      files.push_back(f);
      json j;
      try {
        std::ifstream in(repo_.blobs / f.cache_blob());
        j = json::parse(in);
      } catch (const json::parse_error& e) {
        throw HubError(where + ": " + index + " is not valid JSON: " + e.what());
      }
      if (!j.contains("weight_map") || !j["weight_map"].is_object())
        throw HubError(where + ": " + index + " has no \"weight_map\" object");
      std::set<std::string> shards;
      for (const auto& [tensor, shard] : j["weight_map"].items()) {
        if (!shard.is_string()) throw HubError(where + ": " + index + ": weight_map[\"" + tensor + "\"] is not a name");
        shards.insert(shard.get<std::string>());
      }
      for (const auto& s : shards) {
        if (!available_.count(s)) throw HubError(where + ": " + index + " names " + s + ", which the repository lacks");
        files.push_back(checked(s));
      }
    } else if (available_.count("model.safetensors")) {
      files.push_back(checked("model.safetensors"));
    } else {
      throw HubError(where +
                     ": no model.safetensors or model.safetensors.index.json; lal reads safetensors weights "
                     "only (the repository has " +
                     listing() + ")");
    }
    return files;
  }

  /// Download `files` with up to settings.parallel_downloads at once; the first failure cancels the rest.
  void fetch_all(const std::vector<RepoFile>& files) {
    if (files.empty()) return;
    std::atomic<std::size_t> next{0};
    std::mutex error_mutex;
    std::string first_error;
    auto worker = [&] {
      try {
        detail::Http http(settings_, &cancel_);
        while (!cancel_) {
          const std::size_t i = next++;
          if (i >= files.size()) break;
          fetch_blob(http, files[i]);
        }
      } catch (const detail::Cancelled&) {
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (first_error.empty()) first_error = e.what();
        cancel_ = true;
      }
    };
    const std::size_t n = std::min<std::size_t>(std::max(1, settings_.parallel_downloads), files.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < n; ++i) threads.emplace_back(worker);
    worker();
    for (auto& t : threads) t.join();
    if (!first_error.empty()) throw HubError(first_error);
  }

  void fetch_blob(detail::Http& http, const RepoFile& f) {
    const fs::path blob = repo_.blobs / f.cache_blob();
    if (fs::exists(blob)) return;
    // Another process (lal or Python) may be fetching the same blob: wait for it, then use its result.
    const fs::path lock_path = repo_.locks / (f.cache_blob() + ".lock");
    const int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd < 0) throw HubError(lock_path.string() + ": cannot create the lock file: " + std::strerror(errno));
    struct Unlock {
      int fd;
      ~Unlock() { ::close(fd); }
    } unlock{lock_fd};
    while (flock(lock_fd, LOCK_EX) != 0)
      if (errno != EINTR) throw HubError(lock_path.string() + ": cannot lock: " + std::strerror(errno));
    if (fs::exists(blob)) return;

    const fs::path partial = blob.string() + ".incomplete";
    const std::uint64_t already = fs::exists(partial) ? fs::file_size(partial) : 0;
    const std::size_t slot = board_.start(f.path, f.size, already);
    std::string url = settings_.endpoint + "/" + request_.id.repo + "/resolve/" + result_.commit + "/";
    std::stringstream parts(f.path);
    std::string part, sep;
    while (std::getline(parts, part, '/')) url += sep + http.escape(part), sep = "/";
    HttpResponse r;
    try {
      r = http.download(url, partial.string(), [&](std::uint64_t have) { board_.update(slot, have); });
    } catch (...) {
      board_.finish(slot, false);
      throw;
    }
    if (r.status != 200 && r.status != 206) {
      board_.finish(slot, false);
      throw HubError(http_failure(settings_, request_.id, "download of " + f.path + " (" + url + ")", r));
    }
    const std::uint64_t got = fs::file_size(partial);
    const bool git = f.sha256.empty();
    const std::string expected = git ? f.blob_id : f.sha256;
    const std::string actual = file_digest(partial, git);
    if (actual != expected || (f.size && got != f.size)) {
      fs::remove(partial);
      board_.finish(slot, false);
      throw HubError(request_.id.repo + ": " + f.path + " failed verification: " + (git ? "git blob sha1" : "sha256") +
                     " " + actual + " (" + std::to_string(got) + " bytes), expected " + expected + " (" +
                     std::to_string(f.size) + " bytes). The downloaded file was deleted (" + partial.string() +
                     "); run the command again, and if this repeats the server (" + settings_.endpoint +
                     ") serves a corrupted file");
    }
    fs::rename(partial, blob);
    board_.finish(slot, true);
    std::lock_guard<std::mutex> lock(totals_mutex_);
    ++result_.files_downloaded;
    result_.bytes_downloaded += got - std::min(got, already);
  }

  void link(const RepoFile& f) {
    const fs::path link = snapshot() / f.path;
    const std::string target = relative_blob_target(f.path, f.cache_blob());
    fs::create_directories(link.parent_path());
    std::error_code ec;
    if (fs::is_symlink(link) && fs::read_symlink(link, ec).string() == target) return;
    fs::remove(link, ec);
    fs::create_symlink(target, link);
  }

  void write_ref() {
    if (request_.id.revision == result_.commit) return;  // a commit needs no ref (as in huggingface_hub)
    const fs::path ref = repo_.refs / request_.id.revision;
    if (fs::is_regular_file(ref) && read_first_line(ref) == result_.commit) return;
    fs::create_directories(ref.parent_path());
    const fs::path tmp = ref.string() + ".tmp" + std::to_string(::getpid());
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      out << result_.commit;
      if (!out.flush()) throw HubError(tmp.string() + ": cannot write");
    }
    fs::rename(tmp, ref);
  }

  const PullRequest& request_;
  const HubSettings& settings_;
  CacheRepo repo_;
  PullResult result_;
  std::map<std::string, RepoFile> available_;
  std::atomic<bool> cancel_{false};
  std::mutex totals_mutex_;
  detail::ProgressBoard board_{settings_.progress};
};

}  // namespace

std::optional<HubId> HubId::parse(const std::string& spec) {
  if (spec.empty() || spec[0] == '.' || spec[0] == '/' || spec[0] == '~') return std::nullopt;
  HubId id;
  std::string repo = spec;
  if (const auto at = spec.find('@'); at != std::string::npos) {
    repo = spec.substr(0, at);
    id.revision = spec.substr(at + 1);
  }
  const auto slash = repo.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == repo.size() ||
      repo.find('/', slash + 1) != std::string::npos)
    return std::nullopt;
  check_name_part(spec, repo.substr(0, slash), "organisation");
  check_name_part(spec, repo.substr(slash + 1), "model name");
  const std::string& rev = id.revision;
  const bool rev_ok =
      !rev.empty() && rev.size() <= 256 && rev.front() != '/' && rev.back() != '/' &&
      rev.find("..") == std::string::npos && rev.find("//") == std::string::npos &&
      std::all_of(rev.begin(), rev.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == '/';
      });
  if (!rev_ok)
    throw HubError(spec + ": not a valid revision \"" + rev +
                   "\" (a branch, tag or commit: letters, digits, '-', '_', '.', '/')");
  id.repo = repo;
  return id;
}

std::string HubId::cache_folder() const {
  const auto slash = repo.find('/');
  return "models--" + repo.substr(0, slash) + "--" + repo.substr(slash + 1);
}

HubSettings HubSettings::from_environment() {
  HubSettings s;
  if (!env("HF_ENDPOINT").empty()) s.endpoint = env("HF_ENDPOINT");
  while (!s.endpoint.empty() && s.endpoint.back() == '/') s.endpoint.pop_back();
  if (!env("HF_HUB_CACHE").empty())
    s.cache_dir = env("HF_HUB_CACHE");
  else if (!env("HUGGINGFACE_HUB_CACHE").empty())
    s.cache_dir = env("HUGGINGFACE_HUB_CACHE");
  else
    s.cache_dir = (fs::path(hf_home()) / "hub").string();
  s.token = env("HF_TOKEN");
  if (s.token.empty()) s.token = env("HUGGING_FACE_HUB_TOKEN");
  if (s.token.empty() && fs::is_regular_file(token_path())) s.token = read_first_line(token_path());
  s.offline = env_true("HF_HUB_OFFLINE");
  return s;
}

PullResult pull(const PullRequest& request, const HubSettings& settings) {
  try {
    return Puller(request, settings).run();
  } catch (const fs::filesystem_error& e) {
    throw HubError(request.id.repo + ": " + e.what());
  }
}

std::optional<std::string> cached_model_dir(const HubId& id, const HubSettings& settings) {
  const CacheRepo repo(settings, id);
  const std::string commit = cached_commit(repo, id);
  if (commit.empty()) return std::nullopt;
  const fs::path snap = repo.snapshots / commit;
  if (!fs::is_directory(snap) || !missing_model_files(snap).empty()) return std::nullopt;
  return snap.string();
}

std::string resolve_model_path(const std::string& spec) {
  return resolve_model_path(spec, HubSettings::from_environment());
}

std::string resolve_model_path(const std::string& spec, const HubSettings& settings) {
  if (spec.empty()) throw std::runtime_error("--model_path is empty");
  if (fs::is_directory(spec)) return spec;
  std::optional<HubId> id;
  try {
    id = HubId::parse(spec);
  } catch (const HubError& e) {
    throw HubError(spec + ": no such model directory, and " + std::string(e.what()).substr(spec.size() + 2));
  }
  if (!id) throw std::runtime_error(spec + ": no such model directory (nor a hub id org/name[@revision])");
  if (auto dir = cached_model_dir(*id, settings)) return *dir;
  try {
    return pull(PullRequest{*id, {}}, settings).snapshot_dir;
  } catch (const HubError& e) {
    // A mistyped relative path looks like a hub id: when the Hub does not know it either, say both.
    const std::string what = e.what();
    if (what.find("(HTTP 401") == std::string::npos && what.find("(HTTP 404") == std::string::npos) throw;
    throw HubError(what + " (and " + spec + " is not a local directory)");
  }
}

std::string resolve_model_config(const std::string& spec) {
  const HubSettings settings = HubSettings::from_environment();
  const std::optional<HubId> id = fs::is_directory(spec) ? std::nullopt : HubId::parse(spec);
  if (!id) return resolve_model_path(spec, settings);  // a directory, or the error for a bad path
  const CacheRepo repo(settings, *id);
  const std::string commit = cached_commit(repo, *id);
  if (!commit.empty() && fs::exists(repo.snapshots / commit / "config.json")) return (repo.snapshots / commit).string();
  if (settings.offline) return resolve_model_path(spec, settings);  // the offline error
  return pull(PullRequest{*id, {"config.json", "generation_config.json"}}, settings).snapshot_dir;
}

void check_disk_space(const std::string& dir, std::uint64_t bytes_needed) {
  struct statvfs st {};
  if (statvfs(dir.c_str(), &st) != 0) throw HubError(dir + ": cannot check free space: " + std::strerror(errno));
  const std::uint64_t free_bytes = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
  if (free_bytes < bytes_needed)
    throw HubError(dir + ": not enough disk space: the download needs " + detail::human_bytes(bytes_needed) +
                   " but only " + detail::human_bytes(free_bytes) +
                   " is free there. Free some space, or point HF_HUB_CACHE (or HF_HOME) at a larger disk");
}

}  // namespace lal::hub
