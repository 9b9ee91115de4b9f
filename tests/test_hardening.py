"""What a hostile cell, spec or local user can put in front of the harness's own writing and printing (issue 26,
finding 11 and 8): Rich markup in a cell's words, a full disk, two --fresh runs in one second, links and files
another user planted in the run directory. Through the real CLI and, for the disk, a real full tmpfs."""

from __future__ import annotations

import errno
import io
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from harness.plan.spec import load_spec
from harness.record.errors import UserError
from harness.record.store import RESULTS, RunStore, load_records, open_log, write_bytes_atomic
from harness.run import scheduler
from harness.run.executors import local
from tests.helpers import edgebench, observed, one_cell_spec
from tests.records_factory import make_record, make_run_info
from tests.test_reports_fixtures import sweep, write_run
from workloads.metrics import Loss

ONE_CELL = one_cell_spec("hardening", steps=1)
#: A stand-in cell that ends with an error whose text is Rich markup (a closing tag with nothing open).
MARKUP_ERROR = """
import json
print(json.dumps({"event": "result", "status": "error", "steps": 0, "error": "bad [/x] tag [bold]here"}))
"""
OK_CELL = """
import json
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}))
"""


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("planting files as another user, mounting a tmpfs: needs root")


# --- Rich markup ------------------------------------------------------------------------------------------------


def test_a_cells_error_in_rich_markup_is_printed_as_text():
    record = make_record("error").model_copy(update={"error": "bad [/x] tag [bold]here"})
    console = Console(file=io.StringIO(), width=400)
    console.print(scheduler.describe(record))  # on main: MarkupError, which aborted the run
    assert "bad [/x] tag [bold]here" in console.file.getvalue()


def test_a_run_whose_cell_errs_in_markup_records_it_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "runner_argv", lambda cell: [sys.executable, "-c", MARKUP_ERROR])
    spec = tmp_path / "spec.yaml"
    spec.write_text(ONE_CELL.replace("method: mezo", "method: [mezo, inference]"))
    out = tmp_path / "run"
    assert edgebench("run", str(spec), "--out", str(out), "--no-report").returncode == 3
    records = load_records(out)
    assert [r.status for r in records] == ["error", "error"]
    assert all(r.error == "bad [/x] tag [bold]here" for r in records)


def test_compare_prints_a_regression_whose_error_is_markup(tmp_path):
    records = sweep(devices=("rpi-4-2gb",), models=("opt-1m",))
    base = write_run(tmp_path / "base", records)
    index = next(i for i, r in enumerate(records) if r.status == "ok")
    current = [r.model_copy(deep=True) for r in records]
    current[index] = current[index].model_copy(update={"status": "error", "error": "died [/x] in [link=x]"})
    cur = write_run(tmp_path / "cur", current, expected=[r.cell_id for r in records])
    result = edgebench("compare", str(base), str(cur))
    assert result.returncode == 1
    assert "died [/x] in [link=x]" in result.stderr


# --- a full disk --------------------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A real 1 MiB tmpfs, filled to the last byte but for a run directory holding one record."""
    needs_root()
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        run_dir = mount / "run"
        store = RunStore(run_dir)
        store.prepare(make_run_info(spec_hash="h"), fresh=False)
        store.append(make_record("ok"))
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 512):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield run_dir
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def leftovers(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.rglob("*.tmp"))


def test_enospc_on_append_is_one_line_naming_the_file_and_keeps_what_was_recorded(full_disk):
    store = RunStore(full_disk)
    before = (full_disk / RESULTS).read_bytes()
    record = make_record("ok", seed=7)
    losses = Loss(values=[0.5] * (16 << 10))  # 80 KB: past the page
    record = record.model_copy(update={"metrics": record.metrics.model_copy(update={"loss": losses})})
    with pytest.raises(UserError) as caught:
        store.append(record)
    assert str(caught.value).startswith(f"{full_disk / RESULTS}: No space left on device")
    assert "\n" not in str(caught.value)
    assert (full_disk / RESULTS).read_bytes() == before  # no partial line glued on
    assert len(load_records(full_disk)) == 1


