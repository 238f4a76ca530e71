"""Download-on-first-use and `lal pull` against a mock Hugging Face Hub on 127.0.0.1 (nothing beyond loopback).

    /usr/bin/python3 tests/hub/hub_e2e.py LAL_BINARY WORK_DIR

Checks
  1. First use of a hub id in `lal chat` downloads the model, then chats; the cache is laid out as huggingface_hub
     lays it out (blobs named by sha256 / git sha1, snapshots/<commit>/<file> relative symlinks, refs/main holding
     the commit without a newline), and only the files lal needs were fetched.
  2. A second use (`lal generate`) sends no request at all, and generates exactly what the same model generates
     from a plain directory. `lal bench generate` downloads on first use too; `lal distill --dry_run` fetches only
     the config.
  3. A download cut halfway resumes with a Range request (in the same run, and from an .incomplete file left by an
     earlier run), and the result verifies.
  4. A corrupted blob is refused: non-zero exit, a message saying so, nothing of it left in the cache.
  5. A gated model: 401 without a token (the message names the model page), success with HF_TOKEN and with the
     token file, 403 with a wrong token.
  6. Offline (HF_HUB_OFFLINE=1, --offline): a cached model works without any request; an absent one fails cleanly.
  7. Sharded weights: the index decides which shards are fetched. --include picks files. 503 is retried, 404 not.
  8. A proxy from the environment (http_proxy) is used.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
sys.path.insert(0, HERE)
import st_io  # noqa: E402
from mock_hub import MockHub, git_blob_sha1  # noqa: E402

LAL, WORK = sys.argv[1], sys.argv[2]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)
    return cond


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
MODEL = os.path.join(WORK, "model")
subprocess.run(["/usr/bin/python3", os.path.join(HERE, "..", "chat", "make_chat_model.py"), MODEL], check=True)
files = {name: open(os.path.join(MODEL, name), "rb").read() for name in sorted(os.listdir(MODEL))}
check("model.safetensors" in files and "config.json" in files and "tokenizer.json" in files,
      "make_chat_model.py wrote config.json, tokenizer.json, model.safetensors: %s" % sorted(files))
# What a real repository carries besides: files lal must not fetch.
decoys = {"README.md": b"# tiny\n", "pytorch_model.bin": b"\0" * 4096, "onnx/model.onnx": b"onnx" * 100}

hub = MockHub().start()
HF_HOME = os.path.join(WORK, "hf")
CACHE = os.path.join(HF_HOME, "hub")
base_env = {k: v for k, v in os.environ.items()
            if not k.upper().startswith(("HF_", "HUGGING", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"))}
base_env.update({"HF_ENDPOINT": hub.url, "HF_HOME": HF_HOME, "no_proxy": "127.0.0.1,localhost", "OMP_NUM_THREADS": "1"})


def lal(*args, env=None, stdin="", expect_rc=0, timeout=600):
    e = dict(base_env)
    e.update(env or {})
    p = subprocess.run([LAL, *args], input=stdin, capture_output=True, text=True, env=e, timeout=timeout)
    if p.returncode != expect_rc:
        print("$ lal", " ".join(args), "->", p.returncode, "\n", p.stdout[-2000:], "\n", p.stderr[-3000:])
    check(p.returncode == expect_rc, "lal %s exited %d, expected %d" % (" ".join(args), p.returncode, expect_rc))
    return p


def repo_dir(name):
    return os.path.join(CACHE, "models--" + name.replace("/", "--"))


def fetched(requests):
    return sorted(r["path"].split("/resolve/", 1)[1].split("/", 1)[1] for r in requests if "/resolve/" in r["path"])


LAL_FILES = sorted(files)  # config, generation config (if any), tokenizer files, model.safetensors

# --- 1. first use downloads, then chats; the cache layout is huggingface_hub's -------------------------------------
tiny = hub.add_repo("lal-test/tiny-chat", {**files, **decoys})
p = lal("chat", "--model_path", "lal-test/tiny-chat", "--output", "jsonl", "--memory_db", os.path.join(WORK, "m.db"),
        stdin="こんにちは\n")
reqs = hub.take_requests()
check(any(r["path"].startswith("/api/models/lal-test/tiny-chat/revision/main") for r in reqs),
      "first use asked for the model info: %s" % reqs)
check(fetched(reqs) == LAL_FILES, "first use fetched exactly the files lal needs: %s vs %s" % (fetched(reqs), LAL_FILES))
check(any(json.loads(line).get("kind") == "answer" for line in p.stdout.splitlines() if line.startswith("{")),
      "lal chat answered after downloading")

root = repo_dir("lal-test/tiny-chat")
check(sorted(os.listdir(root)) == ["blobs", "refs", "snapshots"], "repo folder holds blobs, refs, snapshots: %s"
      % os.listdir(root))
ref = open(os.path.join(root, "refs", "main"), "rb").read()
check(ref == tiny.commit.encode(), "refs/main is the commit without newline: %r" % ref)
check(os.listdir(os.path.join(root, "snapshots")) == [tiny.commit], "one snapshot named by the commit")
snap = os.path.join(root, "snapshots", tiny.commit)
for name in LAL_FILES:
    link = os.path.join(snap, name)
    data = files[name]
    blob = hashlib.sha256(data).hexdigest() if name.endswith(".safetensors") else git_blob_sha1(data)
    if check(os.path.islink(link), "%s is a symlink" % name):
        check(os.readlink(link) == "../../blobs/" + blob, "%s -> %s (relative, named by %s)" % (
            name, os.readlink(link), "sha256" if name.endswith(".safetensors") else "git blob sha1"))
        check(open(link, "rb").read() == data, "%s content intact" % name)
blobs = sorted(os.listdir(os.path.join(root, "blobs")))
check(len(blobs) == len(LAL_FILES) and not any(b.endswith(".incomplete") for b in blobs), "blobs: %s" % blobs)
check(all(not os.path.islink(os.path.join(root, "blobs", b)) for b in blobs), "blobs are plain files")
check(os.path.isdir(os.path.join(CACHE, ".locks", "models--lal-test--tiny-chat")), ".locks/models--org--name exists")
check(p.stderr.count("downloading") == 1, "a non-TTY stderr gets one start line, no bars: %r" % p.stderr[-500:])

# --- 2. second use: no request at all; same output as from the plain directory --------------------------------------
gen = ["generate", "--prompt", "こんにちは", "--max_new_tokens", "8", "--greedy", "--ids"]
from_hub = lal(*gen, "--model_path", "lal-test/tiny-chat")
check(hub.take_requests() == [], "second use sends no request")
from_dir = lal(*gen, "--model_path", MODEL)
check(from_hub.stdout == from_dir.stdout and from_hub.stdout.strip(), "hub id and directory generate the same: %r %r"
      % (from_hub.stdout, from_dir.stdout))
p = lal("pull", "lal-test/tiny-chat")
check(p.stdout.strip() == snap, "lal pull prints the snapshot: %r" % p.stdout)
check(fetched(hub.take_requests()) == [], "lal pull of a cached model downloads nothing")

# bench and distill take hub ids too; a distill plan (--dry_run) fetches only the config, never the weights.
hub.add_repo("lal-test/bench", files)
lal("bench", "generate", "--model_path", "lal-test/bench", "--batch", "1", "--prompt_len", "4", "--new_tokens", "2")
check(fetched(hub.take_requests()) == LAL_FILES, "lal bench generate downloads on first use")
hub.add_repo("lal-test/teacher", files)
p = lal("distill", "--teacher_model", "lal-test/teacher", "--dry_run", "--output_dir", os.path.join(WORK, "distilled"))
got = fetched(hub.take_requests())
check(got == sorted(n for n in ("config.json", "generation_config.json") if n in files),
      "distill --dry_run fetched the config only: %s" % got)
check("models--lal-test--teacher" in p.stdout, "the plan names the cached teacher: %r" % p.stdout[:400])

# --- 3. resume -----------------------------------------------------------------------------------------------------
cut = hub.add_repo("lal-test/cut", files)
cut.cut_once.add("model.safetensors")
p = lal("pull", "lal-test/cut")
reqs = [r for r in hub.take_requests() if r["path"].endswith("/model.safetensors")]
half = len(files["model.safetensors"]) // 2
check([r["range"] for r in reqs] == [None, "bytes=%d-" % half],
      "a cut download resumes with Range from the cut (%d): %s" % (half, [r["range"] for r in reqs]))
check("retry" in p.stderr, "the retry is reported: %r" % p.stderr[-400:])
sha = hashlib.sha256(files["model.safetensors"]).hexdigest()
check(open(os.path.join(repo_dir("lal-test/cut"), "blobs", sha), "rb").read() == files["model.safetensors"],
      "the resumed blob is whole")

# An .incomplete left by an earlier (killed) run is resumed, not restarted.
left = hub.add_repo("lal-test/left-over", files)
os.makedirs(os.path.join(repo_dir("lal-test/left-over"), "blobs"))
third = len(files["model.safetensors"]) // 3
with open(os.path.join(repo_dir("lal-test/left-over"), "blobs", sha + ".incomplete"), "wb") as f:
    f.write(files["model.safetensors"][:third])
lal("pull", "lal-test/left-over")
reqs = [r for r in hub.take_requests() if r["path"].endswith("/model.safetensors")]
check([r["range"] for r in reqs] == ["bytes=%d-" % third], "a left-over .incomplete resumes: %s" % reqs)
check(open(os.path.join(repo_dir("lal-test/left-over"), "blobs", sha), "rb").read() == files["model.safetensors"],
      "the blob resumed from a left-over file is whole")

# --- 4. a corrupted blob is refused --------------------------------------------------------------------------------
bad = hub.add_repo("lal-test/corrupt", files)
bad.corrupt.add("model.safetensors")  # one byte flipped in transit
bad_sha = sha
p = lal("generate", "--model_path", "lal-test/corrupt", "--prompt_ids", "1,2", "--max_new_tokens", "1", expect_rc=1)
check("failed verification" in p.stderr and "sha256" in p.stderr and "deleted" in p.stderr,
      "the sha256 mismatch is reported and the file deleted: %r" % p.stderr[-600:])
bdir = os.path.join(repo_dir("lal-test/corrupt"), "blobs")
check(not os.path.exists(os.path.join(bdir, bad_sha)) and not os.path.exists(os.path.join(bdir, bad_sha + ".incomplete")),
      "nothing of the corrupted blob is kept: %s" % os.listdir(bdir))
snapshot_files = []
for d, _, names in os.walk(os.path.join(repo_dir("lal-test/corrupt"), "snapshots")):
    snapshot_files += names
check("model.safetensors" not in snapshot_files, "no snapshot link to the refused blob")
check(not os.path.exists(os.path.join(repo_dir("lal-test/corrupt"), "refs", "main")), "no ref to an incomplete model")
hub.take_requests()

# --- 5. gated: 401 without a token, 403 with a wrong one, success with HF_TOKEN and with the token file -------------
hub.add_repo("lal-test/gated", files, token="hf_secret_for_tests")
p = lal("pull", "lal-test/gated", expect_rc=1)
check("401" in p.stderr and hub.url + "/lal-test/gated" in p.stderr and "HF_TOKEN" in p.stderr,
      "401 names the model page and HF_TOKEN: %r" % p.stderr)
check(len(hub.take_requests()) == 1, "a 401 is not retried")
p = lal("pull", "lal-test/gated", env={"HF_TOKEN": "hf_wrong"}, expect_rc=1)
check("403" in p.stderr and "HF_TOKEN" in p.stderr and hub.url + "/lal-test/gated" in p.stderr,
      "403 says the token from HF_TOKEN has no access: %r" % p.stderr)
hub.take_requests()
p = lal("pull", "lal-test/gated", env={"HF_TOKEN": "hf_secret_for_tests"})
reqs = hub.take_requests()
check(fetched(reqs) == LAL_FILES and all(r["authorization"] == "Bearer hf_secret_for_tests" for r in reqs),
      "HF_TOKEN is sent and the gated model arrives")
# As on the real Hub: the model info of a gated model is public, its files are not.
hub.add_repo("lal-test/gated-files", files, token="hf_secret_for_tests", info_public=True)
p = lal("pull", "lal-test/gated-files", expect_rc=1)
check("401" in p.stderr and hub.url + "/lal-test/gated-files" in p.stderr and "download of" in p.stderr,
      "a 401 on a file names the file and the model page: %r" % p.stderr)
check(not os.path.exists(os.path.join(repo_dir("lal-test/gated-files"), "refs")), "no ref after a refused download")
hub.take_requests()
hub.add_repo("lal-test/gated2", files, token="hf_secret_for_tests")
with open(os.path.join(HF_HOME, "token"), "w") as f:
    f.write("hf_secret_for_tests\n")
lal("pull", "lal-test/gated2")
os.remove(os.path.join(HF_HOME, "token"))
check(fetched(hub.take_requests()) == LAL_FILES, "the token file $HF_HOME/token is used")

# --- 6. offline ----------------------------------------------------------------------------------------------------
p = lal("generate", "--model_path", "lal-test/absent", "--prompt_ids", "1", "--max_new_tokens", "1",
        env={"HF_HUB_OFFLINE": "1"}, expect_rc=1)
check("offline" in p.stderr and "lal pull lal-test/absent" in p.stderr and "\n" == p.stderr[-1:] and
      p.stderr.count("\n") <= 2, "offline + absent: one clear message: %r" % p.stderr)
p = lal("pull", "--offline", "lal-test/absent", expect_rc=1)
check("not in the local Hugging Face cache" in p.stderr, "pull --offline of an absent model: %r" % p.stderr)
p = lal("pull", "--offline", "lal-test/tiny-chat")
check(p.stdout.strip() == snap, "pull --offline finds the cached model")
lal(*gen, "--model_path", "lal-test/tiny-chat", env={"HF_HUB_OFFLINE": "1"})
check(hub.take_requests() == [], "offline mode sends no request")

# --- 7. sharded weights, --include, retries ------------------------------------------------------------------------
tensors = st_io.load(os.path.join(MODEL, "model.safetensors"))
names = sorted(tensors)
shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
          "model-00002-of-00002.safetensors": names[len(names) // 2:]}
sharded = {n: d for n, d in files.items() if n != "model.safetensors"}
for shard, keys in shards.items():
    path = os.path.join(WORK, shard)
    st_io.save(path, {k: tensors[k] for k in keys})
    sharded[shard] = open(path, "rb").read()
sharded["model.safetensors.index.json"] = json.dumps(
    {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}).encode()
sharded["model-old-unused.safetensors"] = b"\0" * 1000  # in the repo, not in the index: not fetched
hub.add_repo("lal-test/sharded", sharded)
p = lal(*gen, "--model_path", "lal-test/sharded")
check(p.stdout == from_dir.stdout, "the sharded model generates as the single-file one: %r" % p.stdout)
got = fetched(hub.take_requests())
check(got == sorted(n for n in sharded if n != "model-old-unused.safetensors"),
      "the index decides the shards: %s" % got)

hub.add_repo("lal-test/include", {**files, **decoys})
p = lal("pull", "lal-test/include", "--include", "*.json", "--include", "onnx/*")
got = fetched(hub.take_requests())
check(got == sorted([n for n in files if n.endswith(".json")] + ["onnx/model.onnx"]), "--include: %s" % got)
nested = os.path.join(p.stdout.strip(), "onnx", "model.onnx")
check(os.path.islink(nested) and os.readlink(nested).startswith("../../../blobs/"),
      "a nested file links with one more ../: %s" % (os.readlink(nested) if os.path.islink(nested) else "missing"))

flaky = hub.add_repo("lal-test/flaky", files)
flaky.fail_info = 2
p = lal("pull", "lal-test/flaky")
reqs = hub.take_requests()
check(sum(r["path"].startswith("/api/models/lal-test/flaky") for r in reqs) == 3, "503 is retried (2 failures + 1)")
p = lal("pull", "lal-test/flaky@v9", expect_rc=1)
check(len(hub.take_requests()) == 1 and "404" in p.stderr, "404 (unknown revision) is not retried: %r" % p.stderr)
p = lal("pull", "lal-test/nope", expect_rc=1)
check("lal-test/nope" in p.stderr and "401" in p.stderr, "a missing repository: %r" % p.stderr)
hub.take_requests()

# --- 8. proxy from the environment ---------------------------------------------------------------------------------
hub.add_repo("lal-test/proxied", files)
p = lal("pull", "lal-test/proxied", "--include", "config.json",
        env={"HF_ENDPOINT": "http://hub.lal-test.invalid", "http_proxy": hub.url, "no_proxy": ""})
reqs = hub.take_requests()
check(len(reqs) == 2 and all(r["proxied_host"] == "hub.lal-test.invalid" for r in reqs),
      "requests went through http_proxy: %s" % reqs)

hub.stop()
if failures:
    print("%d check(s) failed" % len(failures))
    sys.exit(1)
print("hub e2e: all checks passed")
