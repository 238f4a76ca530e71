// lal::hub without a network: hub ids, settings from the environment, the disk-space check, and resolution from the
// cache (a cached model is used without contacting the endpoint; offline mode refuses what is absent).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include "lal/hub/hub.hpp"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;
using namespace lal::hub;

namespace {

fs::path scratch(const std::string& name) {
  const auto d = fs::temp_directory_path() / ("lal_hub_test_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << text;
}

/// Settings that would fail loudly if anything touched the network: port 9 on loopback (discard, closed).
HubSettings no_network(const fs::path& cache) {
  HubSettings s;
  s.endpoint = "http://127.0.0.1:9";
  s.cache_dir = cache.string();
  s.max_attempts = 1;
  s.progress = ProgressMode::quiet;
  return s;
}

const std::string kCommit = "0123456789abcdef0123456789abcdef01234567";

}  // namespace

TEST_CASE("hub ids: org/name[@revision], paths are not ids, bad names are refused") {
  auto id = HubId::parse("Qwen/Qwen2.5-7B-Instruct");
  REQUIRE(id);
  CHECK(id->repo == "Qwen/Qwen2.5-7B-Instruct");
  CHECK(id->revision == "main");
  CHECK(id->cache_folder() == "models--Qwen--Qwen2.5-7B-Instruct");
  id = HubId::parse("elyza/ELYZA-Thinking-1.0-Qwen-32B@refs/pr/3");
  REQUIRE(id);
  CHECK(id->revision == "refs/pr/3");
  for (const char* not_an_id : {"", "./models/x", "/abs/dir", "~/m", "a/b/c", "plain-name", "/x", "org/"})
    CHECK_MESSAGE(!HubId::parse(not_an_id), not_an_id);
  CHECK_THROWS_WITH_AS(HubId::parse("org/na me"), doctest::Contains("not a valid hub id"), HubError);
  CHECK_THROWS_WITH_AS(HubId::parse("org/a--b"), doctest::Contains("'--'"), HubError);
  CHECK_THROWS_WITH_AS(HubId::parse("org/name@"), doctest::Contains("not a valid revision"), HubError);
  CHECK_THROWS_WITH_AS(HubId::parse("org/name@../../etc"), doctest::Contains("not a valid revision"), HubError);
}

TEST_CASE("settings come from the environment as huggingface_hub reads them") {
  const auto home = scratch("env");
  for (const char* v : {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH",
                        "HF_ENDPOINT", "HF_HUB_OFFLINE"})
    ::unsetenv(v);
  ::setenv("HF_HOME", home.c_str(), 1);
  HubSettings s = HubSettings::from_environment();
  CHECK(s.cache_dir == (home / "hub").string());
  CHECK(s.endpoint == "https://huggingface.co");
  CHECK(s.token.empty());
  CHECK(!s.offline);
  write(home / "token", "hf_from_file\n");
  ::setenv("HF_ENDPOINT", "https://mirror.example/", 1);
  ::setenv("HF_HUB_OFFLINE", "true", 1);
  s = HubSettings::from_environment();
  CHECK(s.token == "hf_from_file");
  CHECK(s.endpoint == "https://mirror.example");
  CHECK(s.offline);
  ::setenv("HF_TOKEN", "hf_from_env", 1);
  ::setenv("HF_HUB_CACHE", "/somewhere/else", 1);
  ::setenv("HF_HUB_OFFLINE", "0", 1);
  s = HubSettings::from_environment();
  CHECK(s.token == "hf_from_env");
  CHECK(s.cache_dir == "/somewhere/else");
  CHECK(!s.offline);
  for (const char* v : {"HF_HOME", "HF_HUB_CACHE", "HF_TOKEN", "HF_ENDPOINT", "HF_HUB_OFFLINE"}) ::unsetenv(v);
}

TEST_CASE("the disk-space check refuses a download larger than the free space") {
  const auto dir = scratch("disk");
  CHECK_NOTHROW(check_disk_space(dir.string(), 1024));
  CHECK_THROWS_WITH_AS(check_disk_space(dir.string(), std::uint64_t(1) << 62),
                       doctest::Contains("not enough disk space"), HubError);
}

TEST_CASE("a cached model resolves without the network, and offline refuses what is absent or incomplete") {
  const auto cache = scratch("cache");
  const auto repo = cache / "models--org--tiny";
  const auto snap = repo / "snapshots" / kCommit;
  write(repo / "blobs" / "aaaa", "{}");
  write(repo / "blobs" / "bbbb", "weights");
  fs::create_directories(snap);
  fs::create_symlink("../../blobs/aaaa", snap / "config.json");
  write(repo / "refs" / "main", kCommit);
  HubSettings s = no_network(cache);

  // Weights missing: not a usable cache entry; offline says what is missing.
  CHECK(!cached_model_dir(*HubId::parse("org/tiny"), s));
  s.offline = true;
  CHECK_THROWS_WITH_AS(resolve_model_path("org/tiny", s), doctest::Contains("lacks model.safetensors"), HubError);

  fs::create_symlink("../../blobs/bbbb", snap / "model.safetensors");
  CHECK(resolve_model_path("org/tiny", s) == snap.string());
  s.offline = false;  // still no request: the endpoint is closed and the call succeeds
  CHECK(resolve_model_path("org/tiny", s) == snap.string());
  CHECK(resolve_model_path("org/tiny@" + kCommit, s) == snap.string());

  s.offline = true;
  CHECK_THROWS_WITH_AS(resolve_model_path("org/absent", s),
                       doctest::Contains("offline mode is on (HF_HUB_OFFLINE=1 or --offline)"), HubError);
  CHECK_THROWS_WITH_AS(resolve_model_path("org/absent", s), doctest::Contains("lal pull org/absent"), HubError);
  CHECK_THROWS_WITH_AS(resolve_model_path("org/tiny@v2", s), doctest::Contains("refs/v2"), HubError);
  CHECK(resolve_model_path(cache.string(), s) == cache.string());
  CHECK_THROWS_WITH_AS(resolve_model_path("a/b/c", s), doctest::Contains("no such model directory"),
                       std::runtime_error);
  CHECK_THROWS_WITH_AS(resolve_model_path("no dir/x y", s), doctest::Contains("no such model directory"), HubError);
}

TEST_CASE("an unreachable endpoint is reported after the retries") {
  HubSettings s = no_network(scratch("unreachable"));
  s.max_attempts = 2;
  s.retry_base_seconds = 0.01;
  CHECK_THROWS_WITH_AS(resolve_model_path("org/tiny", s), doctest::Contains("gave up after 2 attempts"), HubError);
  CHECK_THROWS_WITH_AS(resolve_model_path("org/tiny", s), doctest::Contains("HF_HUB_OFFLINE=1 uses the local cache"),
                       HubError);
}
