"""Re-ranking n-best lists (eval/rescore.py) with a second KenLM (lm/sentence.py) or a causal LM
(eval/causal_lm.py): a tiny random GPT-2 and tokenizer built here, loaded by hub id from a local
hub cache (no network)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from decoding_fixtures import frames, quartznet_vocab, write_arpa

from ctclab.core.hypothesis import Hypothesis, WordTimestamp
from ctclab.decoders.base import create_decoder
from ctclab.eval.rescore import check_nbest, is_kenlm, open_rescorer, rerank, rescore_many
from ctclab.lm.language_model import KenLMLanguageModel
from ctclab.lm.sentence import KenLMSentenceScorer

REV = "0" * 40


@pytest.fixture(scope="module")
def tiny_hub(tmp_path_factory):
    """A hub cache folder holding ``tiny/gpt2`` (random GPT-2 + byte-level BPE tokenizer) and
    ``tiny/words`` (a word-level tokenizer that knows only a few words)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("hub")
    corpus = ["the cat sat on the mat", "a dog ran home", "The cat"] * 5

    def save(name, tokenizer):
        fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>", unk_token="<unk>")
        config = GPT2Config(vocab_size=len(fast), n_positions=64, n_embd=16, n_layer=2, n_head=2,
                            bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
        repo = root / f"models--tiny--{name}"
        snap = repo / "snapshots" / REV
        snap.mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(REV)
        GPT2LMHeadModel(config).save_pretrained(snap)
        fast.save_pretrained(snap)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    save("gpt2", bpe)
    words = Tokenizer(models.WordLevel(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    words.train_from_iterator(corpus, trainers.WordLevelTrainer(
        special_tokens=["<|endoftext|>", "<unk>"]))
    save("words", words)
    return root


@pytest.fixture
def hub(tiny_hub, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tiny_hub))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    try:   # loading from the cache switches datasets offline too: undo it after the test
        import datasets.config

        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)
    except ImportError:
        pass
    return tiny_hub


def test_causal_lm_loads_like_a_hub_id_and_batches_exactly(hub):
    import torch

    scorer = open_rescorer("tiny/gpt2", quartznet_vocab())
    texts = ["the cat sat on the mat", "a dog", "", "the cat sat on the mat the cat"]
    batched = scorer.score_texts(texts)
    assert np.isfinite(batched).all() and (batched < 0).all()
    # one at a time (no padding) gives the same numbers, and they are the log-probs the model
    # gives to the tokens after <|endoftext|>, the closing <|endoftext|> included
    for text, value in zip(texts, batched, strict=True):
        ids = scorer.encode(text)
        with torch.no_grad():
            logp = torch.log_softmax(scorer.model(torch.tensor([ids])).logits[0], -1)
        manual = sum(float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1))
        assert value == pytest.approx(manual, abs=1e-4)
    assert scorer.encode("the cat")[1:-1] == scorer.tokenizer("The cat",
                                                              add_special_tokens=False).input_ids


@pytest.mark.parametrize("progress", [True, False])
def test_causal_lm_scoring_progress_follows_quiet(hub, capsys, progress):
    scorer = open_rescorer("tiny/gpt2", quartznet_vocab(), progress=progress)
    scorer.score_texts(["the cat sat", "a dog"])
    assert ("[rescore] tiny/gpt2" in capsys.readouterr().err) == progress


def test_tokenizer_that_cannot_encode_the_text_is_a_clear_error(hub):
    scorer = open_rescorer("tiny/words", quartznet_vocab())
    scorer.case = "lower"
    assert np.isfinite(scorer.score_texts(["the cat sat"])).all()
    with pytest.raises(ValueError, match="cannot encode 'zebra crossing'"):
        scorer.score_texts(["zebra crossing"])


