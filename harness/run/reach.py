"""Search access for the cell user alone, for the duration of a run, to what its cells must reach.

A root harness runs its cells as an unprivileged user, who must reach the interpreter, the venv, this checkout and
the caches: on a host whose interpreter sits under a private /root (pyenv's), some directory above them denies that
user the search bit. Rather than widen such a directory for every local user for good (`chmod o+x /root`), the
harness adds one POSIX ACL entry, `u:UID:--x` (search, no listing), or `g:GID:--x` for the group that all private
cell uids share (harness.run.cell_uids), to exactly the directories that deny the cell user, and puts each back as it
was (its ACL and its mode, to the bit) when the run ends.

What was granted is recorded first in a state file named by the harness's pid, so that a later harness puts back
what a SIGKILLed one left. Harnesses that run at once share a grant: each records its claim (with the original
state the first one saw) under one lock, and the last to leave restores the directory. Harnesses whose cell users
differ each take back only their own entry (a snapshot put back whole would restore or drop the other's).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from devices.caps.base import pid_alive

#: Where grants are recorded: persistent, as the ACL entries are (a reboot clears /run, not the disk).
STATE_DIR = Path("/var/lib/edgebench/reach")
XATTR = "system.posix_acl_access"
# The kernel's posix_acl_xattr format: a version, then (tag u16, perm u16, id u32) entries sorted by tag and id.
ACL_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NO_ID = 0xFFFFFFFF
SEARCH = 0o1
_HEADER, _ENTRY = struct.Struct("<I"), struct.Struct("<HHI")


class ReachError(OSError):
    """A directory the cell user cannot search and the harness could not open to it (no ACL support there)."""


def encode_acl(entries: list[tuple[int, int, int]]) -> bytes:
    return _HEADER.pack(ACL_VERSION) + b"".join(_ENTRY.pack(*entry) for entry in sorted(entries))


def decode_acl(data: bytes) -> list[tuple[int, int, int]]:
    (version,) = _HEADER.unpack_from(data)
    if version != ACL_VERSION:
        raise ValueError(f"ACL version {version}")
    return [_ENTRY.unpack_from(data, offset) for offset in range(_HEADER.size, len(data), _ENTRY.size)]


def read_acl(path: str) -> bytes | None:
    """A directory's access ACL as the kernel stores it; None when it has none beyond its mode."""
    try:
        return os.getxattr(path, XATTR, follow_symlinks=False)
    except OSError:
        return None


def with_search(acl: bytes | None, mode: int, uid: int, tag: int = USER) -> bytes:
    """The access ACL `acl` (or the one `mode` implies) with `u:uid:--x` (`g:uid:--x` for tag GROUP) added and the
    mask widened to pass it.
    The mask is the group bits of the mode from then on: it lets the named entry through and nothing else, as the
    owning group's own entry keeps its bits."""
    if acl is None:
        entries = [
            (USER_OBJ, (mode >> 6) & 7, NO_ID),
            (GROUP_OBJ, (mode >> 3) & 7, NO_ID),
            (OTHER, mode & 7, NO_ID),
        ]
    else:
        entries = decode_acl(acl)
    named = {(t, eid): perm for t, perm, eid in entries if t in (USER, GROUP)}
    named[(tag, uid)] = named.get((tag, uid), 0) | SEARCH
    group_obj = next(perm for t, perm, _ in entries if t == GROUP_OBJ)
    mask = next((perm for t, perm, _ in entries if t == MASK), group_obj) | SEARCH
    kept = [e for e in entries if e[0] not in (USER, GROUP, MASK)]
    return encode_acl([*kept, *((t, perm, eid) for (t, eid), perm in named.items()), (MASK, mask, NO_ID)])


@dataclass
class Claim:
    """One directory opened to one uid (or, with tag GROUP, one gid), and what it was before any harness opened it."""

    path: str
    uid: int
    mode: int
    acl: str | None  # hex of the original xattr, or None for none
    tag: int = USER

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.path, self.tag, self.uid)


def _restore(claim: Claim) -> None:
    """Take the claim's entry back out of the directory's ACL (its original permission, if it had one), leaving
    other users' entries: another harness's cells may still need theirs. When no named entry is left, the ACL
    goes and the mode's group bits come back from the owning group's entry (a mask had stood in them); when only
    the directory's own entries are left, its original ACL comes back as it was."""
    with contextlib.suppress(FileNotFoundError):
        current = read_acl(claim.path)
        if current is None:
            return
        original = bytes.fromhex(claim.acl) if claim.acl else None
        before = decode_acl(original) if original else []
        ours = (claim.tag, claim.uid)
        kept = [e for e in decode_acl(current) if (e[0], e[2]) != ours]
        kept += [e for e in before if (e[0], e[2]) == ours]
        named = sorted(e for e in kept if e[0] in (USER, GROUP))
        if not named:
            group = next(perm for tag, perm, _ in kept if tag == GROUP_OBJ)
            os.removexattr(claim.path, XATTR, follow_symlinks=False)
            mode = stat.S_IMODE(os.stat(claim.path, follow_symlinks=False).st_mode)
            os.chmod(claim.path, (mode & ~0o070) | (group << 3), follow_symlinks=False)
        elif original is not None and named == sorted(e for e in before if e[0] in (USER, GROUP)):
            os.setxattr(claim.path, XATTR, original, follow_symlinks=False)
        else:
            os.setxattr(claim.path, XATTR, encode_acl(kept), follow_symlinks=False)


