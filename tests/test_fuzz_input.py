"""Hostile input, fuzzed (hypothesis): spec files and results files of random YAML, wrong types, NaN/inf, huge
numbers, unicode and NUL, path traversal, deep nesting, alias bombs and huge matrices. Each is run or refused in
one line with exit 2: never a traceback, never a write outside --out, never a partial run directory.

Cells do not run here (a scripted executor stands in): these tests are about reading input, not workloads.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import tempfile
import zlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from harness.plan.input_guards import MAX_CELLS, check_document, check_matrix_size, matrix_size, one_line
from harness.record.errors import UserError
from harness.run import matrix
from tests.helpers import CliResult, Scripted, edgebench
from workloads.metrics import CellMetrics
from workloads.params import AXES

FUZZ = settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
#: One fuzzed run directory in this many is also rendered as a report (plots take a good part of a second).
REPORT_EVERY = 10

HOSTILE_TEXT = ["../../escape", "/etc/passwd", "a\x00b", "..", "~/x", "ü\u202e", "opt-1m", "rpi-4-2gb", "1GB", "mezo"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40),
    st.floats(),  # NaN and +-inf included
    st.text(max_size=12),
    st.sampled_from(HOSTILE_TEXT),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.sampled_from(AXES), inner, max_size=4),
    max_leaves=12,
)
VALID = {
    "name": "fuzz",
    "clock": "host",
    "devices": ["rpi-4-2gb"],
    "matrix": {"model": "opt-1m", "method": ["mezo", "inference"], "max_steps": 1},
}
DEVICE = {"name": "fz", "memory": "1GB", "cpus": 1}
SPEC_PATHS = [
    *[(key,) for key in ("name", "description", "devices", "device_files", "matrix", "clock", "timeout_s", "thresholds")],
    ("devices", 0),
    *[("devices", 0, key) for key in ("name", "memory", "cpus", "gflops", "gpu_memory", "unified_memory")],
    *[("matrix", axis) for axis in (*AXES, "devices")],
]


def mutated(document: dict, changes: list[tuple[tuple, object]]) -> dict:
    """`document` with each (path, value) set; a path into a device first makes that device a profile."""
    document = copy.deepcopy(document)
    for path, value in changes:
        if path[:2] == ("devices", 0) and len(path) == 3:
            document["devices"] = [dict(DEVICE)]
        target = document
        with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier change replaced the parent
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
    return document


spec_documents = st.lists(st.tuples(st.sampled_from(SPEC_PATHS), values), min_size=1, max_size=3).map(
    lambda changes: mutated(VALID, changes)
)
spec_files = st.one_of(
    spec_documents.map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode()),
    st.text(max_size=200).map(str.encode),
    st.binary(max_size=200),
)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_one_line_refusal_or_success(result: CliResult, out: Path) -> None:
    assert result.escaped is None and result.returncode in (0, 2, 3), f"escaped: {result.escaped or result.returncode}"
    if result.returncode == 2:
        lines = result.stderr_lines
        assert len(lines) == 1 and lines[0].startswith("edgebench: error: "), lines
        assert not out.exists(), "a refused spec left a run directory"


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(matrix, "executor_class", lambda name: Scripted)


def test_fuzzed_spec_files_run_or_are_refused_in_one_line(scripted):
    tried = []

    @FUZZ
    @given(spec_files)
    def check(data: bytes) -> None:
        tried.append(data)
        with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # a relative path lands in here
            Path("spec.yaml").write_bytes(data)
            result = edgebench("run", "spec.yaml", "--out", "out/run", "--no-report")
            assert_one_line_refusal_or_success(result, Path("out"))
            assert files_under(Path(tmp)) - {"spec.yaml"} <= {"out", *(f"out/{f}" for f in files_under(Path("out")))}

    check()
    print(f"\n{len(tried)} spec files fuzzed, 0 tracebacks, 0 writes outside --out")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real run directory of three cells, written once by the CLI with the scripted executor."""
    root = tmp_path_factory.mktemp("finished")
    spec = root / "spec.yaml"
    spec.write_text(yaml.safe_dump(VALID | {"matrix": {**VALID["matrix"], "method": ["mezo", "bp", "inference"]}}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matrix, "executor_class", lambda name: Scripted)
        assert edgebench("run", str(spec), "--out", str(root / "run"), "--no-report").returncode == 0
    return spec, root / "run"


def record_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


RECORD_PATHS = [
    ("cell_id",), ("status",), ("device",), ("device", "name"), ("device", "memory_bytes"), ("params",),
    ("params", "model"), ("params", "seed"), ("peak_memory_bytes",), ("memory", "rss_peak_bytes"), ("clock",),
    ("clock", "ratio"), ("host_seconds",), ("device_seconds",), ("steps",), ("metrics",), ("validity",),
    ("schema_version",), ("started_at",),
    ("metrics", "param_count"), ("metrics", "timing", "step_time_s"), ("metrics", "accuracy", "final"),
    ("metrics", "accuracy", "curve"), ("metrics", "accuracy", "majority"), ("metrics", "dataset"),
]  # fmt: skip


INFO_PATHS = [
    *[(key,) for key in ("spec_hash", "spec", "devices", "cells", "cell_labels", "started_at", "clocks", "host")],
    ("spec", "name"), ("spec", "thresholds"), ("spec", "thresholds", "max_time_regression"), ("devices", 0),
    ("devices", 0, "memory_bytes"), ("cells", 0), ("resolutions",),
]  # fmt: skip


def damaged(draw, data: bytes, kind: str) -> bytes:
    """`data` cut short, or replaced by noise or by JSON nested too deep to parse recursively (neither holds a
    newline: one line of a file stays one line)."""
    if kind == "cut":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "deep":
        depth = draw(st.integers(100, 5000))
        return b"[" * depth + b"]" * depth
    return draw(st.binary(max_size=100)).replace(b"\n", b"")


@st.composite
def results_files(draw, records: list[dict]) -> bytes:
    """A finished run's results.jsonl with some records changed, then some lines damaged (see `damaged`). Fields
    are changed first: a damaged line is no longer a record whose field could change."""
    kinds = st.sampled_from(["field", "cut", "noise", "deep"])
    changes = draw(st.lists(st.tuples(st.integers(0, len(records) - 1), kinds), min_size=1, max_size=3))
    records = list(records)
    for index, kind in changes:
        if kind == "field":
            records[index] = mutated(records[index], [(draw(st.sampled_from(RECORD_PATHS)), draw(values))])
    lines = [json.dumps(r, allow_nan=True).encode() for r in records]
    for index, kind in changes:
        if kind != "field":
            lines[index] = damaged(draw, lines[index], kind)
    return b"\n".join(lines) + draw(st.sampled_from([b"\n", b""]))


@st.composite
def info_files(draw, info: bytes) -> bytes:
    """A finished run's run.json: as written (three times in seven), with a field changed, or damaged."""
    kind = draw(st.sampled_from(["kept", "kept", "kept", "field", "cut", "noise", "deep"]))
    if kind == "kept":
        return info
    if kind == "field":
        changed = mutated(json.loads(info), [(draw(st.sampled_from(INFO_PATHS)), draw(values))])
        return json.dumps(changed, allow_nan=True).encode()
    return damaged(draw, info, kind)


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def assert_read_or_refused_in_one_line(argv: list[str], codes: tuple[int, ...]) -> None:
    """Run a reader of run directories: it exits with one of `codes`, or 2 with one line."""
    result = edgebench(*argv)
    code, lines = result.returncode, result.stderr_lines
    assert result.escaped is None and code in (*codes, 2), f"{argv[0]} escaped: {result.escaped or code}"
    assert code != 2 or (len(lines) == 1 and lines[0].startswith("edgebench: error: ")), lines


def test_fuzzed_run_directories_are_read_or_refused_in_one_line(scripted, finished_run):
    """compare and report read a hostile run directory, and a resume of it runs: each reads it or refuses it in one
    line; the readers write nothing into it and nothing outside their --out; a refused resume writes nothing."""
    spec, finished = finished_run
    records = record_lines(finished)
    tried, reports = [], []

    @FUZZ
    @given(results_files(records), info_files((finished / "run.json").read_bytes()))
    def check(results: bytes, info: bytes) -> None:
        tried.append(results)
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / "run"
            run_dir.mkdir()
            (run_dir / "run.json").write_bytes(info)
            (run_dir / "results.jsonl").write_bytes(results)
            before = contents(run_dir)
            assert_read_or_refused_in_one_line(["compare", str(finished), str(run_dir)], (0, 1))
            assert_read_or_refused_in_one_line(["compare", str(run_dir), str(finished)], (0, 1))
            if zlib.crc32(results + info) % REPORT_EVERY == 0:  # a report draws plots: slower, so about one in REPORT_EVERY
                reports.append(results)
                report = Path(tmp) / "report" / "report.html"
                assert_read_or_refused_in_one_line(["report", str(run_dir), "--out", str(report)], (0,))
            assert contents(run_dir) == before, "a reader wrote into the run directory"
            assert {p.name for p in Path(tmp).iterdir()} <= {"run", "report"}, "a reader wrote outside --out"
            result = edgebench("run", str(spec), "--out", str(run_dir), "--no-report")  # a resume reads it
            assert_one_line_refusal_or_success(result, Path(tmp) / "absent")
            if result.returncode == 2:
                assert contents(run_dir) == before, "a refused resume wrote"

    check()
    print(f"\n{len(tried)} run directories fuzzed ({len(reports)} also reported), 0 tracebacks, 0 writes outside --out")


def test_matrix_size_is_counted_without_expanding():
    blocks = [{"model": ["a", "b"], "seed": list(range(10**6))}, {"devices": ["pi"], "model": "a", "lr": [1, 2, 3]}]
    assert matrix_size(blocks, device_count=3) == 3 * 2 * 10**6 + 1 * 3


def test_a_matrix_past_the_limit_is_refused_with_its_count_and_the_flag_that_lifts_it():
    blocks = [{"model": "a", "seed": list(range(100)), "lr": list(range(1, 101))}]
    with pytest.raises(UserError) as refused:
        check_matrix_size(blocks, 2, "spec.yaml", MAX_CELLS)
    assert str(refused.value) == (
        "spec.yaml: matrix: expands to 20,000 cells, over the limit of 10,000; shrink the matrix or pass --max-cells 20000"
    )
    check_matrix_size(blocks, 2, "spec.yaml", 20_000)


def test_a_matrix_no_flag_could_run_is_refused_without_its_count():
    blocks = [{"model": "a", **{axis: list(range(1, 3000)) for axis in ("seed", "batch", "seq_len", "eval_examples")}}]
    with pytest.raises(UserError) as refused:
        check_matrix_size(blocks, 1, "spec.yaml", MAX_CELLS)
    assert str(refused.value) == "spec.yaml: matrix: expands to over 1,000,000,000 cells; shrink the matrix"


def test_max_cells_lifts_the_limit(scripted, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text(mutated(VALID, [(("matrix", "seed"), [1, 2, 3])])))  # 2 methods x 3 seeds
    argv = ["run", str(spec), "--out", str(tmp_path / "out"), "--no-report", "--max-cells"]
    refused = edgebench(*argv, "5")
    assert (refused.returncode, refused.stderr_lines) == (2, [f"edgebench: error: {spec}: matrix: expands to 6 cells, "
                                                             "over the limit of 5; shrink the matrix or pass --max-cells 6"])  # fmt: skip
    assert not (tmp_path / "out").exists()
    assert edgebench(*argv, "6").returncode == 0


def nested_aliases(levels: int) -> tuple[str, str]:
    """Anchors of `levels` levels, each nine aliases of the one before, and a list of nine of the last: 9**(levels+1)
    values once expanded, from two lines."""
    anchors = ["&a0 [0, 0, 0, 0, 0, 0, 0, 0, 0]"]
    anchors += [f"&a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, levels)]
    return f"[{', '.join(anchors)}]", f"[[{', '.join([f'*a{levels - 1}'] * 9)}]]"


def alias_bomb() -> str:
    """A spec whose matrix holds 9**9 (387 million) values in a few lines: the seeds define the anchors, the task
    repeats the last; `task` comes first in a workload, so it is the value an error about the first cell would show."""
    anchors, bomb = nested_aliases(8)
    return f"name: bomb\nclock: host\ndevices: [rpi-4-2gb]\nmatrix:\n  seed: {anchors}\n  task: {bomb}\n  model: opt-1m\n"


def test_an_alias_bomb_or_deep_nesting_is_refused_in_moments():
    with pytest.raises(UserError, match="over 100,000 values"):
        check_document(yaml.safe_load(alias_bomb()), "spec.yaml")
    deep: list = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(UserError, match="nested over 50 levels deep; flatten the file"):
        check_document(deep, "spec.yaml")
    check_document(VALID, "spec.yaml")


def test_a_rejection_stays_one_short_line_whatever_it_echoes():
    assert one_line("name 'a\nb\u2028c\x1e\u202ed': bad") == "name 'a\\nb\\u2028c\\x1e\\u202ed': bad"
    line = one_line("spec.yaml: matrix.seed (value " + "9" * 10**6 + "): Input should be a valid integer")
    assert len(line) < 500 and line.startswith("spec.yaml: matrix.seed") and line.endswith("a valid integer")


def spec_text(document: dict) -> str:
    return yaml.safe_dump(document)


#: Each failed before its fix (a traceback, a hang or several lines); the comment says where it was fixed.
HOSTILE_SPECS = {
    "unicode-and-nul-in-names": spec_text(VALID | {"name": "a\x00b/../ü"}),
    "path-traversal-in-device-files": spec_text(VALID | {"device_files": ["../../../../etc/passwd"]}),
    "nul-in-device-files (Spec.device_files)": spec_text(VALID | {"device_files": ["a\x00b"]}),
    "path-traversal-in-a-device-name": spec_text(VALID | {"devices": [DEVICE | {"name": "../../x"}]}),
    "nan-timeout": spec_text(VALID | {"timeout_s": float("nan")}),
    "infinite-timeout (Spec: allow_inf_nan)": spec_text(VALID | {"timeout_s": float("inf")}),
    "infinite-threshold (Thresholds: allow_inf_nan)": spec_text(VALID | {"thresholds": {"max_time_regression": float("inf")}}),
    "a-newline-in-a-key (limits.one_line)": spec_text(VALID | {"thresholds": {"a\nb\u2028c": 1}}),
    "device-names-that-are-lists (Spec._known_axes)": spec_text(mutated(VALID, [(("matrix", "devices"), [["rpi-4-2gb"]])])),
    "device-names-that-are-a-mapping": spec_text(mutated(VALID, [(("matrix", "devices"), {"rpi-4-2gb": 1})])),
    "device-names-that-are-not-strings": spec_text(mutated(VALID, [(("matrix", "devices"), [None, False])])),
    "infinite-cpus (DeviceProfile: allow_inf_nan)": spec_text(VALID | {"devices": [DEVICE | {"cpus": float("inf")}]}),
    "infinite-memory (parse_bytes)": spec_text(VALID | {"devices": [DEVICE | {"memory": float("inf")}]}),
    "memory-past-int64 (parse_bytes)": spec_text(VALID | {"devices": [DEVICE | {"memory": 10**400}]}),
    # max_seconds: .inf was accepted, written to results.jsonl as null, and the run could not be read back.
    "infinite-budget (WorkloadParams: allow_inf_nan)": spec_text(mutated(VALID, [(("matrix", "max_seconds"), float("inf"))])),
    "not-utf-8 (read_spec)": "name: \udcff\n",
    "deep-nesting (read_spec: yaml's RecursionError)": "devices: " + "[" * 5000 + "]" * 5000 + "\n",
    "huge-matrix (limits.check_matrix_size)": spec_text(
        mutated(VALID, [(("matrix", "seed"), list(range(1000))), (("matrix", "lr"), [i / 1e6 for i in range(1, 1001)])])
    ),
    "alias-bomb (limits.check_document)": alias_bomb(),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE_SPECS))
def test_hostile_specs_are_refused_by_the_real_cli_in_one_line_exit_2(tmp_path, case):
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(HOSTILE_SPECS[case].encode(errors="surrogateescape"))
    proc = edgebench("run", str(spec), "--out", str(tmp_path / "out"), "--no-report", process=True, timeout=10)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgebench: error: ") and len(lines[0]) < 1000, proc.stderr[-2000:]
    assert not (tmp_path / "out").exists()


def finished_copy(finished: Path, folder: Path, info: bytes) -> Path:
    """A copy of the finished run directory with `info` as its run.json."""
    folder.mkdir()
    (folder / "results.jsonl").write_bytes((finished / "results.jsonl").read_bytes())
    (folder / "run.json").write_bytes(info)
    return folder


def hostile_info(finished: Path, changes: list[tuple[tuple, object]]) -> bytes:
    return json.dumps(mutated(json.loads((finished / "run.json").read_bytes()), changes)).encode()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("deep", "run.json is corrupted (not JSON)"),  # json's RecursionError (store.read_info_file)
        ("cells", "run.json: cells is not as `edgebench run` writes it"),  # unhashable in merge_run_info
        ("spec", "run.json: spec is not as `edgebench run` writes it"),  # readers index it
        ("resolutions", "run.json: resolutions is not as `edgebench run` writes it"),  # findings read their params
    ],
)
def test_a_hostile_run_json_is_refused_by_its_readers_in_one_line(finished_run, tmp_path, case, message):
    _, finished = finished_run
    info = {
        "deep": b"[" * 5000 + b"]" * 5000,
        "cells": hostile_info(finished, [(("cells", 0), ["a"])]),
        "spec": hostile_info(finished, [(("spec",), ["fuzz"])]),
        "resolutions": hostile_info(finished, [(("resolutions",), [{"params": {"method": 1}}])]),
    }[case]
    run_dir = finished_copy(finished, tmp_path / "run", info)
    for argv in (["compare", str(finished), str(run_dir)], ["report", str(run_dir), "--out", str(tmp_path / "r.html")]):
        result = edgebench(*argv)
        code, lines = result.returncode, result.stderr_lines
        assert code == 2 and len(lines) == 1 and message in lines[0], (argv[0], code, lines)
    assert not (tmp_path / "r.html").exists()


def test_figures_that_are_not_finite_numbers_are_refused_but_a_diverged_loss_is_kept():
    for value in (float("nan"), float("inf"), 10**400, True, "1"):
        with pytest.raises(ValidationError):
            CellMetrics.model_validate({"timing": {"step_time_s": value}})
    assert CellMetrics.model_validate({"timing": {"step_time_s": 3}}).timing.step_time_s == 3.0
    assert math.isnan(CellMetrics.model_validate({"loss": {"last": float("nan")}}).loss.last)


def test_a_run_json_without_a_spec_description_is_still_reported(finished_run, tmp_path):
    _, finished = finished_run
    run_dir = finished_copy(finished, tmp_path / "run", hostile_info(finished, [(("spec",), {})]))
    assert edgebench("report", str(run_dir), "--out", str(tmp_path / "report" / "r.html")).returncode == 0
