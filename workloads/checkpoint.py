"""A training cell's state on disk, so that a long cell interrupted in any way resumes where it last saved.

One file per cell, `STATE_FILE` in the cell's state directory (the harness gives each cell its own, inside the run
directory). Layout: MAGIC, the tensors' raw bytes one after another, a JSON trailer (format version, the cell's
identity, the loop's state, each tensor's name, dtype, shape and offset, the payload's sha256), the trailer's
length (8 bytes, little-endian) and END. A truncated file has no END; an altered one fails its hash.

Why a format of its own rather than torch.save or safetensors: the tensors are streamed from their own memory
(no serialised copy: the cell's peak must not grow), in slices after each of which the written pages are synced
and dropped from the page cache (the cell's cgroup is charged for the cache it dirties: a 438 MB MPNet checkpoint
would otherwise sit in it until the kernel wrote it back). Loading reads the bytes straight into the tensors.
A new checkpoint is written beside the old one and renamed over it: a kill during a write leaves the last
complete checkpoint, and a stray temporary file that the next start removes.

Every function works in a `Folder`: an open directory file descriptor (the harness passes the cell one, so an
unprivileged cell needs no path to its state through a run directory it may not search) and its path, named in
messages only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

VERSION = 1
MAGIC, END = b"EBCKPT1\n", b"\nEBCKEND"
STATE_FILE = "state.ckpt"
TEMP_SUFFIX = ".tmp"
#: Bytes written (or read) between syncs and cache drops: what the page cache may hold of a checkpoint at once.
SLICE = 32 << 20


class CheckpointRefused(ValueError):
    """A checkpoint that cannot be resumed from: truncated, altered, another cell's or another version's."""


@dataclass(frozen=True)
class Folder:
    """A state directory: its open descriptor (files are opened relative to it) and its path (for messages)."""

    fd: int
    path: Path

    @classmethod
    def open(cls, path: Path) -> Folder:
        return cls(os.open(path, os.O_RDONLY | os.O_DIRECTORY), Path(path))

    def opener(self, name: str, flags: int, mode: int = 0o600) -> int:
        return os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=self.fd)

    def exists(self, name: str) -> bool:
        return name in os.listdir(self.fd)

    def unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)


@dataclass
class Saved:
    """A checkpoint as read back: the loop's state and where its tensors are."""

    folder: Folder
    state: dict[str, Any]
    entries: list[dict[str, Any]]

    @property
    def path(self) -> Path:
        return self.folder.path / STATE_FILE


def as_bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's own memory as bytes, without a copy (any dtype: bf16 has no numpy type)."""
    flat = tensor.detach().reshape(-1)
    if not flat.is_contiguous() or flat.data_ptr() != tensor.data_ptr():
        raise ValueError("only contiguous tensors are checkpointed")
    return memoryview(flat.view(torch.uint8).numpy()).cast("B") if flat.numel() else memoryview(b"")


def _slices(view: memoryview) -> Iterator[memoryview]:
    for start in range(0, len(view), SLICE):
        yield view[start : start + SLICE]


