"""pydantic's complaint about bad input as the one line edgebench prints (the caller adds the fix)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError


def validation_message(
    exc: ValidationError,
    origin: str = "",
    under: str = "",
    data: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
) -> str:
    """The first error as `ORIGIN: UNDER.FIELD (value V): MESSAGE`: `origin` names the file or input, `under` where
    the validated object sits in it, `data` (the input) quotes the offending value, `names` shows a top-level
    field by another name (a command-line flag). A rule across fields names `under`, else `input`. pydantic's
    `Value error, ` prefix is dropped."""
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    if loc and names and loc[0] in names:
        loc[0] = names[loc[0]]
    field = ".".join([under, *loc] if under else loc) or "input"
    value = data.get(str(err["loc"][0])) if data is not None and err["loc"] else None
    shown = f" (value {value!r})" if value is not None else ""
    text = f"{field}{shown}: {err['msg'].removeprefix('Value error, ')}"
    return f"{origin}: {text}" if origin else text
