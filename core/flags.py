"""Command-line flags generated from an options dataclass, so options are declared once.

Each field becomes ``--field-name`` (``metadata["flag"]`` overrides the name); its help is the
comment above the field in the class source; ``metadata["choices"]`` and ``["metavar"]`` pass
through; ``metadata["flags"] = False`` leaves a field out (a nested options object, say).
Supported field types: str, int, float, bool (a switch), and ``X | None`` of those.

    add_flags(parser.add_argument_group("extraction"), ExtractOptions)
    options = from_flags(ExtractOptions, parser.parse_args())
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")
_FIELD = re.compile(r"(\w+)\s*:")


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment lines right above it in the class source, joined."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        text = line.strip()
        if text.startswith("#"):
            pending.append(text.lstrip("#").strip())
            continue
        match = _FIELD.match(text)
        if match and pending:
            comments[match.group(1)] = " ".join(pending)
        pending = []
    return comments


def _scalar(hint: Any) -> type:
    """str/int/float/bool of a hint, unwrapping ``X | None``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    if hint not in (str, int, float, bool):
        raise TypeError(f"no command-line flag for a field of type {hint!r}")
    return hint


def _flagged(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flags", True)]


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type) -> None:
    """Add one flag per field of the dataclass ``cls`` (see the module docstring)."""
    hints = typing.get_type_hints(cls)
    helps = field_comments(cls)
    for f in _flagged(cls):
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        kind = _scalar(hints[f.name])
        text = helps.get(f.name, "")
        if default not in (None, False, ""):
            text += f" (default: {default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            kwargs["type"] = kind
            for key in ("choices", "metavar"):
                if key in f.metadata:
                    kwargs[key] = f.metadata[key]
        parser.add_argument(f.metadata.get("flag", "--" + f.name.replace("_", "-")), **kwargs)


def from_flags(cls: type[T], namespace: argparse.Namespace, **others: Any) -> T:
    """An instance of ``cls`` from parsed flags; ``others`` fill the fields without flags."""
    values = {f.name: getattr(namespace, f.name) for f in _flagged(cls)}
    return cls(**values, **others)
