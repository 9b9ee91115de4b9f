"""Device speed at the command line: `edgebench estimate` predicts a step's time from the device's GFLOPS,
and `edgebench devices` lists each device's throughput with its source."""

from __future__ import annotations

import json

import pytest

from tests.helpers import edgebench, edgebench_json
from workloads.flops import step_flops
from workloads.params import WorkloadParams

# opt-8m (hidden 192, 4 layers, ffn 768, vocabulary 30,522) at batch 2 x seq 16, counted by hand:
# 4 layers x (4 x 192^2 + 2 x 192 x 768) matmul weights + the tied LM head 30,522 x 192, 2 FLOPs each per
# token (32 tokens), plus attention's 2 x 2 x layers x batch x seq^2 x hidden.
OPT_8M_FORWARD = 2 * (4 * (4 * 192**2 + 2 * 192 * 768) + 30522 * 192) * 32 + 4 * 4 * 2 * 16**2 * 192
# bert-4m (hidden 128, 2 layers, ffn 512) classifying: no LM head over the vocabulary.
BERT_4M_FORWARD = 2 * (2 * (4 * 128**2 + 2 * 128 * 512)) * 32 + 4 * 2 * 2 * 16**2 * 128


def _flops(model: str, method: str, **extra) -> float | None:
    return step_flops(WorkloadParams(model=model, method=method, batch=2, seq_len=16, **extra))


@pytest.mark.parametrize("method, passes", [("inference", 1), ("mezo", 2), ("bp", 3), ("bp-checkpointed", 4)])
def test_step_flops_are_the_methods_forward_passes(method, passes):
    assert OPT_8M_FORWARD == 489_873_408
    assert _flops("opt-8m", method) == passes * OPT_8M_FORWARD


@pytest.mark.parametrize(
    "method, tuning, extra, passes",
    [
        ("mezo", "full", {"n_queries": 3}, 6),  # two forwards per query
        ("mezo", "head", {}, 1),  # a classifier's features are computed once, the head re-evaluated
        ("bp", "head", {}, 1),  # the frozen backbone gets no backward
        ("bp", "lora", {}, 2),  # activations' gradients flow through it, frozen weights get none
        ("bp-checkpointed", "lora", {}, 3),
    ],
)
def test_step_flops_of_parameter_efficient_tuning(method, tuning, extra, passes):
    assert _flops("bert-4m", method, tuning=tuning, **extra) == passes * BERT_4M_FORWARD


def test_step_flops_unknown_model_is_none(tmp_path):
    assert _flops(str(tmp_path / "no-model"), "mezo") is None


def test_estimate_predicts_step_time_from_device_gflops():
    args = ("estimate", "--device", "rpi-4-2gb", "--model", "opt-8m", "--method", "bp-checkpointed")
    out = edgebench_json(*args, "--batch", "2", "--seq", "16", process=True)
    assert out["step_flops"] == 4 * OPT_8M_FORWARD
    assert out["device_gflops"] == 22.9  # the catalogue's Raspberry Pi 4
    assert out["predicted_step_seconds"] == pytest.approx(4 * OPT_8M_FORWARD / 22.9e9)
    text = " ".join(edgebench(*args, "--batch", "2", "--seq", "16", check=True, process=True).stdout.split())
    seconds = f"{4 * OPT_8M_FORWARD / 22.9e9:.3g}"
    assert (
        f"predicted step time on rpi-4-2gb: {seconds} s at its 22.9 GFLOPS (a lower bound: sgemm speed)"
        in text
    )


def test_estimate_on_a_device_without_throughput_predicts_no_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "devices.yaml").write_text("devices:\n  - {name: my-board, memory: 3GiB, cpus: 2}\n")
    args = ["estimate", "--device", "my-board", "--file", "devices.yaml", "--model", "opt-1m", "--method", "mezo"]
    result = edgebench(*args, "--json")
    assert result.returncode == 0
    out = json.loads(result.stdout)
    assert out["device_gflops"] is None and out["predicted_step_seconds"] is None
    assert out["step_flops"] > 0
    result = edgebench(*args)
    assert result.returncode == 0
    assert "predicted step time on my-board: unknown" in result.stdout


def _table_row(text: str, name: str) -> list[str]:
    """The first line of a rich table's row (the header's too), cell by cell."""
    lines = text.replace("┃", "│").splitlines()
    line = next(line for line in lines if line.startswith(f"│ {name} "))
    return [cell.strip() for cell in line.strip("│").split("│")]


def test_devices_table_lists_throughput_bandwidth_and_source(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("devices:\n  - {name: my-board, memory: 3GiB, cpus: 2}\n")
    result = edgebench("devices", "--file", str(extra))
    assert result.returncode == 0
    text = result.stdout
    header = _table_row(text, "name")
    pi = dict(zip(header, _table_row(text, "rpi-4-2gb"), strict=True))
    assert (pi["GFLOPS"], pi["GB/s"]) == ("22.9", "2.33")
    assert pi["speed source"].startswith("https://github.com/geerlingguy/")  # folded after that
    mine = dict(zip(header, _table_row(text, "my-board"), strict=True))
    assert (mine["GFLOPS"], mine["GB/s"]) == ("-", "-")
    assert mine["speed source"].startswith("no throughput")
    result = edgebench("devices", "--json")
    assert result.returncode == 0
    listed = {d["name"]: d for d in json.loads(result.stdout)}
    assert listed["rpi-4-2gb"]["gflops"] == 22.9 and listed["rpi-4-2gb"]["bandwidth_gbs"] == 2.33
    assert listed["rpi-4-2gb"]["gflops_source"] and listed["rpi-4-2gb"]["bandwidth_source"]
