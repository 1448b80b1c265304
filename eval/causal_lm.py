"""Sentence scores from a causal (autoregressive) LM: any ``AutoModelForCausalLM``, a hub id or a
local directory, batched on the GPU when there is one.

    scorer = CausalLMScorer.load("gpt2")                   # or a save_pretrained directory
    scorer.score_texts(["the cat sat", "the cap sat"])     # (2,) ln P(text <eos> | <bos>)

Each text is cased (``case``), tokenised without special tokens, and scored after the tokenizer's
BOS token (GPT-2's is <|endoftext|>, which also ends documents) with its EOS token appended, so
that, as with an n-gram's <s> ... </s>, a sentence that stops early is not free. Texts are sorted
by length and scored in batches of about BATCH_TOKENS tokens, right-padded under an attention
mask. A text the tokenizer cannot encode (it maps to the unknown token) is an error, not a
silently wrong score.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctclab.core.progress import progress_bar
from ctclab.emission.hub import hub_unreachable, model_in_hf_cache, use_offline_mode

# Case the acoustic words are given to the LM in. Decoders give one case (QuartzNet lower,
# wav2vec2 upper); web-text LMs such as GPT-2 saw sentence case: a capital first letter.
CASES = ("sentence", "lower", "upper", "as-is")
DEFAULT_CASE = "sentence"
# Tokens per forward pass (padded batch x longest text): small enough for a CPU, and on a GPU
# an n-best list of 10 x ~40 tokens is still one batch of a few utterances.
BATCH_TOKENS = 8192


def apply_case(text: str, case: str) -> str:
    """``text`` in ``case`` (one of CASES)."""
    if case == "lower":
        return text.lower()
    if case == "upper":
        return text.upper()
    if case == "sentence":
        text = text.lower()
        return text[:1].upper() + text[1:]
    if case == "as-is":
        return text
    raise ValueError(f"unknown case {case!r}; valid: {', '.join(CASES)}")


class CausalLMScorer:
    """A loaded causal LM and its tokenizer (see the module docstring for what is scored)."""

    def __init__(self, model: Any, tokenizer: Any, name: str, case: str = DEFAULT_CASE,
                 device: str | None = None, progress: bool = True):
        """progress: show the scoring's progress (False, e.g. --quiet: nothing is printed)."""
        import torch

        apply_case("", case)  # validates
        self.name, self.case, self.tokenizer, self.progress = name, case, tokenizer, progress
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None \
            else tokenizer.eos_token_id
        if self.start is None:
            raise ValueError(f"rescoring model {name}: its tokenizer has neither a BOS nor an EOS "
                             "token to start a sentence with; use a causal LM whose tokenizer has one")
        self.end = tokenizer.eos_token_id
        config = model.config
        self.max_tokens = getattr(config, "n_positions", None) or getattr(
            config, "max_position_embeddings", None)
        self._cache: dict[str, float] = {}

    @classmethod
    def load(cls, name: str, case: str = DEFAULT_CASE, device: str | None = None,
             progress: bool = True) -> CausalLMScorer:
        """From a local directory (save_pretrained) or a hub id. Offline, a hub id that is not in
        the local cache fails within seconds with the fix, not after the libraries' retries."""
        path = Path(name).expanduser()
        local = path.is_dir()
        if not local and (path.exists() or name.startswith((".", "/", "~"))):
            raise FileNotFoundError(f"--rescore {name}: not a directory with a saved causal LM "
                                    "(config.json, weights, tokenizer files) nor a KenLM file")
        if not local:
            if model_in_hf_cache(name):
                use_offline_mode()
            else:
                unreachable = hub_unreachable()
                if unreachable is not None:
                    raise ValueError(
                        f"--rescore {name}: the Hugging Face hub cannot be reached ({unreachable}) "
                        "and the model is not in the local cache. Download it where the hub can be "
                        f"reached (`huggingface-cli download {name} --local-dir DIR`) and pass "
                        "--rescore DIR")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        where = str(path) if local else name
        try:
            tokenizer = AutoTokenizer.from_pretrained(where)
            model = AutoModelForCausalLM.from_pretrained(where)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--rescore {name}: cannot load it as a causal LM with its tokenizer "
                             f"({type(exc).__name__}: {str(exc)[:300]})") from None
        return cls(model, tokenizer, name, case, device, progress)

    # ----------------------------------------------------------------------------- scoring
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (cased), BOS first and EOS last; ValueError when the tokenizer
        maps part of it to its unknown token or it is longer than the model takes."""
        cased = apply_case(text, self.case)
        ids = list(self.tokenizer(cased, add_special_tokens=False)["input_ids"]) if cased else []
        unk = self.tokenizer.unk_token_id
        if unk is not None and unk in ids and unk not in (self.start, self.end):
            raise ValueError(f"the rescoring model's tokenizer ({self.name}) cannot encode "
                             f"{cased!r}: part of it becomes {self.tokenizer.unk_token!r}; use a "
                             "model whose tokenizer covers the decoder's characters (or another "
                             "--rescore-case)")
        ids = [self.start, *ids] + ([self.end] if self.end is not None else [])
        if self.max_tokens and len(ids) > self.max_tokens:
            raise ValueError(f"{cased[:60]!r}... is {len(ids)} tokens; the rescoring model "
                             f"{self.name} takes at most {self.max_tokens}")
        return ids

    def score_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) sum of ln P(token | earlier tokens) over each text's tokens after BOS (EOS
        included). Cached per text."""
        todo = sorted({t for t in texts if t not in self._cache})
        if todo:
            encoded = {t: self.encode(t) for t in todo}
            todo.sort(key=lambda t: len(encoded[t]))
            start = 0
            # scoring on a CPU takes a while: a bar on a terminal, plain lines elsewhere
            bar = progress_bar(len(todo), f"[rescore] {self.name}", "text", leave=False,
                               enabled=self.progress)
            while start < len(todo):
                longest = len(encoded[todo[start]])
                stop = start + 1
                while stop < len(todo) and (stop - start + 1) * len(encoded[todo[stop]]) \
                        <= max(BATCH_TOKENS, longest):
                    stop += 1
                batch = todo[start:stop]
                for t, value in zip(batch, self._score_batch([encoded[t] for t in batch]),
                                    strict=True):
                    self._cache[t] = value
                bar.update(stop - start)
                start = stop
            bar.close()
        return np.array([self._cache[t] for t in texts], np.float64)

    def _score_batch(self, sequences: list[list[int]]) -> list[float]:
        import torch

        width = max(len(s) for s in sequences)
        ids = torch.zeros((len(sequences), width), dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, s in enumerate(sequences):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            logp = torch.log_softmax(logits, dim=-1)
            target = ids[:, 1:]
            picked = logp.gather(2, target.unsqueeze(-1)).squeeze(-1) * mask[:, 1:]
            return picked.sum(dim=1).double().cpu().tolist()
