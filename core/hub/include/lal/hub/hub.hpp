// lal::hub — models from the Hugging Face Hub, in the cache that Python's huggingface_hub uses.
//
// One code path serves `lal pull` and every command that takes a model (`chat`, `generate`, `bench`, `distill
// --teacher_model`, `serve`): `resolve_model_path(spec)` returns a local directory for
//   - a directory (returned as is), or
//   - a hub id `org/name[@revision]`: the cached snapshot when it already holds a loadable model (no network at
//     all), otherwise the files lal needs are downloaded first (unless offline).
//
// The cache is huggingface_hub's layout, so Python tools and lal share one copy:
//   <cache>/models--org--name/blobs/<sha256 of LFS files | git blob sha1 of small files>
//   <cache>/models--org--name/snapshots/<commit>/<file>  → relative symlink ../../blobs/<id>
//   <cache>/models--org--name/refs/<revision>            the commit, no newline (absent when revision is a commit)
//   <cache>/.locks/models--org--name/<id>.lock           held while that blob downloads (flock)
// A download goes to blobs/<id>.incomplete, resumes with an HTTP Range request, is checked (sha256 for LFS files,
// git's blob sha1 for the others) and only then renamed into place.
//
// Environment (read by HubSettings::from_environment): HF_ENDPOINT, HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME,
// HF_TOKEN, HF_TOKEN_PATH (default $HF_HOME/token), HF_HUB_OFFLINE, and the proxy variables that libcurl reads
// (https_proxy, http_proxy, all_proxy, no_proxy).
//
// Threads: every function may be called from any thread; concurrent downloads of one blob, in one process or
// several, are serialised by the lock file. Progress goes to stderr. Torch-free.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace lal::hub {

/// Anything that stops a model from arriving: bad id, HTTP error, verification failure, no disk space, offline.
/// The message names the model, the file or URL, and what to do.
class HubError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// `org/name[@revision]`. Returns nullopt for anything that is not shaped like a hub id (a path such as
/// `./x`, `/abs/dir`, `a/b/c`); throws HubError for a hub-shaped id with invalid characters.
struct HubId {
  std::string repo;               ///< "org/name"
  std::string revision = "main";  ///< branch, tag or commit
  static std::optional<HubId> parse(const std::string& spec);
  std::string cache_folder() const;  ///< "models--org--name"
};

enum class ProgressMode { automatic, bars, lines, quiet };  ///< automatic: bars on a TTY stderr, else lines

struct HubSettings {
  std::string endpoint = "https://huggingface.co";  ///< HF_ENDPOINT (no trailing slash)
  std::string cache_dir;                            ///< the hub cache (the folder holding models--*)
  std::string token;                                ///< HF_TOKEN, else the token file; empty: anonymous
  bool offline = false;                             ///< HF_HUB_OFFLINE=1: never touch the network
  int parallel_downloads = 4;                       ///< files fetched at once
  int max_attempts = 5;                             ///< per request, on 5xx/429/connection errors
  double retry_base_seconds = 1.0;                  ///< backoff: base, 2×base, 4×base ... (capped at 30 s)
  ProgressMode progress = ProgressMode::automatic;
  /// Settings from the environment variables listed at the top of this file.
  static HubSettings from_environment();
};

struct PullRequest {
  HubId id;
  /// fnmatch globs on repository paths (`*` crosses `/`); empty: the files lal needs (config.json,
  /// generation_config.json, tokenizer files, chat template, model.safetensors or the index and its shards).
  std::vector<std::string> include;
};

struct PullResult {
  std::string snapshot_dir;          ///< <cache>/models--org--name/snapshots/<commit>
  std::string commit;                ///< 40 hex digits
  std::vector<std::string> files;    ///< repository paths present in the snapshot for this request
  std::size_t files_downloaded = 0;  ///< blobs fetched over the network by this call
  std::uint64_t bytes_downloaded = 0;
  bool network_used = false;  ///< false when the cache answered alone
};

/// Fetch `request` into the cache (or, offline, check that it is there) and return the snapshot.
/// Throws HubError. Safe to interrupt: the next call resumes partial downloads.
PullResult pull(const PullRequest& request, const HubSettings& settings);

/// A local model directory for `spec` (a directory or a hub id), downloading on first use. The one function
/// every command that takes a model calls (directly, or through lal::lm's engine). Throws HubError, or
/// std::runtime_error for a path that does not exist.
std::string resolve_model_path(const std::string& spec);
std::string resolve_model_path(const std::string& spec, const HubSettings& settings);

/// Like resolve_model_path, but only config.json (and generation_config.json) must be there: for plans and
/// estimates (`lal distill --dry_run`) that must not download a whole model. Returns a snapshot directory that may
/// lack the weights.
std::string resolve_model_config(const std::string& spec);

/// The cached snapshot for `id` that already holds a loadable model (config.json and all safetensors weights),
/// without any network access; nullopt when there is none.
std::optional<std::string> cached_model_dir(const HubId& id, const HubSettings& settings);

/// Throws HubError when the file system holding `dir` has fewer than `bytes_needed` bytes free for this user.
void check_disk_space(const std::string& dir, std::uint64_t bytes_needed);

}  // namespace lal::hub
