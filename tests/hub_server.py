"""A local stand-in for the Hugging Face Hub's download API, for offline tests of real client code.

`serve_repos({"someone/gz10-tiny": folder})` serves folders as model repos on 127.0.0.1 well enough for the real
`huggingface_hub` client (`hf_hub_download`, `snapshot_download`, `model_info`, `list_repo_tree`) and so for
`from_pretrained` and `pipeline(...)`. Point the client at it with `HF_ENDPOINT=<url>` (read at import time:
start the code under test in a subprocess).

What it implements, after `huggingface_hub/file_download.py` and `hf_api.py`:
- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: repo info with `sha` and `siblings`;
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...`: the file listing (`oid`, `size`, `lfs`);
- `HEAD`/`GET /{repo}/resolve/{rev}/{path}`: the file, with `X-Repo-Commit`, `ETag`, `Content-Length` and
  byte ranges;
- errors as the Hub sends them: 404 with `X-Error-Code` `RepoNotFound`, `RevisionNotFound` or `EntryNotFound`.
A revision is a branch name of the mapping (`main` for a plain folder) or the commit sha derived from the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Extensions the Hub stores with Git LFS: their ETag is the sha256 of the content, as on huggingface.co.
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npz", ".png", ".jpg")


@dataclass
class _File:
    data: bytes
    blob_id: str  # git blob sha1
    sha256: str
    lfs: bool

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class _Snapshot:
    sha: str
    files: dict[str, _File] = field(default_factory=dict)


def _snapshot(folder: Path) -> _Snapshot:
    files = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(".git/") or rel.startswith(".cache/"):
            continue
        data = path.read_bytes()
        blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        files[rel] = _File(data, blob_id, hashlib.sha256(data).hexdigest(), rel.endswith(_LFS_SUFFIXES))
    tree = "".join(f"{name}\0{f.blob_id}\n" for name, f in files.items())
    return _Snapshot(hashlib.sha1(tree.encode()).hexdigest(), files)


class HubServer:
    """A threaded HTTP server on 127.0.0.1 (random port) serving folders as Hub model repos.

    Args:
        repos: repo id -> folder (served as branch `main`), or repo id -> {branch: folder}.

    Attributes:
        url: the endpoint to put in `HF_ENDPOINT`.
        requests: `(method, path)` of every request served, for assertions on what the client fetched.
    """

    def __init__(self, repos: Mapping[str, str | Path | Mapping[str, str | Path]]) -> None:
        self.repos: dict[str, dict[str, _Snapshot]] = {}
        for repo_id, spec in repos.items():
            branches = spec if isinstance(spec, Mapping) else {"main": spec}
            self.repos[repo_id] = {branch: _snapshot(Path(folder)) for branch, folder in branches.items()}
        self.requests: list[tuple[str, str]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def commit(self, repo_id: str, branch: str = "main") -> str:
        """The commit sha a branch of a served repo resolves to."""
        return self.repos[repo_id][branch].sha

    def resolve(self, repo_id: str, revision: str | None) -> _Snapshot | None:
        branches = self.repos[repo_id]
        revision = revision or "main"
        if revision in branches:
            return branches[revision]
        return next((snap for snap in branches.values() if snap.sha == revision), None)

    def split_repo(self, rest: str) -> tuple[str | None, str]:
        """Split `owner/name/more...` into a served repo id and the remainder (longest id first)."""
        for repo_id in sorted(self.repos, key=len, reverse=True):
            if rest == repo_id or rest.startswith(repo_id + "/"):
                return repo_id, rest[len(repo_id) + 1 :]
        return None, rest


@contextlib.contextmanager
def serve_repos(repos: Mapping[str, str | Path | Mapping[str, str | Path]]) -> Iterator[str]:
    """Serve folders as Hub model repos for the duration of the block; yields the endpoint URL."""
    with running_hub(repos) as server:
        yield server.url


@contextlib.contextmanager
def running_hub(repos: Mapping[str, str | Path | Mapping[str, str | Path]]) -> Iterator[HubServer]:
    """Like `serve_repos` but yields the `HubServer` (its `url`, `requests` log and `commit()`)."""
    server = HubServer(repos).start()
    try:
        yield server
    finally:
        server.stop()


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - signature of the base class
            pass

        def do_HEAD(self) -> None:
            self._dispatch(head=True)

        def do_GET(self) -> None:
            self._dispatch(head=False)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            hub.requests.append(("POST", self.path))
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, None, "this test Hub only serves downloads")

        # ------------------------------------------------------------------ routing

        def _dispatch(self, head: bool) -> None:
            hub.requests.append(("HEAD" if head else "GET", self.path))
            url = urlsplit(self.path)
            path = unquote(url.path).lstrip("/")
            if path.startswith("api/models/"):
                self._api(path[len("api/models/") :], parse_qs(url.query), head)
            elif "/resolve/" in path:
                self._resolve(path, head)
            else:
                self._error(HTTPStatus.NOT_FOUND, None, f"no route for /{path}")

        def _api(self, rest: str, query: dict[str, list[str]], head: bool) -> None:
            repo_id, tail = hub.split_repo(rest)
            if repo_id is None:
                return self._repo_not_found(rest)
            parts = tail.split("/", 2) if tail else []
            if not parts or parts[0] == "revision":
                revision = parts[1] if len(parts) > 1 else None
                if len(parts) > 2:
                    revision = f"{parts[1]}/{parts[2]}"
                snap = self._snapshot_or_error(repo_id, revision)
                if snap is not None:
                    self._json(self._info(repo_id, snap), head)
                return None
            if parts[0] == "tree" and len(parts) >= 2:
                snap = self._snapshot_or_error(repo_id, parts[1])
                if snap is None:
                    return None
                prefix = parts[2].strip("/") if len(parts) > 2 else ""
                recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
                return self._json(self._tree(snap, prefix, recursive), head)
            return self._error(HTTPStatus.NOT_FOUND, None, f"no API route for {tail}")

        def _resolve(self, path: str, head: bool) -> None:
            repo_part, _, rest = path.partition("/resolve/")
            if repo_part.startswith("models/"):
                repo_part = repo_part[len("models/") :]
            if repo_part not in hub.repos:
                return self._repo_not_found(repo_part)
            # The client quotes the revision with safe="" so "refs/pr/1" arrives as one segment; after unquote
            # try the longest revision prefix that the repo knows.
            segments = rest.split("/")
            for cut in range(len(segments) - 1, 0, -1):
                revision, filename = "/".join(segments[:cut]), "/".join(segments[cut:])
                snap = hub.resolve(repo_part, revision)
                if snap is not None:
                    break
            else:
                return self._error(HTTPStatus.NOT_FOUND, "RevisionNotFound", f"Invalid rev id: {segments[0]}")
            entry = snap.files.get(filename)
            if entry is None:
                return self._error(
                    HTTPStatus.NOT_FOUND, "EntryNotFound", f"{filename} does not exist", {"X-Repo-Commit": snap.sha}
                )
            return self._file(entry, snap.sha, head)

        # ------------------------------------------------------------------ payloads

        def _info(self, repo_id: str, snap: _Snapshot) -> dict:
            siblings = [
                {"rfilename": name, "size": len(f.data), "blobId": f.blob_id} for name, f in snap.files.items()
            ]
            config = snap.files.get("config.json")
            return {
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0] if "/" in repo_id else None,
                "sha": snap.sha,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
                "private": False,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": ["transformers", "image-classification"],
                "pipeline_tag": "image-classification",
                "library_name": "transformers",
                "config": json.loads(config.data) if config is not None else None,
                "siblings": siblings,
            }

        def _tree(self, snap: _Snapshot, prefix: str, recursive: bool) -> list[dict]:
            entries, folders = [], set()
            for name, f in snap.files.items():
                if prefix and not name.startswith(prefix + "/"):
                    continue
                below = name[len(prefix) + 1 :].split("/") if prefix else name.split("/")
                base = prefix + "/" if prefix else ""
                if not recursive and len(below) > 1:
                    folders.add(base + below[0])
                    continue
                folders.update(base + "/".join(below[: i + 1]) for i in range(len(below) - 1))
                entry = {"type": "file", "oid": f.blob_id, "size": len(f.data), "path": name}
                if f.lfs:
                    entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
                entries.append(entry)
            dirs = [
                {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
                for d in sorted(folders)
            ]
            return dirs + entries

        def _file(self, entry: _File, commit: str, head: bool) -> None:
            data, status = entry.data, HTTPStatus.OK
            headers = {
                "X-Repo-Commit": commit,
                "ETag": f'"{entry.etag}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            byte_range = self.headers.get("Range")
            if byte_range and byte_range.startswith("bytes=") and not head:
                start_s, _, end_s = byte_range[len("bytes=") :].partition("-")
                start = int(start_s or 0)
                end = min(int(end_s), len(data) - 1) if end_s else len(data) - 1
                if start >= len(data) and data:
                    return self._error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, None, "range not satisfiable")
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                data, status = data[start : end + 1], HTTPStatus.PARTIAL_CONTENT
            self._send(status, data, headers, head)

        def _snapshot_or_error(self, repo_id: str, revision: str | None) -> _Snapshot | None:
            snap = hub.resolve(repo_id, revision)
            if snap is None:
                self._error(HTTPStatus.NOT_FOUND, "RevisionNotFound", f"Invalid rev id: {revision}")
            return snap

        def _repo_not_found(self, what: str) -> None:
            self._error(HTTPStatus.NOT_FOUND, "RepoNotFound", f"Repository not found: {what}")

        def _error(self, status: HTTPStatus, code: str | None, message: str, extra: dict | None = None) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": message, **(extra or {})}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, json.dumps({"error": message}).encode(), headers, head=self.command == "HEAD")

        def _json(self, payload, head: bool) -> None:
            self._send(HTTPStatus.OK, json.dumps(payload).encode(), {"Content-Type": "application/json"}, head)

        def _send(self, status: HTTPStatus, body: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler
