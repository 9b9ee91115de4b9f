"""The cell user reaches the installation and the caches without any permission widened for good: a root harness
adds `u:UID:--x` ACL entries to exactly the directories that deny that user, for the run, and puts each back to the
bit (harness.run.reach). Through the real kernel: a cache under a private (0700) directory, a SIGKILLed granter, and the
mode, owner and ACL of every directory above the interpreter, the venv, the checkout and the cache."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devices.cache import cache_dir
from harness.record.store import load_records
from harness.run import cell_uids, reach
from harness.run.executors import cell_user, local
from tests.helpers import edgebench, observed, one_cell_spec, require_kernel_caps, write_spec

pytestmark = [pytest.mark.integration, pytest.mark.alone, pytest.mark.usefixtures("no_leftover_cgroups")]

ROOT = Path(__file__).resolve().parents[1]
ONE_CELL = one_cell_spec("reach")
#: The stand-in cell observes who it is, what it read from the cache, and whether it could list the private
#: directory.
READ_CACHE = """
import json, os, sys
cache = os.environ["EDGEBENCH_CACHE"]
seen = {
    "uid": os.getuid(),
    "read": open(os.path.join(cache, "probe.txt")).read(),
    "can_list_private": os.access(os.path.dirname(cache), os.R_OK),
}
print("observed: " + json.dumps(seen), file=sys.stderr, flush=True)
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}))
"""


@pytest.fixture
def as_root(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("cells change user only when the harness runs as root")
    require_kernel_caps()
    monkeypatch.setenv(cell_user.ENV_CELL_USER, "")
    monkeypatch.delenv(cell_user.ENV_CELL_USER)


@pytest.fixture
def private_cache(tmp_path, monkeypatch, as_root) -> Path:
    """An edgebench cache under a 0700 directory (as ~/.cache/edgebench is under a private /root), seeded with
    the host's measured figures so that nothing is measured again."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    cache = private / "edgebench"
    cache.mkdir()
    for figure in cache_dir().glob("*.json"):
        shutil.copy(figure, cache)
    (cache / "probe.txt").write_text("from the cache")
    monkeypatch.setenv("EDGEBENCH_CACHE", str(cache))
    return cache


def snapshot(paths: list[str | Path]) -> dict[str, tuple]:
    """Mode, owner and ACL of every directory above (and at) each path."""
    shots = {}
    for directory in reach.ancestors(paths):
        info = os.stat(directory)
        shots[directory] = (info.st_mode, info.st_uid, info.st_gid, reach.read_acl(directory))
    return shots


def watched(cache: Path) -> list[str | Path]:
    return [*reach.installation_paths(), ROOT, cache]


def test_a_cache_under_a_private_directory_is_opened_to_the_cell_user_alone_and_put_back(
    tmp_path, monkeypatch, private_cache
):
    """Old code: the probe did not look at the cache, the cell ran as nobody and could not open it (error)."""
    before = snapshot(watched(private_cache))
    monkeypatch.setattr(local, "runner_argv", lambda cell: [sys.executable, "-c", READ_CACHE])
    out = tmp_path / "run"
    assert edgebench("run", str(write_spec(tmp_path, ONE_CELL)), "--out", str(out), "--no-report").returncode == 0
    (record,) = load_records(out)
    assert record.status == "ok", record.error
    seen = observed(out, record)
    assert cell_uids.FIRST_UID <= seen["uid"] <= cell_uids.LAST_UID
    assert seen["read"] == "from the cache"
    assert seen["can_list_private"] is False, "search was granted, never listing"
    assert snapshot(watched(private_cache)) == before, "a directory's mode, owner or ACL changed"
    assert not reach.read_acl(private_cache.parent) and (private_cache.parent.stat().st_mode & 0o777) == 0o700
    assert not reach._state_file(os.getpid()).exists()


def test_a_grant_opens_to_one_uid_only(tmp_path, as_root):
    private = tmp_path / "private"
    (private / "inner").mkdir(parents=True)
    private.chmod(0o700)
    nobody, daemon = pwd.getpwnam("nobody"), pwd.getpwnam("daemon")
    grant = reach.grant(nobody.pw_uid, nobody.pw_gid, [private / "inner"])
    try:
        assert str(private) in [c.path for c in grant.claims]
        assert reach.unsearchable(nobody.pw_uid, nobody.pw_gid, [str(private)]) == []
        assert reach.unsearchable(daemon.pw_uid, daemon.pw_gid, [str(private)]) == [str(private)]
        assert private.stat().st_mode & 0o007 == 0, "others gained nothing"
    finally:
        grant.revert()
    assert reach.read_acl(str(private)) is None and private.stat().st_mode & 0o777 == 0o700


