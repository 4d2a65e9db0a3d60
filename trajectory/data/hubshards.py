"""Pythia's pre-shuffled rows streamed from a Hub dataset by HTTP range requests, cached locally with provenance.

``hub-shards:REPO[@REVISION]`` names a Hub dataset repo that holds one Megatron ``MMapIndexedDataset``
(:mod:`.shards`): an index ``PREFIX.idx`` and the data ``PREFIX.bin``, whole or cut into byte shards
``PREFIX-00000-of-0000K.bin`` … that concatenate to it (``EleutherAI/pile-deduped-pythia-preshuffled``: 21
shards of 5·10⁹ bytes, the last shorter; Pythia's ``utils/unshard_memmap.py`` joins them).  The twin trains
on rows ``0 … n − 1`` in that order (Pythia's own order), and for them this module asks for exactly:

* bytes ``[0, 34)`` of the index: magic, version, dtype code, number of rows ``N``, of documents;
* ``sizes[0:n]`` (4n bytes at 34) and ``pointers[0:n]`` (8n bytes at 34 + 4N) of the index;
* bytes ``[pointers[0], pointers[n − 1] + itemsize · sizes[n − 1])`` of the merged ``.bin``, from the shards that
  hold them (row r of Pythia's data starts at byte r · 4,098: 2,049 uint16 tokens per row).

Each is one ``Range`` GET through huggingface_hub's HTTP session (its headers and token; a body cut short
is resumed from the last byte received, HTTP 429/5xx retried).  A revision that is not a 40-hex commit is
resolved to one with a single ``dataset_info`` call.  The rows are saved as ``rows-0-<n>.npy`` (uint16,
memory-mapped when read) beside ``rows-0-<n>.json``, their provenance: repo, revision, commit, index file,
row range, the byte range of each file read, and the sha256 of the ``.npy``, checked before the rows are
used (a damaged file is fetched again).  A later run that needs at most as many rows of the same commit (or,
unpinned, of the same revision name) reads the cache and sends no request at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_bytes, atomic_write
from ..errors import DataError, HubUnreachableError, exception_chain
from .shards import DTYPES, MAGIC

HEADER = 34  # magic (9) + version u64 + dtype u8 + rows u64 + documents u64
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
COMMIT = re.compile(r"[0-9a-f]{40}")
UNREACHABLE = (
    "the Hugging Face Hub is unreachable; run once with network (the rows are cached), or unset HF_HUB_OFFLINE"
)


def parse_source(arg: str) -> tuple[str, str | None]:
    """``ORG/NAME[@REVISION]`` → (repo, revision or None)."""
    repo, _, revision = arg.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")) or ".." in repo:
        raise DataError(f"[twin] train_data hub-shards needs a dataset repo ORG/NAME[@COMMIT], got {arg!r}")
    return repo, revision or None


class HubRows:
    """Rows ``0 … n − 1`` of a Hub dataset's Megatron data, fetched once by range requests (module docstring).

    Like :class:`~trajectory.data.shards.IndexedShard` it has ``len()`` and ``rows(idx, length)``; the rows
    are downloaded (or read from the cache) on first use, so planning a run needs at most one metadata call.
    """

    def __init__(self, arg: str, n_rows: int, cache: Path, endpoint: str | None = None, offline: bool | None = None):
        from huggingface_hub import constants

        self.repo, self.revision = parse_source(arg)
        self.n_rows, self.endpoint = n_rows, (endpoint or constants.ENDPOINT).rstrip("/")
        self.offline = constants.HF_HUB_OFFLINE if offline is None else offline
        self.folder = Path(cache) / "hub-shards" / self.repo.replace("/", "--")
        self._rows: np.ndarray | None = None
        self._listing: dict[str, int] | None = None
        cached = self._cached_entry()
        if cached is not None:
            self.commit = cached[1]["commit"]
        elif self.revision and COMMIT.fullmatch(self.revision):
            self.commit = self.revision
        elif self.offline:
            raise DataError(f"rows of {self.describe()} are not in the cache {self.folder} and HF_HUB_OFFLINE=1")
        else:
            self.commit, self._listing = self._info(self.revision)

    def describe(self) -> str:
        return f"dataset {self.repo}@{self.revision or 'main'}"

    @property
    def data_hash(self) -> str:
        """16 hex digits of what pins the rows: repo, commit, how many rows (the commit pins their bytes)."""
        ident = json.dumps({"hub-shards": self.repo, "commit": self.commit, "rows": self.n_rows}, sort_keys=True)
        return hashlib.sha256(ident.encode()).hexdigest()[:16]

    def __len__(self) -> int:
        return self.n_rows

    def __getstate__(self) -> dict:
        """Pickled without the rows (a worker process maps the cached file again)."""
        return {**self.__dict__, "_rows": None}

    def rows(self, idx: np.ndarray, length: int) -> np.ndarray:
        """(len(idx), length) int64: the first ``length`` tokens of each row."""
        data = self.load()
        if length > data.shape[1]:
            raise DataError(f"{self.describe()}: rows have {data.shape[1]} tokens, fewer than seq_len {length}")
        return np.asarray(data[np.asarray(idx)][:, :length], dtype=np.int64)

    def load(self) -> np.ndarray:
        """The (n, row tokens) rows: from the cache when its sha256 matches the recorded one, else downloaded."""
        if self._rows is None:
            entry = self._cached_entry(self.commit)
            rows = _checked(entry[0]) if entry is not None else None
            if rows is None and self.offline:
                raise DataError(f"rows of {self.describe()} are not in the cache (or damaged) and HF_HUB_OFFLINE=1")
            rows = rows if rows is not None else _checked(self.fetch())
            if rows is None:
                raise DataError(f"rows of {self.describe()} written to {self.folder} do not read back")
            self._rows = rows[: self.n_rows]
        return self._rows

    # -- the cache -------------------------------------------------------------------------------------------
    def _cached_entry(self, commit: str | None = None) -> tuple[Path, dict] | None:
        """A cached ``.npy`` covering rows 0 … n − 1 of ``commit`` (by default the pinned one, or for an
        unpinned revision the commit it was resolved to last), if any."""
        pinned = commit or (self.revision if self.revision and COMMIT.fullmatch(self.revision) else None)
        found = []
        for meta in sorted(self.folder.glob("*/rows-0-*.json")):
            try:
                info = json.loads(meta.read_text())
            except (OSError, ValueError):  # a damaged record is no cache
                continue
            same = info.get("commit") == pinned if pinned else info.get("revision") == (self.revision or "main")
            npy = meta.with_suffix(".npy")
            if same and info.get("rows", [0, 0])[1] >= self.n_rows and npy.is_file():
                found.append((meta.stat().st_mtime_ns, npy, info))
        return max(found, key=lambda f: f[0])[1:] if found else None

    def fetch(self) -> Path:
        """Download rows 0 … n − 1 by range requests into the cache; returns the ``.npy``."""
        names = self._listing or self._info(self.commit)[1]
        index, shards = layout(names, self.describe())
        head = self._get(index, 0, HEADER)
        if head[:9] != MAGIC:
            raise DataError(f"{self.describe()}: {index} is not a Megatron index (bad magic)")
        version, code, total, _ = struct.unpack("<QBQQ", head[9:HEADER])
        if version != 1 or code not in DTYPES:
            raise DataError(f"{self.describe()}: unsupported index version {version} or dtype code {code}")
        if self.n_rows > total:
            raise DataError(f"{self.describe()}: the twin needs {self.n_rows} rows, the dataset has {total}")
        n, dtype = self.n_rows, np.dtype(DTYPES[code])
        sizes = np.frombuffer(self._get(index, HEADER, HEADER + 4 * n), "<i4")
        pointers = np.frombuffer(self._get(index, HEADER + 4 * total, HEADER + 4 * total + 8 * n), "<i8")
        if np.any(sizes != sizes[0]) or np.any(np.diff(pointers) != sizes[:-1] * dtype.itemsize):
            raise DataError(f"{self.describe()}: rows 0…{n - 1} are not consecutive rows of one length")
        start, end = int(pointers[0]), int(pointers[-1]) + int(sizes[-1]) * dtype.itemsize
        pieces = [(name, a, b, self._get(name, a, b)) for name, a, b in spans(shards, start, end)]
        rows = np.frombuffer(b"".join(p[3] for p in pieces), dtype.newbyteorder("<")).reshape(n, int(sizes[0]))
        record = {
            "source": "hub-shards",
            "repo": self.repo,
            "repo_type": "dataset",
            "revision": self.revision or "main",
            "commit": self.commit,
            "endpoint": self.endpoint,
            "index": index,
            "rows": [0, n],
            "row_tokens": int(sizes[0]),
            "dtype": dtype.name,
            "files": [{"file": name, "bytes": [a, b]} for name, a, b, _ in pieces],
        }
        return self._store(rows, record)

    def _store(self, rows: np.ndarray, record: dict) -> Path:
        base = self.folder / self.commit / f"rows-0-{self.n_rows}"
        native = rows.astype(rows.dtype.newbyteorder("="))
        npy = atomic_write(base.with_suffix(".npy"), lambda tmp: np.save(tmp, native))
        record["sha256"] = file_sha256(npy)
        atomic_bytes(base.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
        return npy

    # -- the Hub ---------------------------------------------------------------------------------------------
    def _info(self, revision: str | None) -> tuple[str, dict[str, int]]:
        """(commit, file name → size) of ``revision`` (``main`` when None): one ``dataset_info`` call."""
        from huggingface_hub import HfApi

        try:
            info = HfApi(endpoint=self.endpoint).dataset_info(
                self.repo, revision=revision, files_metadata=True, timeout=10
            )
        except Exception as exc:  # mapped to one line below
            raise hub_error(exc, self.describe()) from None
        return info.sha, {s.rfilename: s.size for s in info.siblings or []}

    def _get(self, filename: str, start: int, end: int) -> bytes:
        from huggingface_hub import hf_hub_url

        url = hf_hub_url(self.repo, filename, repo_type="dataset", revision=self.commit, endpoint=self.endpoint)
        try:
            return get_range(url, start, end)
        except DataError:
            raise
        except Exception as exc:  # mapped to one line below
            raise hub_error(exc, f"{self.describe()} file {filename}") from None


def layout(files: dict[str, int], where: str) -> tuple[str, list[tuple[str, int]]]:
    """(index file, [(data file, size), …] in byte order): one ``.idx`` and its ``.bin``, whole or sharded."""
    indexes = sorted(n for n in files if n.endswith(".idx"))
    if len(indexes) != 1:
        raise DataError(f"{where}: expected one Megatron .idx file, found {indexes or 'none'}")
    prefix = indexes[0].removesuffix(".idx")
    if prefix + ".bin" in files:
        return indexes[0], [(prefix + ".bin", files[prefix + ".bin"])]
    pattern = re.compile(re.escape(prefix) + r"-(\d+)-of-\d+\.bin")
    shards = sorted((int(m[1]), name) for name in files if (m := pattern.fullmatch(name)))
    if not shards or [i for i, _ in shards] != list(range(len(shards))):
        raise DataError(f"{where}: no {prefix}.bin, nor shards {prefix}-00000-of-…bin numbered from 0 without gaps")
    if any(files[name] is None for _, name in shards):
        raise DataError(f"{where}: the Hub listed no size for the shards of {prefix}.bin")
    return indexes[0], [(name, files[name]) for _, name in shards]


def spans(shards: list[tuple[str, int]], start: int, end: int) -> list[tuple[str, int, int]]:
    """The (file, first byte, end byte) pieces of bytes ``[start, end)`` of the files' concatenation."""
    out, offset = [], 0
    for name, size in shards:
        a, b = max(start, offset), min(end, offset + size)
        if a < b:
            out.append((name, a - offset, b - offset))
        offset += size
    if sum(b - a for _, a, b in out) != end - start:
        raise DataError(f"bytes {start}–{end} run past the end of the data ({offset} bytes)")
    return out