def test_enospc_on_an_atomic_write_leaves_no_temp_file(full_disk):
    with pytest.raises(UserError) as caught:
        write_bytes_atomic(full_disk / "run.json", b"x" * (256 << 10))
    assert str(caught.value).startswith(f"{full_disk / 'run.json'}: No space left on device")
    assert leftovers(full_disk) == []


def test_a_run_on_a_full_disk_exits_2_in_one_line_and_leaves_no_temp_file(full_disk, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(ONE_CELL)
    result = edgebench("run", str(spec), "--out", str(full_disk), "--no-report", "--fresh")
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and str(full_disk) in err[0], err
    assert leftovers(full_disk) == []


# --- --fresh twice in one second ---------------------------------------------------------------------------------


def test_two_fresh_runs_in_the_same_second_keep_both_backups(tmp_path, monkeypatch):
    monkeypatch.setattr("harness.record.store.time.strftime", lambda fmt: "20270101-000000")
    store = RunStore(tmp_path)
    for seed in (1, 2, 3):
        store.prepare(make_run_info(spec_hash="h"), fresh=True)
        store.append(make_record("ok", seed=seed))
    backups = sorted(tmp_path.glob(f"{RESULTS}.*.bak"))
    assert len(backups) == 2, backups
    seeds = {r.params.seed for b in backups for r in load_records(_as_run(b, tmp_path))}
    assert seeds == {1, 2}


def _as_run(backup: Path, tmp_path: Path) -> Path:
    folder = tmp_path / f"view-{backup.name}"
    folder.mkdir()
    (folder / RESULTS).write_bytes(backup.read_bytes())
    return folder


# --- links and files another user planted ------------------------------------------------------------------------


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "shadow"
    path.write_text("root's secret\n")
    return path


def cell_id(spec: Path) -> str:
    (cell,) = load_spec(spec).cells
    return cell.id


def test_a_log_link_planted_by_another_user_is_refused_and_its_target_untouched(tmp_path, monkeypatch, victim):
    needs_root()
    monkeypatch.setattr(local, "runner_argv", lambda cell: [sys.executable, "-c", OK_CELL])
    spec = tmp_path / "spec.yaml"
    spec.write_text(ONE_CELL)
    out = tmp_path / "shared-out"
    (out / "logs").mkdir(parents=True)
    link = out / "logs" / f"{cell_id(spec)}.log"
    link.symlink_to(victim)
    nobody = pwd.getpwnam("nobody").pw_uid
    os.lchown(link, nobody, nobody)
    result = edgebench("run", str(spec), "--out", str(out), "--no-report")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"{link} belongs to another user (uid {nobody})" in line
    assert victim.read_text() == "root's secret\n"


def test_a_log_link_is_never_followed_even_when_ours(tmp_path, victim):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "cell.log").symlink_to(victim)
    with pytest.raises(UserError, match="is a symbolic link"):
        open_log(tmp_path, "cell.log")
    assert victim.read_text() == "root's secret\n"


def test_a_linked_logs_folder_is_never_followed(tmp_path):
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "logs").symlink_to(elsewhere)
    with pytest.raises(UserError, match="is a link or not a folder"):
        open_log(run_dir, "cell.log")
    with pytest.raises(UserError, match="is a link or not a folder"):
        write_bytes_atomic(run_dir / "logs" / "cell.log", b"x")
    assert list(elsewhere.iterdir()) == []


def test_an_output_directory_another_user_owns_is_refused_as_root(tmp_path):
    needs_root()
    out = tmp_path / "theirs"
    out.mkdir()
    nobody = pwd.getpwnam("nobody").pw_uid
    os.chown(out, nobody, nobody)
    spec = tmp_path / "spec.yaml"
    spec.write_text(ONE_CELL)
    result = edgebench("run", str(spec), "--out", str(out), "--no-report")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"{out} belongs to another user (uid {nobody})" in line
    assert list(out.iterdir()) == []


# --- what reaches a cell: the environment, the working directory, remote code -----------------------------------------