def test_what_a_sigkilled_harness_granted_is_put_back_by_the_next(tmp_path, as_root):
    private = tmp_path / "private"
    (private / "inner").mkdir(parents=True)
    private.chmod(0o750)
    nobody = pwd.getpwnam("nobody")
    killed = textwrap.dedent(f"""
        import os, signal
        from harness.run import reach
        reach.grant({nobody.pw_uid}, {nobody.pw_gid}, [{str(private / "inner")!r}])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.Popen([sys.executable, "-c", killed], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.wait(60) == -signal.SIGKILL, proc.stderr.read()
    assert reach.read_acl(str(private)) is not None, "the killed harness granted nothing"
    assert (reach.STATE_DIR / f"{proc.pid}.json").exists()
    assert str(private) in reach.sweep()
    assert reach.read_acl(str(private)) is None and private.stat().st_mode & 0o777 == 0o750
    assert not (reach.STATE_DIR / f"{proc.pid}.json").exists()


def harness_holding_a_grant(user: pwd.struct_passwd, path: Path) -> subprocess.Popen:
    """Another harness process that has opened `path` to `user` and keeps the grant until its stdin closes; read
    one line from its stdout first (the grant is in place then)."""
    code = (
        "from harness.run import reach; import sys; "
        f"g = reach.grant({user.pw_uid}, {user.pw_gid}, [{str(path)!r}]); print(flush=True); sys.stdin.read(); g.revert()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_harnesses_at_once_share_a_grant_and_the_last_puts_it_back(tmp_path, as_root):
    """A second harness that finds a directory opened by a live one claims it too: the first to finish must not
    close it under the other's cells."""
    private = tmp_path / "private"
    (private / "inner").mkdir(parents=True)
    private.chmod(0o700)
    nobody = pwd.getpwnam("nobody")
    other = harness_holding_a_grant(nobody, private / "inner")
    try:
        other.stdout.readline()
        mine = reach.grant(nobody.pw_uid, nobody.pw_gid, [private / "inner"])
        assert str(private) in [c.path for c in mine.claims]
        other.stdin.close()
        assert other.wait(30) == 0
        assert reach.unsearchable(nobody.pw_uid, nobody.pw_gid, [str(private)]) == [], (
            "closed under our cells"
        )
        mine.revert()
    finally:
        other.kill()
    assert reach.read_acl(str(private)) is None and private.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("first", ["mine", "other"])
def test_harnesses_of_two_cell_users_each_take_back_only_their_own_entry(tmp_path, as_root, first):
    """Two runs at once with different cell users: whichever finishes first leaves the other's entry, and once both
    are done the directory is as it was (no entry left behind, no group bit widened)."""
    private = tmp_path / "private"
    (private / "inner").mkdir(parents=True)
    private.chmod(0o700)
    nobody, daemon = pwd.getpwnam("nobody"), pwd.getpwnam("daemon")
    other = harness_holding_a_grant(daemon, private / "inner")
    try:
        other.stdout.readline()
        mine = reach.grant(nobody.pw_uid, nobody.pw_gid, [private / "inner"])
        if first == "mine":
            mine.revert()
            assert reach.unsearchable(daemon.pw_uid, daemon.pw_gid, [str(private)]) == [], "closed under its cells"
            other.stdin.close()
            assert other.wait(30) == 0
        else:
            other.stdin.close()
            assert other.wait(30) == 0
            assert reach.unsearchable(nobody.pw_uid, nobody.pw_gid, [str(private)]) == [], "closed under ours"
            mine.revert()
    finally:
        other.kill()
    assert reach.read_acl(str(private)) is None and private.stat().st_mode & 0o777 == 0o700


def test_make_test_deps_changes_no_mode_outside_the_checkout():
    """Finding 2: `make test-deps` used to chmod o+x every directory above the interpreter, venv and cache."""
    if not shutil.which("make"):
        pytest.skip("no make here")
    proc = subprocess.run(["make", "-n", "test-deps"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not any(word in proc.stdout for word in ("chmod", "setfacl", "chown")), proc.stdout


def test_acl_encoding_round_trips_and_widens_only_the_mask():
    acl = reach.with_search(None, 0o40700, 65534)
    entries = reach.decode_acl(acl)
    assert entries == [
        (reach.USER_OBJ, 7, reach.NO_ID),
        (reach.USER, 1, 65534),
        (reach.GROUP_OBJ, 0, reach.NO_ID),
        (reach.MASK, 1, reach.NO_ID),
        (reach.OTHER, 0, reach.NO_ID),
    ]
    again = reach.decode_acl(reach.with_search(acl, 0o40710, 1000))
    assert [e for e in again if e[0] == reach.USER] == [(reach.USER, 1, 1000), (reach.USER, 1, 65534)]
    assert json.dumps(entries)  # plain numbers, as the state file stores the original