def get_range(url: str, start: int, end: int, attempts: int = 4, wait: float = 0.5) -> bytes:
    """Bytes ``[start, end)`` of ``url`` by ``Range`` GETs on huggingface_hub's HTTP session (its headers and
    token); a body cut short is resumed from the last byte received, HTTP 429/5xx are retried with backoff."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    buf, got = bytearray(end - start), 0
    for attempt in range(attempts):
        headers = build_hf_headers(headers={"Range": f"bytes={start + got}-{end - 1}"})
        try:
            with get_session().stream("GET", url, headers=headers, timeout=30) as resp:
                if resp.status_code in RETRY_STATUS and attempt + 1 < attempts:
                    time.sleep(wait * 2**attempt)
                    continue
                hf_raise_for_status(resp)
                _check_range(resp, url, start + got)
                for chunk in resp.iter_bytes():
                    take = min(len(chunk), len(buf) - got)
                    buf[got : got + take] = chunk[:take]
                    got += take
        except DataError:
            raise
        except Exception as exc:  # a dropped connection is retried (resuming); anything else is raised
            if attempt + 1 >= attempts or not any(type(e).__module__.startswith("httpx") for e in exception_chain(exc)):
                raise
        if got == len(buf):
            return bytes(buf)
    raise DataError(f"{url}: got {got} of the {end - start} bytes asked for after {attempts} attempts")


def _check_range(resp, url: str, first: int) -> None:
    """The answer must be the byte range asked for: never stream a whole 5 GB shard by accident."""
    answered = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    if resp.status_code != 206 or answered is None:
        raise DataError(f"{url}: HTTP {resp.status_code} without a byte range; not fetching the whole file")
    if int(answered[1]) != first:
        raise DataError(f"{url}: the server sent another byte range ({resp.headers['Content-Range']})")


def hub_error(exc: BaseException, what: str) -> DataError | HubUnreachableError:
    """One line for a failed Hub call."""
    from huggingface_hub import errors as hf_errors

    for e in exception_chain(exc):
        if isinstance(e, hf_errors.RepositoryNotFoundError):
            return DataError(f"{what}: no such dataset repo on the Hub")
        if isinstance(e, hf_errors.RevisionNotFoundError):
            return DataError(f"{what}: no such revision")
        if isinstance(e, hf_errors.RemoteEntryNotFoundError):
            return DataError(f"{what}: no such file")
        if type(e).__name__ in {"ConnectError", "ConnectTimeout", "ReadTimeout"}:
            return HubUnreachableError(f"{what}: {UNREACHABLE}")
    return DataError(f"{what}: {(str(exc).splitlines() or [type(exc).__name__])[0]}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _checked(npy: Path) -> np.ndarray | None:
    """The cached rows, memory-mapped, when their sha256 matches the one recorded beside them; else None."""
    try:
        record = json.loads(npy.with_suffix(".json").read_text())
        if file_sha256(npy) == record.get("sha256"):
            return np.load(npy, mmap_mode="r")
    except (OSError, ValueError):  # a damaged cache entry is fetched again
        pass
    return None
