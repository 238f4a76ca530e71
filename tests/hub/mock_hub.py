"""A Hugging Face Hub double on 127.0.0.1, for the lal hub tests: the model-info API and resolve/{rev}/{file},
with gated repositories, HTTP Range, and injectable faults (a connection cut halfway, corrupted bytes, 503s).

    hub = MockHub(); hub.add_repo("org/name", {"config.json": b"...", ...}); hub.start()
    hub.url, hub.requests (what was asked: path, Range header, Authorization header), hub.stop()

The JSON and headers follow the real Hub: `GET /api/models/{repo}/revision/{rev}?blobs=true` answers
{"id", "sha", "siblings": [{"rfilename", "blobId", "size", "lfs": {"sha256", "size", "pointerSize"}}]}; missing
repositories and refused tokens answer 401/403 with X-Error-Code (RepoNotFound, GatedRepo).
"""
import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    def __init__(self, name, files, token=None, info_public=False, lfs_suffixes=(".safetensors", ".bin")):
        # token: the repository is gated; info_public: as on the real Hub, its model info is public and only the
        # files need the token.
        self.name, self.files, self.token, self.info_public = name, dict(files), token, info_public
        self.commit = hashlib.sha1(("commit:" + name).encode()).hexdigest()
        self.lfs = {p for p in files if p.endswith(lfs_suffixes)}
        self.cut_once = set()  # paths whose next full GET stops halfway (connection closed)
        self.corrupt = set()  # paths served with one byte flipped
        self.fail_info = 0  # answer the next N model-info requests with 503

    def sibling(self, path):
        data = self.files[path]
        s = {"rfilename": path, "blobId": git_blob_sha1(data), "size": len(data)}
        if path in self.lfs:
            s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            s["blobId"] = hashlib.sha1(("pointer:" + path).encode() + data[:64]).hexdigest()
        return s


class MockHub:
    def __init__(self):
        self.repos, self.requests, self.lock = {}, [], threading.Lock()

    def add_repo(self, name, files, **kw):
        self.repos[name] = Repo(name, files, **kw)
        return self.repos[name]

    def start(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                hub.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def take_requests(self):
        with self.lock:
            r, self.requests = self.requests, []
        return r

    # --- request handling -------------------------------------------------------------------------------------
    def reply(self, h, status, body=b"", headers=None):
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def error(self, h, status, code, message):
        self.reply(h, status, json.dumps({"error": message}).encode(),
                   {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message})

    def authorized(self, h, repo):
        if repo.token is None:
            return True
        auth = h.headers.get("Authorization")
        if auth is None:
            self.error(h, 401, "GatedRepo", "Access to model %s is restricted. You must have access to it and be "
                       "authenticated to access it. Please log in." % repo.name)
            return False
        if auth != "Bearer " + repo.token:
            self.error(h, 403, "GatedRepo", "Access to model %s is restricted and you are not in the authorized "
                       "list." % repo.name)
            return False
        return True

    def handle(self, h):
        path = h.path
        if path.startswith("http://"):  # through a proxy: absolute URI
            parts = urllib.parse.urlsplit(path)
            path = parts.path + ("?" + parts.query if parts.query else "")
            proxied_host = parts.netloc
        else:
            proxied_host = None
        with self.lock:
            self.requests.append({"path": path, "range": h.headers.get("Range"), "proxied_host": proxied_host,
                                  "authorization": h.headers.get("Authorization")})
        route, _, query = path.partition("?")
        segs = [urllib.parse.unquote(s) for s in route.split("/")[1:]]
        if len(segs) >= 6 and segs[:2] == ["api", "models"] and segs[4] == "revision":
            return self.model_info(h, segs[2] + "/" + segs[3], "/".join(segs[5:]), query)
        if len(segs) >= 5 and segs[2] == "resolve":
            return self.resolve(h, segs[0] + "/" + segs[1], segs[3], "/".join(segs[4:]))
        self.error(h, 404, "NotFound", "no route " + route)

    def find(self, h, name, revision, info=False):
        repo = self.repos.get(name)
        if repo is None:
            self.error(h, 401, "RepoNotFound", "Repository Not Found for url: " + h.path)
            return None
        if not (info and repo.info_public) and not self.authorized(h, repo):
            return None
        if revision not in ("main", repo.commit):
            self.error(h, 404, "RevisionNotFound", "Invalid rev id: " + revision)
            return None
        return repo

    def model_info(self, h, name, revision, query):
        repo = self.repos.get(name)
        if repo is not None and repo.fail_info > 0:
            repo.fail_info -= 1
            return self.error(h, 503, "ServiceUnavailable", "try again")
        repo = self.find(h, name, revision, info=True)
        if repo is None:
            return
        info = {"id": name, "modelId": name, "sha": repo.commit, "private": False, "gated": repo.token is not None,
                "siblings": [repo.sibling(p) for p in sorted(repo.files)]}
        self.reply(h, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def resolve(self, h, name, revision, file):
        repo = self.find(h, name, revision)
        if repo is None:
            return
        if file not in repo.files:
            return self.error(h, 404, "EntryNotFound", "%s does not exist on %s" % (file, revision))
        data = repo.files[file]
        if file in repo.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes",
                   "ETag": '"%s"' % (repo.sibling(file).get("lfs", {}).get("sha256") or git_blob_sha1(data))}
        start = 0
        rng = h.headers.get("Range")
        if rng:
            if not rng.startswith("bytes=") or not rng[6:].endswith("-"):
                return self.error(h, 400, "BadRange", "unsupported range " + rng)
            start = int(rng[6:-1])
            if start >= len(data):
                return self.reply(h, 416, b"", {"Content-Range": "bytes */%d" % len(data)})
        if file in repo.cut_once and not rng:
            repo.cut_once.discard(file)
            h.send_response(200)
            for k, v in headers.items():
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[:len(data) // 2])
            h.wfile.flush()
            h.close_connection = True
            return
        if rng:
            headers["Content-Range"] = "bytes %d-%d/%d" % (start, len(data) - 1, len(data))
            return self.reply(h, 206, data[start:], headers)
        self.reply(h, 200, data, headers)
