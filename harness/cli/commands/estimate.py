"""Predict a workload's peak memory on a device without running it (the analytic memory model), say whether
it fits the device's cap, which is the largest model of the ladder that each method fits, and a lower bound
on its step time from the device's throughput."""

from __future__ import annotations

import argparse
import json
import os
import typing
from dataclasses import asdict

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from devices.catalogue import CatalogueError, resolve_device
from devices.profile import format_bytes
from devices.speed import cell_threads
from devices.validation import validation_message
from harness.cli.commands.devices import add_file_argument, note_unread, user_catalogue
from harness.plan.host_capacity import host_capacity_problem, host_memory_bytes
from harness.record.errors import UserError
from workloads.checks import check_params
from workloads.flops import step_flops, step_seconds
from workloads.host_memory import fit_ratio, largest_fitting, predict_breakdown
from workloads.memory_model import param_count
from workloads.params import Method, Optimizer, WorkloadParams
from workloads.registry import model_shape
from workloads.validated import ValidatedRange, validated_range

HELP = "predict peak memory and step time of a workload on a device, and the largest model that fits"
METHODS = typing.get_args(Method)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", required=True, help="device name from the catalogue (see `edgebench devices`)"
    )
    parser.add_argument(
        "--model", required=True, help="ladder name (e.g. opt-125m, minilm-l6) or a local model dir"
    )
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--task", default="synthetic", help="synthetic (LM loss on decoders) or a real task")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64, help="sequence length")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--optimizer", default="adamw", choices=typing.get_args(Optimizer))
    parser.add_argument("--tuning", default="full", choices=("full", "lora", "head"))
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_file_argument(parser)


def _params(args: argparse.Namespace) -> WorkloadParams:
    fields = {
        "model": args.model,
        "method": args.method,
        "task": args.task,
        "batch": args.batch,
        "seq_len": args.seq,
        "dtype": args.dtype,
        "optimizer": args.optimizer,
        "tuning": args.tuning,
    }
    try:
        params = WorkloadParams.model_validate(fields)
        check_params(params)
    except ValidationError as exc:
        flags = {name: f"--{'seq' if name == 'seq_len' else name}" for name in fields}
        raise UserError(validation_message(exc, names=flags)) from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if model_shape(params.model) is None:
        raise UserError(
            f"cannot estimate {params.model}: its config is not an OPT, BERT or MPNet architecture; use a ladder name"
        )
    return params


def estimate(args: argparse.Namespace) -> dict:
    try:
        note_unread(args.file)
        device = resolve_device(args.device, user_catalogue(args.file))
    except CatalogueError as exc:
        raise UserError(str(exc)) from None
    params = _params(args)
    threads = cell_threads(device, os.cpu_count() or 1)
    parts = predict_breakdown(params, threads)
    if parts is None:
        raise UserError(
            "cannot measure the runtime baseline or the allocator terms here (python -m workloads.baseline or "
            "workloads.calibration failed); check torch"
        )
    cap = device.memory_bytes
    shape = model_shape(params.model)
    assert shape is not None
    largest = {m: largest_fitting(params.model_copy(update={"method": m}), cap, threads=threads) for m in METHODS}
    flops = step_flops(params)
    host = host_memory_bytes()
    checked = validated_range(params.model, params.method)
    return {
        "device": device.name,
        "cap_bytes": cap,
        "host_memory_bytes": host,
        "host_problem": host_capacity_problem(device, host),
        "model": params.model,
        "param_count": param_count(shape, params),
        "method": params.method,
        "batch": params.batch,
        "seq_len": params.seq_len,
        "dtype": params.dtype,
        "predicted_peak_bytes": parts.total,
        "fits": parts.total <= cap,
        "breakdown_bytes": {k: getattr(parts, k) for k in parts.__dataclass_fields__},
        "validated_range": asdict(checked) if checked else None,
        "validated_range_text": validation_line(params, checked),
        "largest_fitting": largest[params.method],
        "largest_fitting_per_method": largest,
        "mezo_over_bp_checkpointed_params": fit_ratio(params, cap, threads=threads),
        "threads": threads,
        "step_flops": flops,
        "device_gflops": device.gflops,
        "predicted_step_seconds": step_seconds(flops, device.gflops),
    }


def validation_line(params: WorkloadParams, checked: ValidatedRange | None) -> str:
    """How far the model was off, measured, on random shapes of this family and method (workloads.validated)."""
    if checked is None:
        return f"not validated on random shapes for {params.model}'s family with {params.method}"
    return f"validated for this family and method: {checked.describe()}"


def step_time_line(result: dict) -> str:
    seconds = result["predicted_step_seconds"]
    if seconds is None:
        return f"predicted step time on {result['device']}: unknown (the device profile gives no GFLOPS)"
    return (
        f"predicted step time on {result['device']}: {seconds:.3g} s at its {result['device_gflops']:g} GFLOPS "
        "(a lower bound: sgemm speed)"
    )


def handle(args: argparse.Namespace) -> int:
    result = estimate(args)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    verdict = "fits" if result["fits"] else "does NOT fit"
    console = Console()
    console.print(
        f"{result['model']} ({result['param_count'] / 1e6:.1f}M params), {result['method']}, "
        f"batch {result['batch']} x seq {result['seq_len']} {result['dtype']} on {result['device']}: "
        f"predicted peak {format_bytes(result['predicted_peak_bytes'])}, cap {format_bytes(result['cap_bytes'])}: {verdict}"
    )
    console.print(result["validated_range_text"], markup=False)
    table = Table(title="predicted peak, by term")
    table.add_column("term")
    table.add_column("bytes", justify="right")
    for term, value in result["breakdown_bytes"].items():
        table.add_row(term, format_bytes(value))
    console.print(table)
    for method, name in result["largest_fitting_per_method"].items():
        console.print(f"largest ladder model that fits with {method}: {name or 'none'}")
    ratio = result["mezo_over_bp_checkpointed_params"]
    console.print(
        f"MeZO / checkpointed BP, parameters of the largest fitting model: {ratio:.2f}x"
        if ratio
        else "MeZO / checkpointed BP: one of them fits no ladder model"
    )
    console.print(step_time_line(result))
    if result["host_problem"]:
        console.print(f"note: `edgebench run` here would refuse it: {result['host_problem']}", markup=False)
    return 0
