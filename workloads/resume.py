"""Resumable training cells: what of a running cell is saved every `checkpoint_seconds`, and how it comes back.

The harness gives a training cell a private state directory and a checkpoint interval (`ENV_STATE`); without
one (a cell started by hand, a probe) nothing is saved. The state: the trained tensors (for MeZO as they are,
with the perturbation its fused steps leave pending), the method's own state (the optimizer's moments, MeZO's
pending step; MeZO's z is regenerated from the cell seed and the step, so no seed counter needs saving), torch's
random stream (dropout), the step, the loop's record so far (losses, step times, the accuracy curve and the
per-example predictions, the seconds of training, evaluation and checkpointing), the evaluation schedule's
position, the clock the cell started with, and the segments run so far. A resumed cell continues on the same
device-time axis; the work of an interrupted segment after its last checkpoint is redone, and not counted.

When the plan says `journal`, a MeZO cell saves its journal (workloads.mezo) instead of its weights: kilobytes
instead of the model's size, so a long cell's state can travel in git from one machine to the next. Resuming
replays it on the freshly loaded weights; the sha256 of the weights it started from and of those it reached are
saved beside it, so a journal replayed on other weights is refused, and one that does not give the saved weights
back ends the cell with an error rather than training on.
"""

from __future__ import annotations

import hashlib
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from devices.speed import CellClock
from workloads import checkpoint
from workloads.methods import Method, ZerothOrder
from workloads.metrics import Segment
from workloads.params import WorkloadParams
from workloads.predictions import Predictions, decode
from workloads.resumable import StatePlan


@dataclass
class Trace:
    """What the loop observed: per-step losses and times, the accuracy curve (test accuracy as `accuracy`, the
    validation split's as `val_accuracy`). Times are in the cell's clock (device seconds unless the clock is
    host), and training time also in host seconds."""

    losses: list[float] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    host_train_seconds: float = 0.0
    padded_tokens: int = 0  # tokens the training steps computed on, padding included
    real_tokens: int = 0  # of which were examples' own tokens
    stopped_flat: str | None = None  # why training stopped before its budget (stop_when_flat)

    @property
    def spent(self) -> float:
        """The cell-clock seconds of its work so far: training, evaluation and checkpointing."""
        return self.train_seconds + self.eval_seconds + self.checkpoint_seconds


@dataclass
class Loop:
    """Everything the training loop carries from step to step: what a checkpoint saves."""

    step: int = 0
    trace: Trace = field(default_factory=Trace)
    predictions: Predictions | None = None
    next_eval_s: float | None = None
    next_fraction: int = 0
    segments: list[Segment] = field(default_factory=list)
    saved_at: float = 0.0  # trace.spent at the last checkpoint
    checkpoints: int = 0  # written so far, in every segment


#: The compressed JSON of a MeZO journal, among a checkpoint's tensors.
JOURNAL_TENSOR = "mezo/journal"


class JournalMismatch(RuntimeError):
    """A replayed journal that did not give back the weights it was saved with: the cell cannot go on."""