#: A stand-in cell that observes its environment.
ENV_CELL = """
import json, os, sys
print("observed: " + json.dumps(dict(os.environ)), file=sys.stderr, flush=True)
print(json.dumps({"event": "result", "status": "ok", "steps": 1, "metrics": {}}))
"""
SECRETS = {"HF_TOKEN": "hf_secret", "AWS_SECRET_ACCESS_KEY": "aws", "GITHUB_TOKEN": "gh", "PYTHONPATH": "/tmp/evil"}


def test_a_cell_gets_an_allow_listed_environment_where_offline_wins(tmp_path, monkeypatch):
    for name, value in {**SECRETS, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(local, "runner_argv", lambda cell: [sys.executable, "-c", ENV_CELL])
    spec = tmp_path / "spec.yaml"
    spec.write_text(ONE_CELL)
    assert edgebench("run", str(spec), "--out", str(tmp_path / "run"), "--no-report").returncode == 0
    (record,) = load_records(tmp_path / "run")
    env = observed(tmp_path / "run", record)
    assert not set(SECRETS) & set(env), sorted(env)
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == env["HF_DATASETS_OFFLINE"] == "1"
    assert env["PATH"] == os.environ["PATH"]


#: Planted where a root harness may be started from (/tmp, a shared folder): runs when any child imports ctypes.
PLANTED = "import os\nopen(os.path.join({marker!r}), 'w').write(str(os.getuid()))\nraise SystemExit('planted')\n"


def test_root_children_never_import_from_the_working_directory(tmp_path, monkeypatch):
    """The launcher (root) imports ctypes; `python -m` would take it from the working directory."""
    planted = tmp_path / "shared"
    (planted / "ctypes").mkdir(parents=True)
    marker = tmp_path / "ran-as"
    (planted / "ctypes" / "__init__.py").write_text(PLANTED.format(marker=str(marker)))
    (planted / "devices").mkdir()
    (planted / "devices" / "__init__.py").write_text(PLANTED.format(marker=str(marker)))
    monkeypatch.setattr(local, "runner_argv", lambda cell: [sys.executable, "-c", OK_CELL])
    spec = tmp_path / "spec.yaml"
    spec.write_text(ONE_CELL)
    monkeypatch.chdir(planted)
    assert edgebench("run", str(spec), "--out", str(tmp_path / "run"), "--no-report").returncode == 0
    from devices import cache

    cache._measure(["devices.pyexec"], timeout_s=60)  # the calibration child's way of starting
    assert not marker.exists(), f"a planted module ran as uid {marker.read_text()}"
    (record,) = load_records(tmp_path / "run")
    assert record.status == "ok"


REMOTE_CODE = ONE_CELL.replace("method: mezo,", "method: mezo, trust_remote_code: true,")


def test_trust_remote_code_in_a_spec_alone_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "runner_argv", lambda cell: [sys.executable, "-c", OK_CELL])
    spec = tmp_path / "spec.yaml"
    spec.write_text(REMOTE_CODE)
    out = tmp_path / "run"
    result = edgebench("run", str(spec), "--out", str(out), "--no-report")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "trust_remote_code: true would run the Python code of opt-1m's repository" in line
    assert "--trust-remote-code" in line
    assert not out.exists()
    assert edgebench("run", str(spec), "--out", str(out), "--no-report", "--trust-remote-code").returncode == 0
    (record,) = load_records(out)
    assert record.status == "ok" and record.params.trust_remote_code


def test_compose_takes_the_operators_word_for_remote_code_and_passes_it_to_each_device(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the containers mount the spec from the current directory
    spec = tmp_path / "spec.yaml"
    spec.write_text(REMOTE_CODE)
    result = edgebench("compose", str(spec), "--no-engine-check")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "trust_remote_code: true would run the Python code" in line and "--trust-remote-code" in line
    result = edgebench("compose", str(spec), "--no-engine-check", "--trust-remote-code")
    assert result.returncode == 0
    services = yaml.safe_load(result.stdout)["services"]
    devices = [s for name, s in services.items() if name not in ("prepare", "report")]
    assert devices and all(s["command"][-1] == "--trust-remote-code" for s in devices)
