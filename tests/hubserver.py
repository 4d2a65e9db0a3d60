"""A local stand-in for the Hugging Face Hub: the part of its HTTP API that ``huggingface_hub`` 2.4 uses.

Served on 127.0.0.1 (port chosen by the OS), from memory:

- ``GET  /api/models/{repo}/refs``  branches (one per revision) and tags, as ``list_repo_refs`` reads them
- ``GET  /api/models/{repo}/commits/{branch}``  the commits with a title, newest first (``list_repo_commits``)
- ``GET  /api/models?author=ORG&search=S``  the repos of ORG whose name contains S (``list_models``)
- ``GET  /api/models/{repo}`` and ``…/revision/{rev}``  model info: ``id``, ``sha``, ``siblings`` (``model_info``)
- ``GET  /api/models/{repo}/tree/{rev}/{path}``  the files under a folder (``list_repo_tree``)
- ``GET  /api/datasets/{repo}…``  the same for a dataset repo, served as ``datasets/{repo}`` (``dataset_info``)
- ``HEAD/GET /{repo}/resolve/{rev}/{file}``        the file, with the headers ``hf_hub_download`` expects:
  ``X-Repo-Commit``, ``ETag`` (git sha1) or, for weights (LFS on the Hub), ``X-Linked-Etag`` (sha256) and
  ``X-Linked-Size``; ``Content-Length``; ``Range: bytes=A-B`` (or ``A-``) answered 206 with exactly those bytes
  (the client resumes downloads with them; the twin's ``hub-shards`` reads rows with them); a dataset file is
  ``/datasets/{repo}/resolve/…``
- errors carry ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``) as the Hub's do

Fault injection (:class:`Fault`, first ``times`` matching requests): ``429`` with ``Retry-After``, ``500``,
``reset`` (the connection is dropped without a response) and ``truncate`` (headers promise the whole body,
half is sent, then the connection closes).  ``latency`` (seconds per request) and ``bandwidth`` (bytes/s of
body) slow it down.  ``requests`` logs every request; ``bytes_sent`` counts body bytes.

Run as a script to serve a folder of ``<revision>/`` checkpoint directories::

    python tests/hubserver.py ORG/NAME DIR [--port 8765] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")
#: The repo id the tests serve their tiny Pythia-like revisions under.
REPO = "EleutherAI/pythia-tiny"


@dataclass
class Revision:
    """One branch of a served repo: its commit and files."""

    name: str
    commit: str
    files: dict[str, bytes]
    title: str | None = None  # a commit on the history of `main` (list_repo_commits), not a branch of its own


@dataclass
class Fault:
    """Answer the first ``times`` requests matching (method, revision name, filename) with ``kind``."""

    kind: str  # "429" | "500" | "reset" | "truncate"
    revision: str | None = None
    filename: str | None = None
    method: str | None = None
    times: int = 1
    retry_after: int = 0

    def matches(self, method: str, revision: str | None, filename: str | None) -> bool:
        if self.kind == "truncate" and method != "GET":
            return False  # only a body can be cut short
        return (
            self.times > 0
            and (self.method is None or self.method == method)
            and (self.revision is None or self.revision == revision)
            and (self.filename is None or self.filename == filename)
        )


@dataclass
class Request:
    method: str
    path: str
    status: int
    revision: str | None = None
    filename: str | None = None


def commit_of(repo: str, name: str, files: dict[str, bytes]) -> str:
    """A stable 40-hex commit id for a revision's content."""
    h = hashlib.sha1(f"{repo}@{name}".encode())
    for fname in sorted(files):
        h.update(fname.encode() + hashlib.sha1(files[fname]).digest())
    return h.hexdigest()


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubState:
    """What the server serves, what it was told to break, and what it counted."""

    repos: dict[str, dict[str, Revision]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    latency: float = 0.0
    bandwidth: float | None = None
    requests: list[Request] = field(default_factory=list)
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_revision(
        self, repo: str, name: str, files: dict[str, bytes], commit: str | None = None, title: str | None = None
    ) -> Revision:
        """Serve ``files`` as branch ``name`` of ``repo`` (``datasets/ORG/NAME`` for a dataset), at ``commit``
        (40 hex digits; by default one derived from the content).  With ``title``, a commit of ``main``'s history
        instead (listed by ``…/commits/main``, reached by its commit id, not a branch)."""
        rev = Revision(name, commit or commit_of(repo, name, files), dict(files), title)
        self.repos.setdefault(repo, {})[name] = rev
        return rev

    def remove_revision(self, repo: str, name: str) -> None:
        self.repos[repo].pop(name)

    def find(self, repo: str, rev: str) -> Revision | None:
        for r in self.repos.get(repo, {}).values():
            if rev in (r.name, r.commit):
                return r
        return None

    def take_fault(self, method: str, revision: str | None, filename: str | None) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, revision, filename):
                    fault.times -= 1
                    return fault
        return None

    def downloads(self, method: str = "GET") -> list[Request]:
        """Successful file transfers (``resolve`` requests answered 200/206)."""
        return [r for r in self.requests if r.method == method and r.filename and r.status in (200, 206)]

    def reset_counters(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bytes_sent = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState  # set on the subclass the server builds

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    # -- routing -----------------------------------------------------------------------------------------
    def _serve(self, body: bool) -> None:
        if self.state.latency:
            time.sleep(self.state.latency)
        path = unquote(urlsplit(self.path).path)
        try:
            if path == "/api/models":
                self._models()
            elif path.startswith("/api/models/"):
                self._api(path[len("/api/models/") :])
            elif path.startswith("/api/datasets/"):
                self._api(path[len("/api/datasets/") :], prefix="datasets/")
            elif "/resolve/" in path:
                self._resolve(path, body)
            else:
                self._json(404, {"error": "not found"}, self.command)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _api(self, rest: str, prefix: str = "") -> None:
        parts = rest.split("/")
        repo = prefix + "/".join(parts[:2])
        if repo not in self.state.repos:
            return self._json(401, {"error": "Repository not found"}, "GET", code="RepoNotFound")
        tail = parts[2:]
        if tail == ["refs"]:
            revs = [r for r in self.state.repos[repo].values() if r.title is None]
            branches = [{"name": r.name, "ref": f"refs/heads/{r.name}", "targetCommit": r.commit} for r in revs]
            return self._json(200, {"branches": branches, "converts": [], "tags": []}, "GET")
        if tail[:1] == ["commits"]:
            revs = [r for r in self.state.repos[repo].values() if r.title is not None][::-1]
            date = "2024-01-01T00:00:00.000Z"
            items = [{"id": r.commit, "title": r.title, "message": "", "authors": [], "date": date} for r in revs]
            return self._json(200, items, "GET")
        if tail[:1] == ["tree"] and len(tail) >= 2:
            return self._tree(repo, tail[1], "/".join(tail[2:]))
        name = "/".join(tail[1:]) if tail[:1] == ["revision"] else "main"
        rev = self.state.find(repo, name)
        if rev is None:
            return self._json(404, {"error": f"Invalid rev id: {name}"}, "GET", code="RevisionNotFound")
        siblings = [{"rfilename": f, "size": len(b)} for f, b in sorted(rev.files.items())]
        name = repo.removeprefix(prefix)
        self._json(
            200, {"id": name, "modelId": name, "sha": rev.commit, "siblings": siblings}, "GET", revision=rev.name
        )

    def _models(self) -> None:
        """``list_models(author=…, search=…)``: the model repos of ``author`` whose name contains ``search``."""
        query = dict(p.partition("=")[::2] for p in urlsplit(self.path).query.split("&") if p)
        author, search = unquote(query.get("author", "")), unquote(query.get("search", ""))
        ids = sorted(r for r in self.state.repos if not r.startswith("datasets/"))
        hits = [{"id": r, "modelId": r} for r in ids if r.startswith(f"{author}/") and search in r.split("/", 1)[1]]
        self._json(200, hits, "GET")

    def _tree(self, repo: str, rev_id: str, folder: str) -> None:
        """``list_repo_tree``: the files under ``folder`` (404 ``EntryNotFound`` when there are none)."""
        rev = self.state.find(repo, rev_id)
        if rev is None:
            return self._json(404, {"error": "Revision not found"}, "GET", code="RevisionNotFound")
        prefix = folder.rstrip("/") + "/" if folder else ""
        entries = [
            {"type": "file", "path": f, "size": len(b), "oid": git_sha1(b)}
            for f, b in sorted(rev.files.items())
            if f.startswith(prefix)
        ]
        if folder and not entries:
            return self._json(404, {"error": "Entry not found"}, "GET", code="EntryNotFound")
        self._json(200, entries, "GET", revision=rev.name)

    def _resolve(self, path: str, body: bool) -> None:
        repo, _, rest = path.lstrip("/").partition("/resolve/")
        rev_id, _, filename = rest.partition("/")
        if repo not in self.state.repos:
            return self._json(401, {"error": "Repository not found"}, self.command, code="RepoNotFound")
        rev = self.state.find(repo, rev_id)
        if rev is None:
            return self._json(404, {"error": "Revision not found"}, self.command, code="RevisionNotFound")
        fault = self.state.take_fault(self.command, rev.name, filename)
        if fault is not None and fault.kind in ("429", "500"):
            extra = {"Retry-After": str(fault.retry_after)} if fault.kind == "429" else {}
            return self._json(
                int(fault.kind), {"error": "injected"}, self.command, extra=extra, revision=rev.name, filename=filename
            )
        if fault is not None and fault.kind == "reset":
            return self._reset(rev.name, filename)
        data = rev.files.get(filename)
        if data is None:
            return self._json(
                404,
                {"error": "Entry not found"},
                self.command,
                code="EntryNotFound",
                extra={"X-Repo-Commit": rev.commit},
                revision=rev.name,
                filename=filename,
            )
        self._file(rev, filename, data, body, truncate=fault is not None and fault.kind == "truncate")

    # -- responses ---------------------------------------------------------------------------------------
    def _file(self, rev: Revision, filename: str, data: bytes, body: bool, truncate: bool) -> None:
        start, end, status = 0, len(data), 200
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and body:
            first, _, last = rng[len("bytes=") :].partition("-")
            start, end, status = int(first or 0), min(len(data), int(last) + 1 if last else len(data)), 206
        self.send_response(status)
        self.send_header("X-Repo-Commit", rev.commit)
        self.send_header("Accept-Ranges", "bytes")
        if filename.endswith(LFS_SUFFIXES):
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        else:
            self.send_header("ETag", f'"{git_sha1(data)}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.send_header("Content-Length", str(end - start))
        self.end_headers()
        self._log(status, rev.name, filename)
        if not body:
            return
        payload = data[start:end]
        if truncate:
            self._write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(payload)

    def _write(self, payload: bytes) -> None:
        chunk = 1 << 16
        for i in range(0, len(payload), chunk):
            part = payload[i : i + chunk]
            if self.state.bandwidth:
                time.sleep(len(part) / self.state.bandwidth)
            self.wfile.write(part)
            with self.state.lock:
                self.state.bytes_sent += len(part)

    def _reset(self, revision: str, filename: str) -> None:
        self._log(0, revision, filename)
        # SO_LINGER 0: close() sends RST, the client sees a reset connection, not a clean end.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _json(
        self,
        status: int,
        payload: dict | list,
        method: str,
        code: str | None = None,
        extra: dict | None = None,
        revision: str | None = None,
        filename: str | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", payload.get("error", ""))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self._log(status, revision, filename)
        if method != "HEAD":
            self.wfile.write(data)

    def _log(self, status: int, revision: str | None, filename: str | None) -> None:
        with self.state.lock:
            self.state.requests.append(Request(self.command, self.path, status, revision, filename))


class HubServer:
    """``with HubServer(state) as hub: hub.endpoint`` — a threaded server on 127.0.0.1."""

    def __init__(self, state: HubState | None = None, port: int = 0) -> None:
        self.state = state or HubState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file directly in ``directory``, by name."""
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def serve_checkpoints(state: HubState, repo: str, root: Path) -> list[Revision]:
    """Serve each sub-directory of ``root`` as a branch of ``repo`` (a ``main`` branch too: the last one)."""
    revs = [state.add_revision(repo, d.name, files_of(d)) for d in sorted(root.iterdir()) if d.is_dir()]
    if revs and "main" not in state.repos[repo]:
        state.add_revision(repo, "main", revs[-1].files)
    return revs


def build_checkpoints(
    root: Path, steps: list[int], tokenizer, bin_steps: tuple[int, ...] = (), same_as_step0: tuple[int, ...] = (1, 2)
) -> Path:
    """``root/step<N>/``: tiny GPT-NeoX revisions named like Pythia's, each with the tokenizer.

    Steps in ``same_as_step0`` get step 0's weights (Pythia's step0..2 are identical upstream);
    steps in ``bin_steps`` carry only ``pytorch_model.bin``, as Pythia's step branches do.
    """
    import torch
    from builders import tiny_model

    for step in steps:
        folder = root / f"step{step}"
        model = tiny_model("gpt_neox", seed=0 if step in same_as_step0 else step)
        if step in bin_steps:
            model.config.save_pretrained(folder)
            torch.save(model.state_dict(), folder / "pytorch_model.bin")
        else:
            model.save_pretrained(folder)
        for extra in ("generation_config.json",):
            (folder / extra).unlink(missing_ok=True)
        tokenizer.save_pretrained(folder)
    return root


def point_client_at(monkeypatch, endpoint: str, cache_dir: Path, offline: bool = False) -> None:
    """Make ``huggingface_hub`` in this process talk to ``endpoint`` with ``cache_dir``, as ``HF_ENDPOINT``,
    ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE`` would at import time."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    import transformers.utils.hub as transformers_hub

    # transformers keeps one HfApi, made with the endpoint of its first use (e.g. an earlier test's server)
    monkeypatch.setattr(transformers_hub, "_hf_api", None, raising=False)


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    state = HubState(latency=args.latency)
    serve_checkpoints(state, args.repo, args.root)
    with HubServer(state, args.port) as hub:
        print(f"HF_ENDPOINT={hub.endpoint}", flush=True)
        hub.thread.join()


if __name__ == "__main__":
    _main()