def weights_sha256(named: list[tuple[str, torch.nn.Parameter]]) -> str:
    """The sha256 of the trained tensors' bytes, in order (no copy: each tensor's bytes are hashed in place)."""
    digest = hashlib.sha256()
    for _, p in named:
        digest.update(p.data.detach().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def journaled(state: dict[str, Any]) -> bool:
    """Whether a checkpoint's state holds a MeZO journal rather than the weights."""
    return "weights_sha256" in state.get("method", {})


def journal_tensor(entries: list[str]) -> torch.Tensor:
    """The journal's passes, a line each, zlib-compressed."""
    return torch.frombuffer(bytearray(zlib.compress("\n".join(entries).encode(), 6)), dtype=torch.uint8)


def journal_entries(tensor: torch.Tensor) -> list[str]:
    text = zlib.decompress(bytes(tensor.numpy())).decode()
    return text.split("\n") if text else []


class Checkpointer:
    """Saves a cell's Loop, method and trained tensors every `every_seconds`, and resumes from them."""

    def __init__(self, plan: StatePlan, params: WorkloadParams, clock: CellClock) -> None:
        self.plan = plan
        self.folder = checkpoint.Folder(plan.fd, Path(plan.directory)) if plan.fd is not None else None
        self.identity = {"cell_id": plan.cell_id, "params": params.model_dump(mode="json")}
        self.clock = clock
        self.origin = 0.0  # the clock's reading at this process's start (0: the scaled clock's CPU time)
        self.bytes_written = 0
        self.saves = 0
        self.error: str | None = None  # why saving stopped: the cell trains on, without resume
        self.initial_sha256: str | None = None  # of the weights a journaled cell started from

    def open_folder(self) -> checkpoint.Folder:
        """The state directory: the descriptor the harness passed, else opened by its path (a cell run by hand)."""
        if self.folder is None:
            self.folder = checkpoint.Folder.open(Path(self.plan.directory))
        return self.folder

    def due(self, loop: Loop) -> bool:
        return self.error is None and loop.trace.spent - loop.saved_at >= self.plan.every_seconds

    def save(self, loop: Loop, method: Method, named: list[tuple[str, torch.nn.Parameter]], now) -> None:
        """Write the checkpoint; its cost (in the cell's clock) counts as checkpointing, not training."""
        t0 = now()
        values, method_tensors = method.state()
        journal = self._journal(method)
        if journal is None:
            tensors = {f"param/{name}": p.data for name, p in named}
        else:
            tensors = {JOURNAL_TENSOR: journal_tensor(journal)}
            values = values | {"initial_sha256": self.initial_sha256, "weights_sha256": weights_sha256(named)}
        tensors |= method_tensors
        tensors["rng/torch"] = torch.get_rng_state()
        if loop.predictions is not None:
            tensors["predictions"] = torch.frombuffer(bytearray(loop.predictions.encode()), dtype=torch.uint8)
        loop.segments[-1].device_seconds = now() - self.origin
        state = {"loop": _loop_values(loop), "method": values, "clock": self.clock.model_dump(mode="json")}
        try:
            self.bytes_written = checkpoint.save(self.open_folder(), self.identity, state, tensors)
        except OSError as exc:
            self.error = f"cannot write a checkpoint in {self.plan.directory} ({exc.strerror or exc}); no further saves"
            print(f"edgebench: {self.error}", file=sys.stderr, flush=True)
            return
        self.saves += 1
        loop.checkpoints += 1
        spent = now() - t0
        loop.trace.checkpoint_seconds += spent
        loop.segments[-1].checkpoint_seconds += spent
        loop.saved_at = loop.trace.spent

    def resume(self, loop: Loop, method: Method, named: list[tuple[str, torch.nn.Parameter]]) -> str | None:
        """Fill `loop`, the method and the trained tensors from the last checkpoint, if there is one to trust:
        returns why one was refused (the cell then starts at step 0 and the refused file is removed)."""
        try:
            folder = self.open_folder()
        except OSError as exc:
            self.error = f"cannot open the state directory {self.plan.directory} ({exc.strerror or exc}); no saves"
            say(self.error)
            return None
        checkpoint.remove_temporaries(folder)
        if self.plan.journal and isinstance(method, ZerothOrder):
            self.initial_sha256 = weights_sha256(named)
            method.optimizer.keep_journal()
        try:
            saved = checkpoint.read(folder, self.identity)
            if saved is None:
                return None
            replays = journaled(saved.state)
            if replays and saved.state["method"]["initial_sha256"] != (self.initial_sha256 or weights_sha256(named)):
                raise checkpoint.CheckpointRefused("its MeZO journal starts from other weights than this cell loaded")
            extra = checkpoint.restore(saved, {} if replays else {f"param/{name}": p.data for name, p in named})
        except checkpoint.CheckpointRefused as exc:
            folder.unlink(checkpoint.STATE_FILE)
            return str(exc)
        state = saved.state
        if replays:
            self._replay(method, named, state["method"], journal_entries(extra[JOURNAL_TENSOR]), folder)
        elif isinstance(method, ZerothOrder):
            method.optimizer.journal = None  # weights restored mid-trajectory: no journal from step 0, save weights
        method.load_state(state["method"], {k: v for k, v in extra.items() if k.startswith("opt/")})
        torch.set_rng_state(extra["rng/torch"])
        _load_loop_values(loop, state["loop"])
        if "predictions" in extra:
            loop.predictions = decode(bytes(extra["predictions"].numpy()))
        self.clock = CellClock.model_validate(state["clock"])
        return None

    def _journal(self, method: Method) -> list | None:
        """The journal a save writes instead of the weights: a journaled plan's MeZO keeps one from step 0."""
        return method.optimizer.journal if self.plan.journal and isinstance(method, ZerothOrder) else None

    def _replay(
        self,
        method: Method,
        named: list[tuple[str, torch.nn.Parameter]],
        values: dict[str, Any],
        entries: list[str],
        folder: checkpoint.Folder,
    ) -> None:
        """Replay a saved journal onto the weights this cell started from; they must come out as they were saved."""
        assert isinstance(method, ZerothOrder)
        t0 = time.perf_counter()
        method.optimizer.replay(entries)
        say(f"replayed the MeZO journal: {len(entries)} passes in {time.perf_counter() - t0:.1f} host s")
        if weights_sha256(named) != values["weights_sha256"]:
            folder.unlink(checkpoint.STATE_FILE)
            raise JournalMismatch(
                f"replaying the MeZO journal in {self.plan.directory} ({len(entries)} passes) did not give back the "
                "weights it was saved with; the checkpoint is removed, re-run to start the cell over"
            )


def _loop_values(loop: Loop) -> dict[str, Any]:
    return {
        "step": loop.step,
        "trace": asdict(loop.trace),
        "next_eval_s": loop.next_eval_s,
        "next_fraction": loop.next_fraction,
        "segments": [s.model_dump() for s in loop.segments],
        "saved_at": loop.saved_at,
        "checkpoints": loop.checkpoints + 1,  # this one included
    }


def _load_loop_values(loop: Loop, values: dict[str, Any]) -> None:
    loop.step = values["step"]
    loop.trace = Trace(**values["trace"])
    loop.next_eval_s, loop.next_fraction = values["next_eval_s"], values["next_fraction"]
    loop.segments = [Segment(**s) for s in values["segments"]]
    loop.saved_at = values["saved_at"]
    loop.checkpoints = values["checkpoints"]


def say(line: str) -> None:
    """A resume or a refused checkpoint is said in the cell's log (its stderr)."""
    print(f"edgebench: {line}", file=sys.stderr, flush=True)
