"""Compose's `prepare` (uid 0 with CHOWN and DAC_OVERRIDE): values from .env reach it through its environment, are
checked, and never pass through a shell."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.run.prepare_results import PrepareError, prepare


def test_it_makes_the_run_folder_and_hands_it_and_the_cache_over(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "cache").mkdir()
    folder = prepare(tmp_path / "results", tmp_path / "cache", "quick", "4242:4343")
    assert folder == tmp_path / "results" / "quick" and folder.is_dir()
    for path in (folder, tmp_path / "cache"):
        assert (path.stat().st_uid, path.stat().st_gid) == (4242, 4343)
    assert prepare(tmp_path / "results", tmp_path / "cache", "quick", "4242:4343") == folder  # again: no change


@pytest.mark.parametrize(
    ("run", "owner", "problem"),
    [
        ("quick; touch /pwned", "1000:1000", "EDGEBENCH_RUN 'quick; touch /pwned' is not one folder name"),
        ("$(touch /pwned)", "1000:1000", "is not one folder name"),
        ("..", "1000:1000", "is not one folder name"),
        ("../etc", "1000:1000", "is not one folder name"),
        ("", "1000:1000", "is not one folder name"),
        ("quick", "1000:1000 /etc/shadow", "is not uid:gid in numbers"),
        ("quick", "root:root", "is not uid:gid in numbers"),
    ],
)
def test_a_value_a_shell_would_have_run_is_refused_and_nothing_is_made(tmp_path, run, owner, problem):
    (tmp_path / "results").mkdir()
    with pytest.raises(PrepareError, match=problem):
        prepare(tmp_path / "results", tmp_path, run, owner)
    assert list((tmp_path / "results").iterdir()) == []


def test_a_symlink_in_the_run_folders_place_is_refused_not_followed(tmp_path):
    (tmp_path / "results").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "results" / "quick").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PrepareError, match="exists and is not a folder; remove it"):
        prepare(tmp_path / "results", tmp_path / "elsewhere", "quick", "4242:4242")
    assert (tmp_path / "elsewhere").stat().st_uid == os.getuid()


def test_the_module_says_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "EDGEBENCH_RUN": "a b", "EDGEBENCH_OWNER": "1:1"}
    argv = [sys.executable, "-m", "harness.run.prepare_results", str(tmp_path), str(tmp_path)]  # the image runs it with -I
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=os.getcwd())
    assert proc.returncode == 2
    assert proc.stderr == (
        "edgebench prepare: error: EDGEBENCH_RUN 'a b' is not one folder name; use letters, digits, '.', '_' and '-'\n"
    )