def test_unreachable_hub_fails_within_seconds(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")   # .invalid never resolves
    began = time.perf_counter()
    with pytest.raises(ValueError, match="huggingface-cli download gpt2"):
        open_rescorer("gpt2", quartznet_vocab())
    assert time.perf_counter() - began < 10
    with pytest.raises(FileNotFoundError, match="not a directory"):
        open_rescorer(str(tmp_path / "nothing"), quartznet_vocab())


def _hyp(entries, frame_confidence=1.0):
    hyps = []
    for text, score in entries:
        words = tuple(WordTimestamp(w, 3 * i, 3 * i + 2, 0.0, 0.0,
                                    frame_confidence=frame_confidence)
                      for i, w in enumerate(text.split()))
        hyps.append(Hypothesis(text, score, words=words, acoustic_score=score - 1.0))
    return Hypothesis(hyps[0].text, hyps[0].score, words=hyps[0].words, nbest=tuple(hyps))


def test_rerank_adds_the_weighted_second_lm_and_recomputes_confidence():
    hyp = _hyp([("the cap", -1.0), ("the cat", -1.5)])
    out = rerank(hyp, [-9.0, -6.0], weight=0.5)
    assert out.text == "the cat" and out.score == pytest.approx(-4.5)
    assert [e.text for e in out.nbest] == ["the cat", "the cap"]
    assert out.lm_score == pytest.approx(out.score - out.nbest[0].acoustic_score)
    post = 1 / (1 + math.exp(-1.0))          # softmax of -4.5 and -5.5
    assert [w.confidence for w in out.words] == pytest.approx([1.0, post])
    assert rerank(hyp, [-9.0, -6.0], weight=0.0).text == "the cap"   # weight 0: as decoded
    assert rerank(hyp, [-9.0, -6.0], weight=0.0, bonus=1.0).text == "the cap"
    with pytest.raises(ValueError, match="n-best"):
        rerank(hyp.nbest[0], [], 0.5)
    with pytest.raises(ValueError, match="--nbest 10"):
        check_nbest(1)


def test_rerank_leaves_confidences_unset_when_the_decoder_computed_none():
    """Decoded with word_confidence off (all NaN): re-ranking re-ranks, and computes none."""
    out = rerank(_hyp([("the cap", -1.0), ("the cat", -1.5)], math.nan), [-9.0, -6.0], 0.5)
    assert out.text == "the cat"
    assert all(math.isnan(w.confidence) for e in (out, *out.nbest) for w in e.words)


def test_second_kenlm_scores_whole_sentences_and_re_ranks_decoder_output(tmp_path):
    lm_path = write_arpa(tmp_path / "lm.arpa", {"ab": 0.2, "ba": 0.2, "bb": 0.01},
                         {("ab", "bb"): 0.9})
    lm = KenLMLanguageModel(lm_path)
    vocab = quartznet_vocab()
    assert is_kenlm(str(lm_path)) and not is_kenlm("gpt2")
    scorer = open_rescorer(str(lm_path), vocab)
    assert isinstance(scorer, KenLMSentenceScorer)
    state = lm.start_state()
    manual = 0.0
    for word in ("ab", "ba"):
        p, state = lm.score(state, word)
        manual += p
    manual += lm.end_score(state)
    assert scorer.score_texts(["ab ba"])[0] == pytest.approx(manual)
    # "ab ba" by the acoustics (0.55 against 0.4); the second LM says "ab bb"
    lp = frames(vocab, ["_", "a", "_", "b", "_", " ", "_", "b", "_", {"a": 0.55, "b": 0.4}, "_"])
    hyp = create_decoder("beam", vocab, nbest=4, beam_width=8).decode(lp)
    assert hyp.text == "ab ba"
    assert [h.text for h in rescore_many([hyp], scorer, weight=0.0)] == ["ab ba"]
    assert [h.text for h in rescore_many([hyp], scorer, weight=1.0)] == ["ab bb"]
    assert [h.text for h in rescore_many([Hypothesis.empty()], scorer, 1.0)] == [""]
