"""Pythia's pre-tokenized, pre-shuffled training shards (Megatron ``MMapIndexedDataset``), read in place.

``EleutherAI/pile-*-pythia-preshuffled`` ships ``PREFIX.bin`` (every sequence's
token ids back to back) and ``PREFIX.idx`` (where each sequence starts).  Rows
are 2049 tokens: Pythia's 2048-token context plus the one token its last
position predicts.  Row ``i`` of the shard is the ``i``-th row Pythia trained
on, so reading rows in order reproduces Pythia's batches in Pythia's order
(batch ``b`` of size ``B`` is rows ``b·B … b·B + B - 1``).

``.idx`` layout (little-endian): the 9-byte magic ``MMIDIDX\\x00\\x00``, a u64
version (1), a u8 dtype code, a u64 number of sequences ``n``, a u64 number of
documents ``m``; then ``n`` int32 sequence lengths, ``n`` int64 byte offsets
into ``.bin``, and ``m`` int64 document boundaries.  Both files are
memory-mapped, so opening a 300-billion-token shard costs nothing.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError

MAGIC = b"MMIDIDX\x00\x00"
#: Megatron's dtype codes (the integer ones; token ids are never floats).
DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}
PYTHIA_ROW = 2049


class IndexedShard:
    """Random access to the rows of one ``PREFIX.bin`` / ``PREFIX.idx`` pair."""

    def __init__(self, prefix: str | Path) -> None:
        prefix = str(prefix)
        for prefix_end in (".bin", ".idx"):
            prefix = prefix.removesuffix(prefix_end)
        self.prefix = prefix
        self.idx_path, self.bin_path = Path(prefix + ".idx"), Path(prefix + ".bin")
        for path in (self.idx_path, self.bin_path):
            if not path.is_file():
                raise DataError(f"training shard not found: {path} (give the path without .bin/.idx)")
        head = self.idx_path.read_bytes()[:34]
        if len(head) < 34 or head[:9] != MAGIC:
            raise DataError(f"{self.idx_path} is not a Megatron MMapIndexedDataset index (bad magic)")
        version, code, n, m = struct.unpack("<QBQQ", head[9:34])
        if version != 1 or code not in DTYPES:
            raise DataError(f"{self.idx_path}: unsupported index version {version} or dtype code {code}")
        self.dtype = np.dtype(DTYPES[code])
        self.sizes = np.memmap(self.idx_path, np.int32, "r", offset=34, shape=(n,))
        self.pointers = np.memmap(self.idx_path, np.int64, "r", offset=34 + 4 * n, shape=(n,))
        self.doc_idx = np.memmap(self.idx_path, np.int64, "r", offset=34 + 12 * n, shape=(m,))
        self.data = np.memmap(self.bin_path, self.dtype, "r")

    def __getstate__(self) -> dict:
        """Pickled by its path (a worker process maps the files again), never by the mapped bytes."""
        return {"prefix": self.prefix}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["prefix"])

    def __len__(self) -> int:
        return int(self.sizes.shape[0])

    def row(self, i: int) -> np.ndarray:
        """Token ids of sequence ``i`` (int64)."""
        start = int(self.pointers[i]) // self.dtype.itemsize
        return np.asarray(self.data[start : start + int(self.sizes[i])], dtype=np.int64)

    def rows(self, idx: np.ndarray, length: int) -> np.ndarray:
        """(len(idx), length): the first ``length`` tokens of each row; every row must be that long."""
        out = np.empty((len(idx), length), dtype=np.int64)
        for k, i in enumerate(idx):
            r = self.row(int(i))
            if r.shape[0] < length:
                raise DataError(f"{self.bin_path}: row {i} has {r.shape[0]} tokens, fewer than seq_len {length}")
            out[k] = r[:length]
        return out

    def fingerprint(self) -> str:
        """16 hex digits of the whole index and the data file's size (the data itself is too big to hash)."""
        h = hashlib.sha256(self.idx_path.read_bytes())
        h.update(str(self.bin_path.stat().st_size).encode())
        return h.hexdigest()[:16]
