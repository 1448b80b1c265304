"""What an evaluation compares: *systems*, each a registered decoder with its options under a label
(``decoder``, or ``decoder+<lm name>`` for a decoder fusing an LM).

    systems = build_systems(["greedy", "beam"], [None, "x/3gram.arpa.gz"], {"beam_width": 50})
    [s.label for s in systems]           # ['greedy', 'beam', 'beam+3gram']
    factory = DecoderFactory()
    decoder, seconds = factory.build(systems[2], cache.meta.vocabulary, cache.frame_shift_s)

Option values go to the decoders whose options have them (greedy has none, so it runs once); a
value no chosen decoder takes is an error. The LM is part of the options (``lm_path``): decoders
load it once per process (ctclab.lm.loaded), so nothing here loads or keeps one.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctclab.core.options import field_names, flag_of
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders.base import Decoder, available_decoders, decoder_class
from ctclab.decoders.options import LMOptions
from ctclab.eval.records import SystemSpec
from ctclab.eval.tune import TunedParams

# What --lm takes for "this system has no LM".
NO_LM = "none"


def decoder_options() -> dict[str, type]:
    """Every registered decoder's options class, by decoder name (what the CLIs make flags of).
    Importing any ctclab.decoders module registers greedy, beam and pyctcdecode."""
    return {name: decoder_class(name).Options for name in available_decoders()}


@dataclass(frozen=True)
class System:
    """A decoder class with its options under a label."""

    label: str
    cls: type[Decoder]
    options: Any

    @property
    def lm(self) -> str | None:
        """The LM this system fuses (as named by the user), or None."""
        return self.options.lm_path if isinstance(self.options, LMOptions) else None

    def spec(self) -> SystemSpec:
        return SystemSpec(self.label, self.cls.name, dataclasses.asdict(self.options))


def lm_label(lm: str) -> str:
    """``../x/en-us-70k-3gram.arpa.gz`` -> ``en-us-70k-3gram`` (the LM part of a system label)."""
    name = Path(lm).name
    for suffix in (".gz", ".arpa", ".binary", ".klm", ".bin"):
        name = name.removesuffix(suffix)
    return name


def _flag(name: str) -> str:
    """The command-line flag of option ``name`` (for error messages)."""
    for cls in decoder_options().values():
        for f in dataclasses.fields(cls):
            if f.name == name and flag_of(f):
                return flag_of(f)
    return name


def build_systems(decoders: Sequence[str], lms: Sequence[str | None],
                  values: Mapping[str, Any], tuned: TunedParams | None = None) -> list[System]:
    """One System per (decoder, LM) pair; decoders without LM options get one system.

    values: option values by field name, given to every decoder whose options have the field.
    tuned: values found by tuning replace those of the systems with the same label.
    ValueError for an unknown decoder, a value no chosen decoder takes, or a bad value.
    """
    unknown = [d for d in decoders if d not in available_decoders()]
    if unknown:
        raise ValueError(f"unknown decoder(s) {unknown}; valid names: "
                         f"{', '.join(available_decoders())}")
    taken = set().union(*(field_names(decoder_class(d).Options) for d in decoders))
    unused = sorted(k for k in values if k not in taken)
    if unused:
        raise ValueError(f"{', '.join(map(_flag, unused))}: not an option of any chosen decoder "
                         f"({', '.join(decoders)}); drop it or add a decoder that has it")
    systems: list[System] = []
    for name in decoders:
        cls = decoder_class(name)
        fields = field_names(cls.Options)
        for lm in (lms if issubclass(cls.Options, LMOptions) else [None]):
            label = name if lm is None else f"{name}+{lm_label(lm)}"
            mapping = {k: v for k, v in values.items() if k in fields}
            if lm is None:
                mapping.pop("unigrams_path", None)  # known words come with an LM here
            else:
                mapping["lm_path"] = lm
            if tuned is not None and label in tuned.systems:
                mapping.update(tuned.systems[label])
            try:
                options = cls.Options(**mapping)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"decoder {name!r}: {exc}") from exc
            if label in {s.label for s in systems}:
                raise ValueError(f"system {label!r} is listed twice; give each --decoder/--lm once")
            systems.append(System(label, cls, options))
    if tuned is not None and not set(tuned.systems) & {s.label for s in systems}:
        raise ValueError(f"the --params file has values for {sorted(tuned.systems)}, none of "
                         f"this run's systems {[s.label for s in systems]}; pass the same "
                         "--decoder and --lm as the tuning run")
    return systems


class DecoderFactory:
    """Builds the decoder of a system for a cache's vocabulary, once per (system, options,
    vocabulary, frame shift): a later split with the same vocabulary reuses it."""

    def __init__(self) -> None:
        self._decoders: dict[tuple, Decoder] = {}

    def build(self, system: System, vocab_dict: dict, frame_shift_s: float,
              options: Any = None) -> tuple[Decoder, float]:
        """(decoder, seconds this call spent building it incl. LM loading: 0.0 when it is
        memoised). ``options`` replace the system's (tuning tries many)."""
        options = options or system.options
        key = (system.label, repr(options), repr(vocab_dict), frame_shift_s)
        if key in self._decoders:
            return self._decoders[key], 0.0
        start = time.perf_counter()
        decoder = system.cls(Vocabulary.from_dict(vocab_dict), options,
                             frame_shift_s=frame_shift_s)
        self._decoders[key] = decoder
        return decoder, time.perf_counter() - start

    def forget(self, label: str) -> None:
        """Drop memoised decoders of ``label`` (tuning builds many; keep memory bounded)."""
        self._decoders = {k: v for k, v in self._decoders.items() if k[0] != label}
