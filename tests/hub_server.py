"""A Hugging Face Hub on 127.0.0.1 for tests: the HTTP endpoints `huggingface_hub` downloads through.

The hub is unreachable from the machines that run the tests, so the `hf://` tests point HF_ENDPOINT at
this server and let the real hub client (`HfApi.repo_info`, `hf_hub_download`) talk HTTP to it. It
answers as the hub does where the client looks (huggingface_hub's file_download.py and hf_api.py):

    GET       /api/models/OWNER/NAME[/revision/REV]    {"id", "sha", "siblings": [{"rfilename"}]}
    GET       /api/datasets/OWNER/NAME[/revision/REV]  the same for a dataset repository
    HEAD|GET  /OWNER/NAME/resolve/REV/FILE             a file: ETag, X-Repo-Commit, Content-Length,
    HEAD|GET  /datasets/OWNER/NAME/resolve/REV/FILE    Accept-Ranges; `Range: bytes=N-` answers 206

REV is "main" or the repository's commit (a fixed sha1 of its files). Misses answer 404 with the
hub's X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound), which the client turns into
its typed errors. `drop(file, after)` makes the next full GET of that file send its headers and
`after` bytes of the body, then close the connection: the dropped download a client must resume with
a Range request. Every request is recorded in `requests` (method, path, Range header).

Standard library only; repositories live in memory.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_API = re.compile(r"^/api/(models|datasets)/([^/]+/[^/]+)(?:/revision/([^/]+))?$")
_RESOLVE = re.compile(r"^/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class HubServer:
    """`with HubServer() as hub:` serves the repositories added with `add_model` / `add_dataset`."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.etags: dict[tuple[str, str], dict[str, str]] = {}
        self.commits: dict[tuple[str, str], str] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.drops: dict[str, int] = {}
        self._server: ThreadingHTTPServer | None = None

    def add_model(self, repo_id: str, files: dict[str, bytes]) -> None:
        self._add(("model", repo_id), files)

    def add_dataset(self, repo_id: str, files: dict[str, bytes]) -> None:
        self._add(("dataset", repo_id), files)

    def _add(self, key: tuple[str, str], files: dict[str, bytes]) -> None:
        # Hashed once here, not per request: a checkpoint's weights are hundreds of MB.
        self.repos[key] = dict(files)
        self.etags[key] = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        digest = hashlib.sha1(key[1].encode())
        for name, etag in sorted(self.etags[key].items()):
            digest.update(f"{name}:{etag}".encode())
        self.commits[key] = digest.hexdigest()

    @staticmethod
    def files_of(directory: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()
        }

    def commit(self, kind: str, repo_id: str) -> str:
        return self.commits[(kind, repo_id)]

    def drop(self, file: str, after: int) -> None:
        """The next full GET of `file` (a path in its repository) breaks off after `after` bytes."""
        self.drops[file] = after

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def downloads(self, file: str) -> list[str | None]:
        """The Range header of each GET of `file` so far (None: the whole file)."""
        return [rng for method, path, rng in self.requests if method == "GET" and path.endswith("/" + file)]

    def __enter__(self) -> HubServer:
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def _send(self, code: int, body: bytes, headers: dict[str, str], *, head: bool = False) -> None:
        self.send_response(code)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _miss(self, code: str, message: str, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        self._send(404, body, headers, head=head)

    def _dispatch(self, method: str) -> None:
        path = self.path.split("?")[0]
        self.hub.requests.append((method, path, self.headers.get("Range")))
        head = method == "HEAD"
        if m := _API.match(path):
            kind = "model" if m.group(1) == "models" else "dataset"
            return self._info(kind, m.group(2), m.group(3) or "main", head)
        if m := _RESOLVE.match(path):
            kind = "dataset" if m.group(1) else "model"
            return self._file(kind, m.group(2), m.group(3), m.group(4), method)
        self._miss("EntryNotFound", f"no endpoint {path}", head)

    def _repo(self, kind: str, repo_id: str, revision: str, head: bool) -> dict[str, bytes] | None:
        if (kind, repo_id) not in self.hub.repos:
            self._miss("RepoNotFound", f"Repository not found: {repo_id}", head)
            return None
        if revision not in ("main", self.hub.commit(kind, repo_id)):
            self._miss("RevisionNotFound", f"Invalid rev id: {revision}", head)
            return None
        return self.hub.repos[(kind, repo_id)]

    def _info(self, kind: str, repo_id: str, revision: str, head: bool) -> None:
        files = self._repo(kind, repo_id, revision, head)
        if files is None:
            return
        info = {
            "id": repo_id,
            "sha": self.hub.commit(kind, repo_id),
            "siblings": [{"rfilename": name} for name in sorted(files)],
        }
        self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head=head)

    def _file(self, kind: str, repo_id: str, revision: str, name: str, method: str) -> None:
        head = method == "HEAD"
        files = self._repo(kind, repo_id, revision, head)
        if files is None:
            return
        if name not in files:
            self._miss("EntryNotFound", f"{name} does not exist on {revision!r}", head)
            return
        data = files[name]
        headers = {
            "ETag": f'"{self.hub.etags[(kind, repo_id)][name]}"',
            "X-Repo-Commit": self.hub.commit(kind, repo_id),
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        start = 0
        if rng := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start = int(rng.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        if method == "GET" and start == 0 and name in self.hub.drops:
            after = self.hub.drops.pop(name)
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:after])
            self.wfile.flush()
            self.close_connection = True  # the rest never comes: the client sees the body cut short
            return
        self._send(206 if start else 200, data[start:], headers, head=head)