def _drop_cache(fd: int) -> None:
    """Write back, then drop, the file's cached pages (they count against the cell's memory cap)."""
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def save(folder: Folder, identity: dict[str, Any], state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> int:
    """Write the checkpoint atomically; returns its size in bytes. `identity` is what a resume must match."""
    temp = f"{STATE_FILE}.{os.getpid()}{TEMP_SUFFIX}"
    digest, entries, offset = hashlib.sha256(), [], len(MAGIC)
    fd = folder.opener(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, MAGIC)
        since_sync = 0
        for name, tensor in tensors.items():
            view = as_bytes(tensor)
            entries.append(
                {"name": name, "dtype": str(tensor.dtype).removeprefix("torch."), "shape": list(tensor.shape),
                 "offset": offset, "nbytes": len(view)}
            )
            for piece in _slices(view):
                digest.update(piece)
                _write_all(fd, piece)
                since_sync += len(piece)
                if since_sync >= SLICE:
                    _drop_cache(fd)
                    since_sync = 0
            offset += len(view)
        trailer = json.dumps(
            {"version": VERSION, "identity": identity, "state": state, "tensors": entries,
             "sha256": digest.hexdigest()}
        ).encode()
        _write_all(fd, memoryview(trailer + struct.pack("<Q", len(trailer)) + END))
        _drop_cache(fd)
    except BaseException:
        os.close(fd)
        folder.unlink(temp)
        raise
    os.close(fd)
    os.replace(temp, STATE_FILE, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
    os.fsync(folder.fd)
    return offset + len(trailer) + 8 + len(END)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def remove_temporaries(folder: Folder) -> None:
    """Temporary files of writes that were killed halfway (never a complete checkpoint)."""
    for name in os.listdir(folder.fd):
        if name.startswith(f"{STATE_FILE}.") and name.endswith(TEMP_SUFFIX):
            folder.unlink(name)


def trailer(folder: Folder) -> tuple[dict[str, Any], int]:
    """The folder's checkpoint's trailer and where its payload ends, unverified: CheckpointRefused when the file
    is not a complete checkpoint of this format version."""
    path = folder.path / STATE_FILE
    with open(STATE_FILE, "rb", opener=folder.opener) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size < len(MAGIC) + 8 + len(END) or handle.read(len(MAGIC)) != MAGIC:
            raise CheckpointRefused(f"{path}: not an edgebench checkpoint")
        handle.seek(size - 8 - len(END))
        tail = handle.read()
        if tail[8:] != END:
            raise CheckpointRefused(f"{path}: truncated (no end marker)")
        (length,) = struct.unpack("<Q", tail[:8])
        if length > size - len(MAGIC) - 8 - len(END):
            raise CheckpointRefused(f"{path}: truncated (trailer longer than the file)")
        handle.seek(size - 8 - len(END) - length)
        try:
            found = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointRefused(f"{path}: unreadable trailer") from None
    if not isinstance(found, dict) or found.get("version") != VERSION:
        version = found.get("version") if isinstance(found, dict) else None
        raise CheckpointRefused(f"{path}: format version {version}, this edgebench writes {VERSION}")
    return found, size - 8 - len(END) - length


def read(folder: Folder, identity: dict[str, Any]) -> Saved | None:
    """The folder's checkpoint, verified: None when there is none, CheckpointRefused (one line, why) when it
    is truncated, altered, of another format version or of another cell."""
    if not folder.exists(STATE_FILE):
        return None
    path = folder.path / STATE_FILE
    found, payload_end = trailer(folder)
    if found.get("identity") != identity:
        raise CheckpointRefused(f"{path}: another cell's checkpoint ({_differences(found.get('identity'), identity)})")
    with open(STATE_FILE, "rb", opener=folder.opener) as handle:
        if _hash_range(handle, len(MAGIC), payload_end) != found.get("sha256"):
            raise CheckpointRefused(f"{path}: its bytes do not match its sha256 (altered or partly written)")
    return Saved(folder, found["state"], found["tensors"])


def _differences(found: object, expected: dict[str, Any]) -> str:
    if not isinstance(found, dict):
        return "no identity"
    keys = sorted(k for k in {*found, *expected} if found.get(k) != expected.get(k))
    return "differs in " + ", ".join(keys[:3])


def _hash_range(handle, start: int, end: int) -> str:
    digest = hashlib.sha256()
    handle.seek(start)
    left = end - start
    while left > 0:
        piece = handle.read(min(SLICE, left))
        if not piece:
            break
        digest.update(piece)
        left -= len(piece)
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return digest.hexdigest()


def restore(saved: Saved, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read the saved tensors into `tensors` (in place, where a tensor of that name is given), and return the saved
    ones `tensors` did not name, newly allocated (optimizer state). Every shape is checked before any is written."""
    targets = {}
    for entry in saved.entries:
        dtype, shape = getattr(torch, entry["dtype"]), tuple(entry["shape"])
        target = tensors.get(entry["name"])
        if target is not None and (target.dtype != dtype or tuple(target.shape) != shape):
            raise CheckpointRefused(
                f"{saved.path}: {entry['name']} is {entry['dtype']}{list(shape)}, the cell has "
                f"{str(target.dtype).removeprefix('torch.')}{list(target.shape)}"
            )
        targets[entry["name"]] = (entry, target, dtype, shape)
    extra: dict[str, torch.Tensor] = {}
    with open(STATE_FILE, "rb", buffering=0, opener=saved.folder.opener) as handle:
        for name, (entry, target, dtype, shape) in targets.items():
            if target is None:
                target = extra[name] = torch.empty(shape, dtype=dtype)
            handle.seek(entry["offset"])
            for piece in _slices(as_bytes(target)):
                if handle.readinto(piece) != len(piece):
                    raise CheckpointRefused(f"{saved.path}: truncated in {name}")
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return extra
