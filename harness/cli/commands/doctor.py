"""Say which enforcement backends this host supports, and prove the chosen one by an over-cap allocation."""

from __future__ import annotations

import argparse
import contextlib
import json
import os

from rich.console import Console

from devices.caps.base import CapBackend, CapUnavailable
from devices.caps.container import ContainerLimit
from devices.caps.cuda import cuda_unavailable_reason
from devices.caps.select import choose_backend, probe_all
from devices.catalogue import CatalogueError, resolve_device
from devices.host_speed import HostSpeed, host_speed
from devices.profile import DeviceProfile, format_bytes
from devices.speed import ClockError, cfs_quota, plan_clock
from devices.verify import MIN_PROVABLE_QUOTA_US, UnprovableThrottle, prove, prove_throttle
from harness.cli.commands.devices import user_catalogue
from harness.plan.host_capacity import host_capacity_problem, host_memory_bytes
from harness.record.errors import UserError

HELP = "check and prove memory-cap and CPU-throttle enforcement on this host"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "--device",
        action="append",
        default=[],
        help="prove the throttle for this device (repeatable; default: the catalogue's slowest, and its fastest "
        "that this host can throttle with a core to spare)",
    )
    parser.add_argument(
        "--enforcement", default="auto", help="backend to prove (default: the one `run` would use)"
    )
    parser.add_argument(
        "--gpu", action="store_true", help="also check the CUDA memory-fraction path (imports torch)"
    )


def handle(args: argparse.Namespace) -> int:
    backends = probe_all()
    try:
        chosen = choose_backend(args.enforcement)
    except CapUnavailable as exc:
        raise UserError(str(exc)) from None
    devices = throttle_devices(args.device)
    try:
        restore_host = chosen.prepare_host()
    except CapUnavailable as exc:
        raise UserError(str(exc)) from None
    try:
        proof = prove(chosen)
        throttle = prove_throttles(chosen, devices)
    finally:
        restore_host()
    report = {
        "enforcement": chosen.name,
        "verified": proof.verified and all(t["verified"] for t in throttle["proofs"]),
        "proof": proof.as_dict(),
        "throttle": throttle,
        "backends": {
            name: {"available": reason is None, "reason": reason} for name, reason in backends.items()
        },
        "too_large_for_host": too_large_for_host(),
    }
    if args.gpu:
        reason = cuda_unavailable_reason()
        report["backends"]["cuda"] = {"available": reason is None, "reason": reason}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        console = Console()
        for name, info in report["backends"].items():
            mark = "[green]yes[/]" if info["available"] else f"[red]no[/] ({info['reason']})"
            console.print(f"{name:<10} {mark}")
        verdict = "[green]verified[/]" if proof.verified else "[red]NOT verified[/]"
        console.print(
            f"chosen: {chosen.name}, {verdict}: a {format_bytes(proof.cap_bytes // 4)} allocation under a "
            f"{format_bytes(proof.cap_bytes)} cap survived: {proof.under_cap_survived}; a "
            f"{format_bytes(proof.cap_bytes * 2)} one was stopped: {proof.over_cap_stopped} ({proof.detail})"
        )
        if throttle["reason"]:
            console.print(f"throttle: [yellow]not proven[/] ({throttle['reason']})")
        for name, why in throttle["unprovable"].items():
            console.print(f"throttle {name}: [yellow]not provable here[/] ({why})")
        for t in throttle["proofs"]:
            mark = "[green]verified[/]" if t["verified"] else "[red]NOT verified[/]"
            console.print(
                f"throttle {t['device']}: {mark}, a matmul loop under its quota got {t['detail']}; "
                f"{t['target_gflops']:g} GFLOPS in the catalogue (ratio {t['ratio'] or 0:.3f}); tolerance 15% on the share"
            )
        for problem in report["too_large_for_host"].values():
            console.print(f"[yellow]cannot simulate[/]: {problem}")
    return 0 if report["verified"] else 1


def too_large_for_host() -> dict[str, str]:
    """The catalogue's devices whose cap exceeds this host's memory, with why: `run` refuses them here."""
    host = host_memory_bytes()
    problems = {d.name: host_capacity_problem(d, host) for d in user_catalogue().values()}
    return {name: problem for name, problem in problems.items() if problem}


def throttle_devices(names: list[str]) -> list[DeviceProfile] | None:
    """The named devices; None for the default, which needs the host's speed to choose (see default_throttle_devices)."""
    if not names:
        return None
    devices_by_name = user_catalogue()
    try:
        devices = [resolve_device(name, devices_by_name) for name in names]
    except CatalogueError as exc:
        raise UserError(str(exc)) from None
    missing = [d.name for d in devices if d.gflops is None]
    if missing:
        raise UserError(
            f"device {missing[0]} gives no throughput (gflops); give it one to prove its throttle"
        )
    return devices


def default_throttle_devices(host: HostSpeed, cores: int) -> list[DeviceProfile]:
    """The catalogue's slowest device that this host can prove (devices.verify.MIN_PROVABLE_QUOTA_US) and its
    fastest whose quota leaves this host a core to spare: a quota of
    nearly every core competes with the harness and the system, so its proof measures them, not the throttle
    (measured on 2 cores: phone-6gb's 1.67-core quota ran at 84-96 % of its target from one run to the next)."""
    spare = max(1.0, cores - 1.0)
    rated = sorted((d for d in user_catalogue().values() if d.gflops is not None), key=lambda d: d.gflops)
    fits = []
    for device in rated:
        with contextlib.suppress(ClockError):
            quota = plan_clock(device, "device-throttled", host, cores).cpu_quota_cores
            if quota <= spare and cfs_quota(quota)[1] >= MIN_PROVABLE_QUOTA_US:
                fits.append(device)
    return [fits[0], fits[-1]] if len(fits) > 1 else fits


def prove_throttles(backend: type[CapBackend], devices: list[DeviceProfile] | None) -> dict:
    """Each device's throttle proof, or why none could be made here (a device this host cannot throttle to
    is listed under `unprovable` with the reason, and does not count against the verdict)."""
    if backend is ContainerLimit:
        reason = "inside a container the engine's quota is the device's own (compose and --executor docker set it)"
        return {"reason": reason, "proofs": [], "unprovable": {}}
    if not backend.can_throttle():
        return {"reason": f"the {backend.name} backend sets no CPU quota here", "proofs": [], "unprovable": {}}
    host = host_speed()
    if host is None:
        return {"reason": "this host's matmul throughput could not be measured", "proofs": [], "unprovable": {}}
    if devices is None:
        devices = default_throttle_devices(host, os.cpu_count() or 1)
    proofs, unprovable = [], {}
    for device in devices:
        try:
            proofs.append(prove_throttle(backend, device, host).as_dict())
        except (ClockError, CapUnavailable, UnprovableThrottle) as exc:
            unprovable[device.name] = str(exc)
    return {"reason": None, "host": host.model_dump(), "proofs": proofs, "unprovable": unprovable}