def _state_file(pid: int) -> Path:
    return STATE_DIR / f"{pid}.json"


def _load_all() -> dict[int, list[Claim]]:
    claims: dict[int, list[Claim]] = {}
    for path in STATE_DIR.glob("*.json"):
        if not path.stem.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, TypeError):
            claims[int(path.stem)] = [Claim(**entry) for entry in json.loads(path.read_text())]
    return claims


def _save(pid: int, claims: list[Claim]) -> None:
    path = _state_file(pid)
    if not claims:
        path.unlink(missing_ok=True)
        return
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps([vars(c) for c in claims]))
    os.replace(temp, path)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the exclusive lock of a state directory of root's (created 0700 if new), for one harness at a time."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _locked() -> contextlib.AbstractContextManager[None]:
    return locked(STATE_DIR)


def sweep() -> list[str]:
    """Put back what dead harnesses (SIGKILLed) granted and no live one still shares; the paths restored."""
    if not STATE_DIR.is_dir():
        return []
    with _locked():
        return _sweep_locked(_load_all())


def _sweep_locked(every: dict[int, list[Claim]]) -> list[str]:
    live = {pid: claims for pid, claims in every.items() if pid_alive(pid)}
    shared = {c.key for claims in live.values() for c in claims}
    restored = []
    for pid, claims in every.items():
        if pid in live:
            continue
        for claim in claims:
            if claim.key not in shared:
                _restore(claim)
                restored.append(claim.path)
        _state_file(pid).unlink(missing_ok=True)
    return restored


def ancestors(paths: Iterable[str | Path]) -> list[str]:
    """Every directory from / down to each path (the path itself when it is a directory), each once, top first."""
    found: dict[str, None] = {}
    for path in paths:
        real = Path(os.path.realpath(path))
        chain = [real, *real.parents] if real.is_dir() else list(real.parents)
        for directory in reversed(chain):
            found[str(directory)] = None
    return list(found)


def unsearchable(uid: int, gid: int, directories: list[str], groups: tuple[int, ...] = ()) -> list[str]:
    """Those of the directories that uid (with gid and the supplementary groups, as cells run) may not search: asked
    of the kernel by a forked child that becomes that user, so ACLs and every other rule count."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only makes system calls, then leaves without cleanup
        try:
            os.close(read)
            os.setgroups(list(groups))
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            denied = [d for d in directories if not os.access(d, os.X_OK)]
            os.write(write, "\0".join(denied).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return [d for d in data.decode().split("\0") if d]


@dataclass
class Grant:
    """The directories this harness opened to the cell user, put back by `revert` (idempotent)."""

    pid: int
    claims: list[Claim] = field(default_factory=list)

    def revert(self) -> None:
        if not self.claims:
            return
        with _locked():
            every = _load_all()
            every.pop(self.pid, None)
            shared = {c.key for pid, claims in every.items() if pid_alive(pid) for c in claims}
            for claim in self.claims:
                if claim.key not in shared:
                    _restore(claim)
            _state_file(self.pid).unlink(missing_ok=True)
            self.claims = []


def grant(uid: int, gid: int, paths: Iterable[str | Path], group: int | None = None) -> Grant:
    """Let uid search every directory down to each of the paths, adding `u:uid:--x` where it may not (with
    `group`, `g:group:--x`, which opens them to every uid in that group, uid included); recorded before the first
    change. A ReachError names a directory no ACL could open (the harness cannot help there)."""
    tag, eid, groups = (USER, uid, ()) if group is None else (GROUP, group, (group,))
    pid = os.getpid()
    directories = ancestors(paths)
    result = Grant(pid)
    with _locked():
        every = _load_all()
        _sweep_locked(every)
        others = {c.key: c for p, claims in every.items() if p != pid and pid_alive(p) for c in claims}
        mine = {c.key: c for c in every.get(pid, [])}
        for directory in directories:  # one another harness opened: ours too, with the original it recorded
            key = (directory, tag, eid)
            if key in others and key not in mine:
                mine[key] = others[key]
        _save(pid, list(mine.values()))
        for directory in unsearchable(uid, gid, directories, groups):
            info = os.stat(directory, follow_symlinks=False)
            original = read_acl(directory)
            claim = Claim(directory, eid, stat.S_IMODE(info.st_mode), original.hex() if original else None, tag)
            mine[claim.key] = claim
            _save(pid, list(mine.values()))  # recorded before the change, so that a later harness can undo it
            try:
                os.setxattr(directory, XATTR, with_search(original, info.st_mode, eid, tag), follow_symlinks=False)
            except OSError as exc:
                del mine[claim.key]
                _save(pid, list(mine.values()))
                result.claims = list(mine.values())
                result.revert()
                raise ReachError(
                    exc.errno, f"cannot add a search ACL entry for {'uid' if tag == USER else 'gid'} {eid}: {exc.strerror}", directory
                ) from None
        result.claims = list(mine.values())
    return result


def installation_paths() -> list[str]:
    """What every cell reaches besides its inputs: the interpreter (its real file, the venv and the base prefix)
    and this checkout."""
    checkout = Path(__file__).resolve().parents[2]
    return [os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, str(checkout)]
