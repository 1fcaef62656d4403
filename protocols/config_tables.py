"""Strict checks of config tables: unknown keys and wrong types are refused, naming the key.

TOML gives typed values, and a config must use them: ``exposed = "false"`` is text, not a boolean,
and ``node_timout_seconds`` is a typo, not a setting. Each table is checked against a pydantic
model in strict mode (no coercion: text is not a boolean, 1.0 is not a whole number, NaN and
infinities are not numbers) that forbids keys it does not declare. A table's model can be derived
from the dataclass that holds the parsed settings (``table_model``), so a new setting needs one
declaration only.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from protocols.errors import ConfigError

T = TypeVar("T", bound=BaseModel)
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Table(BaseModel):
    """A config table: strict types, no unknown keys."""

    model_config = STRICT


def _describe(error: Any) -> str:
    loc = error["loc"]
    key = str(loc[0]) if loc else "value"
    if len(loc) > 1 and isinstance(loc[1], int):
        key += f"[{loc[1]}]"  # the item of a list; further parts name pydantic's union members
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{key}'"
    if kind == "missing":
        return f"missing required key '{key}'"
    wanted = re.sub(
        r"^Input should be (a valid )?",
        lambda m: "must be " + ("a " if m.group(1) else ""),
        str(error["msg"]),
    )
    wanted = re.sub(r"\ba ([aeiou])", r"an \1", wanted)
    if kind == "bool_type":
        wanted = "must be true or false"  # as TOML writes booleans
    return f"{key} {wanted}, not {error['input']!r}"


def check_table(raw: object, model: type[T], where: str) -> T:
    """``raw`` checked against ``model``; a ``ConfigError`` naming the first bad key otherwise."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table, not {raw!r}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(exc.errors()[0])}") from None


def _raw_type(annotation: Any) -> Any:
    """The TOML-side type of a dataclass field: lists for tuples, text for paths."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return typing.Union[tuple(_raw_type(a) for a in typing.get_args(annotation))]  # noqa: UP007
    if origin is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return list[_raw_type(args[0])]  # type: ignore[misc]
        return list[Any]
    if annotation is Path:
        return str
    return annotation


def table_model(
    name: str,
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    rename: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> type[Table]:
    """A strict model of the TOML table that fills dataclass ``cls``: one optional key per field
    (``rename`` maps field to key; ``skip`` leaves fields out), plus ``extra`` keys (name: type)."""
    hints = typing.get_type_hints(cls)
    rename = rename or {}
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        fields[rename.get(field.name, field.name)] = (_raw_type(hints[field.name]) | None, None)
    for key, kind in (extra or {}).items():
        fields[key] = (kind | None, None)
    return create_model(name, __base__=Table, **fields)


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(i?))?B\s*", re.IGNORECASE)


def byte_size(text: str) -> int:
    """Bytes in a size as DuckDB writes them ("512MB", "1GB", "2GiB"); ``ValueError`` otherwise."""
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    number, prefix, binary = match.groups()
    power = "KMGT".index(prefix.upper()) + 1 if prefix else 0
    size = int(float(number) * (1024 if binary else 1000) ** power)
    if size <= 0:
        raise ValueError(f"not a size: {text!r}")
    return size
