"""Options declared once: frozen dataclasses whose fields carry their help text. Command-line
flags, their help and the defaults they show are generated from the fields, never kept by hand.

    @dataclass(frozen=True)
    class SearchOptions:
        beam_width: int = option(100, "beams kept per utterance")
        mode: str = option("soft", "how unknown words are treated", choices=("soft", "hard"))

    add_option_flags(parser, {"beam": SearchOptions})   # --beam-width N  [beam] (default: 100)
    values = given_options(parser.parse_args(argv), {"beam": SearchOptions})  # flags given only
    options = SearchOptions(**values)

Types come from the annotations: int, float, str; ``bool`` becomes ``--x / --no-x``;
``tuple[str, ...]`` takes one or more values; ``X | None`` also accepts ``none``. A flag that was
not given is absent from the parsed namespace (argparse.SUPPRESS), so "not given" and "given as
none" stay apart and each options class keeps its own defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

_HELP, _CHOICES, _FLAG, _NEUTRAL = "help", "choices", "flag", "neutral"
# Marks a field that gets no generated flag (the command spells it its own way, e.g. --lm).
NO_FLAG = ""


def option(default: T, help: str, *, choices: Sequence[str] | None = None,
           flag: str | None = None, neutral: bool = False) -> T:
    """A dataclass field with its help text (and allowed values, and the flag name when it is not
    the field name with dashes; ``NO_FLAG`` for none). Use as the field's default.

    neutral: the field changes how a result is computed (speed, memory), never the result, so
    results made with another value are still the same results (a results folder resumes).
    """
    metadata = {_HELP: help, _CHOICES: tuple(choices) if choices else None, _FLAG: flag,
                _NEUTRAL: neutral}
    return dataclasses.field(default=default, metadata=metadata)


def neutral_fields(options_cls: type) -> frozenset[str]:
    """Names of the fields of an options dataclass declared ``neutral`` (see :func:`option`)."""
    return frozenset(f.name for f in dataclasses.fields(options_cls) if f.metadata.get(_NEUTRAL))


def flag_of(field: dataclasses.Field) -> str:
    """``--beam-width`` for field ``beam_width`` (or the flag the field names; "" for none)."""
    flag = field.metadata.get(_FLAG)
    if flag == NO_FLAG:
        return ""
    return "--" + (flag or field.name.replace("_", "-"))


def field_names(options_cls: type) -> frozenset[str]:
    """The field names of an options dataclass."""
    return frozenset(f.name for f in dataclasses.fields(options_cls))


def _parser_for(annotation: Any) -> tuple[Callable[[str], Any], bool, bool]:
    """(string -> value, takes several values, is a bool) for a field annotation."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        parse, many, _ = _parser_for(inner)

        def optional(text: str) -> Any:
            return None if text.lower() == "none" else parse(text)

        optional.__name__ = f"{getattr(parse, '__name__', 'value')} or none"
        return optional, many, False
    if origin is tuple:
        return args[0], True, False
    if annotation is bool:
        return bool, False, True
    if annotation in (int, float, str):
        return annotation, False, False
    raise TypeError(f"no command-line form for options of type {annotation!r}")


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return "none" if value is None else str(value)


def add_option_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                     owners: Mapping[str, type], only: Sequence[str] | None = None) -> None:
    """One flag per field of the options classes in ``owners`` (name -> dataclass); a field that
    several classes share gets one flag whose help names them all. ``only``: these fields alone.
    A field whose flag the parser already has (from another group, e.g. the emission stage's
    ``--device``) shares that flag: one value for both, by the same field name.

    Help: the field's text, the owners in brackets when there are several, and the default.
    """
    fields: dict[str, dataclasses.Field] = {}
    types_: dict[str, Any] = {}
    defaults: dict[str, dict[str, Any]] = {}
    for owner, cls in owners.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not flag_of(f) or (only is not None and f.name not in only):
                continue
            if f.name in types_ and types_[f.name] != hints[f.name]:
                raise TypeError(f"option {f.name!r} is {types_[f.name]} in one options class and "
                                f"{hints[f.name]} in {cls.__name__}: declare it once")
            fields.setdefault(f.name, f)
            types_[f.name] = hints[f.name]
            defaults.setdefault(f.name, {})[owner] = f.default
    taken = getattr(parser, "_option_string_actions", {})
    for name, f in fields.items():
        if flag_of(f) in taken and taken[flag_of(f)].dest == name:
            shared = taken[flag_of(f)]
            shared.help = f"{shared.help}; also {', '.join(defaults[name])}: " \
                f"{f.metadata.get(_HELP, '')}".replace("%", "%%")
            continue
        parse, many, is_bool = _parser_for(types_[name])
        shown = {_shown(v) for v in defaults[name].values()}
        default = shown.pop() if len(shown) == 1 else ", ".join(
            f"{o} {_shown(v)}" for o, v in defaults[name].items())
        owned = f" [{', '.join(defaults[name])}]" if len(owners) > 1 else ""
        text = f"{f.metadata.get(_HELP, '')}{owned} (default: {default})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": text}
        if is_bool:
            parser.add_argument(flag_of(f), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        kwargs["type"] = parse
        if f.metadata.get(_CHOICES):
            kwargs["choices"] = f.metadata[_CHOICES]
        else:
            kwargs["metavar"] = flag_of(f)[2:].replace("-", "_").upper()
        if many:
            kwargs["nargs"] = "+"
        parser.add_argument(flag_of(f), **kwargs)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The help layout of every ctclab command: the description as written (its examples keep
    their lines), and each option's default shown once, as the command line spells it.

    A default is added as ``(default: X)`` unless the help already states one (the word
    "default" in it, e.g. ``(default: results/<UTC time>)`` for a default computed at run time)
    or there is nothing to show (None, False, an empty list, a required option, a generated
    flag whose default is in its help already).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        empty = default is None or default is False or default == [] or default == ()
        if ("default" in text or empty or action.required
                or default is argparse.SUPPRESS or isinstance(action, (
                    argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


def given_options(args: argparse.Namespace, owners: Mapping[str, type]) -> dict[str, Any]:
    """The option values given on the command line (flags made by ``add_option_flags``), by
    field name; several values become a tuple."""
    names = {f.name for cls in owners.values() for f in dataclasses.fields(cls)}
    return {name: tuple(value) if isinstance(value, list) else value
            for name, value in vars(args).items() if name in names}
