"""Say which enforcement backends this host supports, and prove the chosen one by an over-cap allocation."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from devices.caps.base import CapUnavailable
from devices.caps.cuda import cuda_unavailable_reason
from devices.caps.select import choose_backend, probe_all
from devices.profile import format_bytes
from devices.verify import prove
from harness.errors import UserError

HELP = "check and prove memory-cap enforcement on this host"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--enforcement", default="auto", help="backend to prove (default: the one `run` would use)")
    parser.add_argument("--gpu", action="store_true", help="also check the CUDA memory-fraction path (imports torch)")


def handle(args: argparse.Namespace) -> int:
    backends = probe_all()
    try:
        chosen = choose_backend(args.enforcement)
    except CapUnavailable as exc:
        raise UserError(str(exc)) from None
    proof = prove(chosen)
    report = {
        "enforcement": chosen.name,
        "verified": proof.verified,
        "proof": proof.as_dict(),
        "backends": {name: {"available": reason is None, "reason": reason} for name, reason in backends.items()},
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
    return 0 if proof.verified else 1
