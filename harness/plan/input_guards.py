"""Limits on what a spec may ask for, checked before any work: a few lines of YAML can describe a billion cells
(a matrix's product) or a billion values (aliases of aliases), and expanding either would hang the harness."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from harness.record.errors import UserError

#: Cells a spec may expand to unless the user lifts it (`edgebench run --max-cells N`).
MAX_CELLS = 10_000
#: Values (scalars, lists, mappings, counted as often as aliases repeat them) and nesting levels of a spec.
MAX_VALUES = 100_000
MAX_DEPTH = 50
#: Bytes of a YAML file the harness reads (a spec, a device file): the largest shipped spec is a few kilobytes, and
#: reading is bounded so that a file of gigabytes (or a device such as /dev/zero) cannot fill the harness's memory.
MAX_DOCUMENT_BYTES = 1 << 20
#: Past this many cells a count is no longer worth printing (nor a --max-cells that lifts it: nothing runs that many).
COUNTED_CELLS = 10**9
#: Characters of a rejection: it echoes the user's values, which may be a megabyte string.
MAX_LINE = 400
#: What would break a rejection's one line (str.splitlines splits on all of these) or hide part of it.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def matrix_size(blocks: list[dict[str, Any]], device_count: int) -> int:
    """How many cells the matrix blocks expand to, computed without expanding them: per block, its devices
    (its own `devices`, else all of the spec's) times the product of its axes' lengths (a scalar is one value)."""
    total = 0
    for block in blocks:
        devices = block.get("devices")
        count = len(devices) if isinstance(devices, list) else 1 if devices else device_count
        axes = [len(v) if isinstance(v, list) else 1 for k, v in block.items() if k != "devices"]
        total += count * math.prod(axes)
    return total


def check_matrix_size(blocks: list[dict[str, Any]], device_count: int, origin: Path | str, limit: int) -> None:
    """Refuse a matrix past `limit` cells, saying how many it has and how to lift the limit."""
    size = matrix_size(blocks, device_count)
    if size > max(limit, COUNTED_CELLS):
        raise UserError(f"{origin}: matrix: expands to over {COUNTED_CELLS:,} cells; shrink the matrix")
    if size > limit:
        raise UserError(
            f"{origin}: matrix: expands to {size:,} cells, over the limit of {limit:,}; "
            f"shrink the matrix or pass --max-cells {size}"
        )


def read_yaml(path: Path, kind: str, missing: str) -> Any:
    """The parsed YAML document at `path` (`kind`: "spec file", "device file"), refused in one line when it cannot
    be read, is over MAX_DOCUMENT_BYTES, cannot be parsed or is too big or deep to hold; `missing` is the fix for a
    file that does not exist."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_DOCUMENT_BYTES + 1)
    except FileNotFoundError:
        raise UserError(f"{kind} {path} not found; {missing}") from None
    except OSError as exc:
        raise UserError(f"cannot read {kind} {path} ({exc.strerror})") from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise UserError(f"{path}: over {MAX_DOCUMENT_BYTES >> 20} MiB, too big for a {kind}; point at the right file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: byte {exc.start} is not UTF-8 text; save the {kind} as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise UserError(f"{path}{where}: invalid YAML ({problem}); fix the syntax there") from None
    except RecursionError:
        raise too_deep(path) from None
    check_document(data, path)
    return data


def check_document(data: Any, origin: Path | str) -> None:
    """Refuse a parsed document that is too big or too deep to handle, counting repeated aliases each time
    (the "billion laughs": a few lines of anchors that expand to billions of values). Stops at the limit, so
    the check itself is cheap; iterative, so depth never exhausts Python's stack."""
    values, stack = 0, [(data, 1)]
    while stack:
        item, depth = stack.pop()
        values += 1
        if values > MAX_VALUES:
            raise UserError(
                f"{origin}: the document holds over {MAX_VALUES:,} values (YAML aliases repeat theirs); "
                "write the file out without aliases of aliases"
            )
        if depth > MAX_DEPTH:
            raise too_deep(origin)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)


def too_deep(origin: Path | str) -> UserError:
    """The one refusal of deep nesting, whether the parser (its stack exhausted) or check_document finds it."""
    return UserError(f"{origin}: values nested over {MAX_DEPTH} levels deep; flatten the file")


def one_line(message: str) -> str:
    """A rejection as one short line: control and line-breaking characters a spec put in a name are escaped,
    and an overlong message keeps its start (what is wrong) and its end (the fix), cutting the echoed middle."""
    line = _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], message)
    if len(line) <= MAX_LINE:
        return line
    half = (MAX_LINE - 5) // 2
    return f"{line[:half]} ... {line[-half:]}"
