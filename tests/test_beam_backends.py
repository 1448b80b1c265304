"""The beam search on its array backends: numpy, and torch on the CPU (the code path a GPU runs;
the search is written once against ctclab.core.arrays). Both give the same texts, tokens, word
timestamps and n-best lists, and scores within BACKEND_SCORE_TOLERANCE, in every search mode;
the numpy path never imports torch; the device option means what the emission stage's does.
"""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, shared_path
from decoding_fixtures import BEAM_BACKENDS, log_softmax, quartznet_vocab, write_arpa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctclab.core.arrays import LOGADDEXP_SPARSE_MIN_PAIRS, NUMPY, arrays_for, gpu_present, torch_arrays
from ctclab.core.vocabulary import Vocabulary
from ctclab.decoders import create_decoder
from ctclab.decoders.constants import BACKEND_SCORE_TOLERANCE, DEFAULT_BATCH_SIZE_CPU
from ctclab.decoders.options import BeamOptions
from ctclab.decoders.search_schedule import FLOOR, concat_emissions, frame_stats, make_schedule

TORCH = BEAM_BACKENDS["torch"]
WORDS = {"the": 0.2, "cat": 0.08, "cap": 0.01, "sat": 0.06, "on": 0.1, "mat": 0.04, "a": 0.1}
BIGRAMS = {("the", "cat"): 0.3, ("cat", "sat"): 0.4, ("sat", "on"): 0.5, ("on", "the"): 0.4}


def assert_same(numpy_hyps, torch_hyps):
    """Same texts, tokens, words and n-best on both backends; scores within the tolerance."""
    for a, b in zip(numpy_hyps, torch_hyps, strict=True):
        assert (a.text, a.tokens, a.words) == (b.text, b.tokens, b.words)
        assert [n.text for n in a.nbest] == [n.text for n in b.nbest]
        for x, y in [(a.score, b.score), (a.acoustic_score, b.acoustic_score),
                     *[(n.score, m.score) for n, m in zip(a.nbest, b.nbest, strict=True)]]:
            assert x == y or abs(x - y) <= BACKEND_SCORE_TOLERANCE, (x, y)
        for u, w in zip(a.words, b.words, strict=True):
            assert u.frame_confidence == pytest.approx(w.frame_confidence, nan_ok=True)


def random_emissions(rng, vocab, count, max_frames, sharpness):
    out = []
    for _ in range(count):
        n = int(rng.integers(0, max_frames))
        logits = rng.normal(size=(n, vocab.size))
        logits[np.arange(n), rng.integers(0, vocab.size, n)] += sharpness
        out.append(log_softmax(logits) if n else np.zeros((0, vocab.size), np.float32))
    return out


MODES = {
    "no LM": {},
    "LM, soft lexicon": {"lm": True},
    "LM, hard lexicon, 5-best": {"lm": True, "lexicon_mode": "hard", "nbest": 5},
    "LM and hotwords": {"lm": True, "hotwords": ("mat",)},
    "no LM, exact": {"beam_prune_logp": -math.inf, "token_min_logp": -math.inf,
                     "blank_skip_threshold": None, "beam_width": 64, "nbest": 4},
}


@pytest.mark.parametrize("mode", sorted(MODES))
@settings(max_examples=6, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), sharpness=st.sampled_from([0.0, 3.0, 8.0]))
def test_letters_are_decoded_alike_on_numpy_and_torch(tmp_path, mode, seed, sharpness):
    v = quartznet_vocab()
    options = dict(MODES[mode])
    if options.pop("lm", False):
        options["lm_path"] = str(write_arpa(tmp_path / "lm.arpa", WORDS, BIGRAMS))
    rng = np.random.default_rng(seed)
    emissions = random_emissions(rng, v, 12, 60, sharpness)
    ours = create_decoder("beam", v, beam_width=options.pop("beam_width", 16), **options)
    on_torch = create_decoder("beam", v, beam_width=ours.options.beam_width, **options, **TORCH)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert_same(ours.decode_many(emissions), on_torch.decode_many(emissions))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", ["torch"])
def test_phonemes_with_homophones_and_word_pieces_alike(tmp_path, backend):
    lexicon = tmp_path / "lex.tsv"
    lexicon.write_text("the\tð ə\nthe\tð i\ncat\tk æ t\nto\tt u\ntwo\tt u\na\tə\n",
                       encoding="utf-8")
    phonemes = Vocabulary.from_labels(["|", "ð", "ə", "i", "k", "æ", "t", "u", "<blank>"],
                                      blank="<blank>", delimiter="|", units="phonemes")
    pieces = Vocabulary.from_labels(["<blank>", "▁the", "▁c", "at", "▁s", "a", "t"], blank=0)
    arpa = write_arpa(tmp_path / "lm.arpa", {"the": 0.3, "cat": 0.2, "to": 0.2, "two": 0.1,
                                             "a": 0.1, "sat": 0.1})
    rng = np.random.default_rng(3)
    for vocab, options in ((phonemes, {"lexicon_path": str(lexicon), "lm_path": str(arpa),
                                       "nbest": 3}),
                           (pieces, {"lm_path": str(arpa), "nbest": 3})):
        emissions = random_emissions(rng, vocab, 10, 40, 4.0)
        a = create_decoder("beam", vocab, beam_width=16, **options).decode_many(emissions)
        b = create_decoder("beam", vocab, beam_width=16, **options,
                           **BEAM_BACKENDS[backend]).decode_many(emissions)
        assert_same(a, b)


# ----------------------------------------------------------------------------- the real data
QUARTZNET = ("emissions", "quartznet15x5-base-en")
HAMA = ("emissions", "hama-phoneme")
LM = ("lm", "en-us-70k-3gram.arpa.gz")
IPA = ("lm", "en-us-70k-3gram.ipa-lexicon.tsv")


def load_set(root, vocab):
    rows = [line.split("\t") for line in (root / "manifest.tsv").read_text(
        encoding="utf-8").splitlines()[1:]]
    return [np.load(root / split / f"{utt}.npy") for split, utt, *_ in rows]


@pytest.mark.parametrize("backend", ["torch"])
def test_the_real_sets_are_decoded_alike_on_torch(backend):
    """The 94 real utterances: QuartzNet letters without and with the shared 3-gram, and the
    hama phonemes through the IPA lexicon with the 3-gram (hard lexicon, homophone forks)."""
    paths = [shared_path(*p) for p in (QUARTZNET, HAMA, LM, IPA)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        pytest.skip(f"real data not present: {missing}")
    quartznet, hama, lm, ipa = paths
    import json

    letters = quartznet_vocab()
    meta = json.loads((hama / "labels.json").read_text(encoding="utf-8"))
    phonemes = Vocabulary.from_labels(meta["labels"], blank=meta["blank_index"],
                                      delimiter=meta["word_delimiter"], unused=meta.get("unused"),
                                      units="phonemes")
    runs = [(letters, load_set(quartznet, letters), {}),
            (letters, load_set(quartznet, letters), {"lm_path": str(lm)}),
            (phonemes, load_set(hama, phonemes), {"lm_path": str(lm), "lexicon_path": str(ipa)})]
    for vocab, emissions, options in runs:
        a = create_decoder("beam", vocab, **options).decode_many(emissions)
        b = create_decoder("beam", vocab, **options, **BEAM_BACKENDS[backend]
                           ).decode_many(emissions)
        assert_same(a, b)


@pytest.mark.skipif(not gpu_present(), reason="no CUDA GPU: the CUDA path is the torch path "
                    "tested above on the CPU")
def test_a_gpu_decodes_as_numpy(tmp_path):
    v = quartznet_vocab()
    arpa = str(write_arpa(tmp_path / "lm.arpa", WORDS, BIGRAMS))
    emissions = random_emissions(np.random.default_rng(9), v, 50, 200, 6.0)
    for options in ({}, {"lm_path": arpa, "nbest": 3}):
        assert_same(create_decoder("beam", v, **options).decode_many(emissions),
                    create_decoder("beam", v, device="cuda", **options).decode_many(emissions))


# ----------------------------------------------------------------------------- options, imports
def test_the_numpy_path_never_imports_torch():
    code = ("import sys, numpy as np\n"
            "from ctclab.decoders import create_decoder, Vocabulary\n"
            "v = Vocabulary.from_labels(['|', 'a', 'b', '<pad>'], blank='<pad>', delimiter='|')\n"
            "x = np.log(np.full((6, 4), 0.25, np.float32))\n"
            "for device in ('cpu', 'auto'):\n"
            "    create_decoder('beam', v, device=device, nbest=2).decode_many([x, x[:3]])\n"
            "print('torch' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    expected = "True" if gpu_present() else "False"   # auto picks a GPU when there is one
    assert run.stdout.strip() == expected


def test_device_and_backend_options():
    assert arrays_for("cpu") is NUMPY
    assert arrays_for("cpu", "torch").name == "torch"
    if not gpu_present():
        assert arrays_for("auto") is NUMPY
        with pytest.raises(ValueError, match="no CUDA GPU"):
            create_decoder("beam", quartznet_vocab(), device="cuda")
    for bad, words in (({"device": "tpu"}, "unknown device"),
                       ({"device": "cpu:1"}, "unknown device"),
                       ({"array_backend": "jax"}, "array_backend"),
                       ({"device": "cuda", "array_backend": "numpy"}, "CPU only"),
                       ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=words):
            BeamOptions(**bad)
    cpu = create_decoder("beam", quartznet_vocab(), device="cpu")
    assert cpu.batch_size == DEFAULT_BATCH_SIZE_CPU
    assert create_decoder("beam", quartznet_vocab(), batch_size=7).batch_size == 7


# ----------------------------------------------------------------------------- the namespace
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_namespace_operations_agree_with_numpy(backend):
    xp = NUMPY if backend == "numpy" else torch_arrays("cpu")
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 7, 50)
    val = rng.normal(size=50)
    val[::9] = val[1]   # ties
    expected = np.full(9, -np.inf)
    np.maximum.at(expected, seg, val)
    got = xp.to_numpy(xp.segment_max(xp.asarray(val), xp.asarray(seg), 9))
    assert np.array_equal(got, expected)
    keys = (xp.asarray(-val), xp.asarray(seg))
    assert np.array_equal(xp.to_numpy(xp.lexsort(keys)), np.lexsort((-val, seg)))
    counts = np.array([2, 0, 3, 1])
    assert xp.to_numpy(xp.repeat_range(xp.asarray(counts))).tolist() == [0, 0, 2, 2, 2, 3]
    assert xp.count_below(xp.asarray(np.array([1, 4, 9])), 5) == 2
    hashed = xp.to_numpy(xp.asarray(np.array([2**62, -5])) * -7046029254386353131 + 3)
    assert hashed.tolist() == (np.array([2**62, -5]) * np.int64(-7046029254386353131)
                               + 3).tolist()   # int64 wraps alike


@pytest.mark.parametrize("finite", [0.0, 0.02, 0.3, 0.9])
@pytest.mark.parametrize("size", [LOGADDEXP_SPARSE_MIN_PAIRS - 1, LOGADDEXP_SPARSE_MIN_PAIRS, 5000])
def test_logaddexp_gives_numpys_bits(finite, size):
    """The numpy namespace's logaddexp, which sends only pairs of two finite terms through
    np.logaddexp on large arrays, returns np.logaddexp's bits: -inf pairs, -0.0 and +0.0 (a
    -0.0 beside a -inf comes back +0.0, as numpy's x + log1p(0) gives) and equal terms."""
    rng = np.random.default_rng(size + int(100 * finite))
    a, b = -rng.exponential(30, size), -rng.exponential(3, size)
    for x in (a, b):   # -inf where a pair is not to be finite; signed zeros; equal terms
        x[rng.random(size) > math.sqrt(finite)] = -np.inf
        x[rng.integers(0, size, 9)] = 0.0
        x[rng.integers(0, size, 9)] = -0.0
    same = rng.integers(0, size, 9)
    b[same] = a[same]
    a[7], b[7] = -0.0, -np.inf
    expected = np.logaddexp(a, b)
    assert np.array_equal(NUMPY.logaddexp(a, b).view(np.int64), expected.view(np.int64))
    both = np.isfinite(a) & np.isfinite(b)
    assert (both.mean() <= 0.33) == (finite <= 0.3)   # the cases reach both of its ways
    assert np.count_nonzero(np.signbit(expected) & (expected == 0)) == 0   # -0.0 never comes back


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("size", [300, 9000])   # numpy: the lexsort, then the grid sort
def test_segment_top_keeps_what_a_stable_sort_keeps(backend, size):
    """The k best of each segment holding more than k, equal values in pool order: the beam
    width's cut, by either of numpy's two ways and torch's."""
    xp = NUMPY if backend == "numpy" else torch_arrays("cpu")
    rng = np.random.default_rng(size)
    for k, n_seg, decimals in [(size // 40, 23, 1), (size // 6, 5, 8), (1, 3, 0),
                               (size // 2, 1, 1)]:
        seg = rng.integers(0, n_seg, size)
        val = np.round(rng.normal(size=size), decimals)   # few decimals: many ties
        counts = np.bincount(seg, minlength=n_seg)
        over = counts.take(seg) > k   # only segments holding more than k are cut
        seg, val = seg[over], val[over]
        sizes = np.where(counts > k, counts, 0)
        order = np.lexsort((-val, seg))
        rank = np.arange(len(order)) - (np.cumsum(sizes) - sizes)[seg[order]]
        expected = np.sort(order[rank < k])
        assert 0 < len(expected) < len(val)
        got = xp.segment_top(xp.asarray(val), xp.asarray(seg), xp.asarray(counts), k)
        assert np.sort(xp.to_numpy(got)).tolist() == expected.tolist()


# ----------------------------------------------------------------------------- folded runs
def test_runs_of_one_label_need_no_search_steps():
    """Frames after a frame whose only usable label is c, whose usable labels are c and at most
    blank, are folded: 'a a a _ b b' takes two steps (one per label), not five."""
    v = quartznet_vocab()
    a, b, blank = v.label_to_id["a"], v.label_to_id["b"], v.blank
    probs = np.full((6, v.size), 1e-6)
    for t, lab in enumerate([a, a, a, blank, b, b]):
        probs[t, lab] = 1.0
    probs[2, blank] = 0.3   # blank usable in the run's last frame: still folded
    x = np.log(probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    sched = make_schedule(concat_emissions([x], v.size)[0], np.array([6]), v, BeamOptions(),
                          hard=False)
    assert len(sched.act_rows) == 5 and sched.n_steps == 2
    hyp = create_decoder("beam", v).decode(x)
    assert hyp.text == "ab"
    # the same search without folding (every frame a step: nothing pruned, no skipping)
    exact = {"token_min_logp": -math.inf, "beam_prune_logp": -math.inf,
             "blank_skip_threshold": None}
    assert create_decoder("beam", v, **exact).decode(x).text == "ab"
    assert hyp.words[0].end_frame == 6 and hyp.tokens == (a, b)


@pytest.mark.parametrize("hard", [False, True])
def test_a_step_reads_its_frame_pruned_to_the_bit(hard):
    """What a step reads of its frame: the emissions themselves (xf, with a sentinel row of
    -inf after the last frame), kept where they reach the step's FLOOR: each step row's ln
    probs, bit for bit (-0.0 stays -0.0), -inf where token pruning drops the label (nothing is
    dropped in hard lexicon mode)."""
    v = quartznet_vocab()
    rng = np.random.default_rng(3)
    x = log_softmax(rng.normal(size=(60, v.size)) * 3)
    x[10] = -np.inf
    x[10, v.label_to_id["a"]] = -0.0   # a certain label: ln 1, as -0.0
    x[20, 4] = -np.inf
    padded = concat_emissions([x], v.size)[0]
    sched = make_schedule(padded, np.array([60]), v, BeamOptions(), hard=hard)
    rows = sched.xf.reshape(-1, v.size)
    assert np.shares_memory(sched.xf, padded)   # read in place, not copied
    assert len(rows) == 61 and np.isneginf(rows[-1]).all()
    frames = sched.act_rows[sched.tab_i[1]]   # AR: the step row's active index
    assert 10 in frames
    dropped = 0
    for offset, floor, frame in zip(sched.tab_i[0], sched.tab_f[FLOOR], frames, strict=True):
        assert offset == frame * v.size   # XOFF
        read = rows[frame]
        read = np.where(read >= floor, read, np.float32(-np.inf))
        usable = min(np.float32(BeamOptions().token_min_logp), x[frame].max())
        keep = np.ones(v.size, bool) if hard else x[frame] >= usable
        expected = np.where(keep, x[frame], np.float32(-np.inf))
        assert read.tobytes() == expected.tobytes()
        dropped += int((~keep).sum())
    assert hard or dropped > 0   # pruning dropped labels
    with pytest.raises(ValueError, match="concat_emissions"):   # no sentinel row
        make_schedule(x, np.array([59]), v, BeamOptions(), hard=hard)


@pytest.mark.parametrize("top_k", [None, 1, 3])
def test_step_candidates_are_the_usable_labels_of_their_frames(top_k):
    """Each step's candidates (the sole label of most frames named by the frame statistics,
    the others read again) are its frame's usable emitting labels in label order, at most
    top_k of them, with their ln probs: against a brute force over every step row."""
    v = quartznet_vocab()
    emissions = [
        log_softmax(np.random.default_rng(seed).normal(size=(n, v.size)) * scale)
        for seed, (n, scale) in enumerate([(40, 0.5), (70, 2.0), (25, 6.0), (1, 1.0)])]
    padded, lengths = concat_emissions(emissions, v.size)
    x = padded[:-1]
    options = BeamOptions(token_top_k=top_k)
    sched = make_schedule(padded, lengths, v, options, hard=False)
    emit = np.zeros(v.size, bool)
    emit[v.emitting_ids] = True
    seen = dict.fromkeys(range(3), 0)
    for s in range(sched.n_steps):
        lo, k = sched.cand_off[s], sched.cand_k[s]
        cols = range(sched.tab_col[s], sched.tab_col[s] + sched.rows[s])
        for slot, col in enumerate(cols):
            frame = sched.tab_i[0, col] // v.size
            if sched.cand_ragged[s]:
                count, begin = sched.cand_cell[:, col]
                at = slice(lo + begin, lo + begin + count)
            else:
                at = slice(lo + slot * k, lo + (slot + 1) * k)
            tok, lp = sched.cand_tok[at], sched.cand_lp[at]
            tok, lp = tok[tok < v.size], lp[tok < v.size]   # (dense padding: V)
            row = x[frame]
            floor = min(np.float32(options.token_min_logp), max(row[emit].max(), row[v.blank]))
            usable = (row >= floor) & emit
            if top_k is not None:
                usable &= row >= np.sort(row)[-top_k]
            expected = np.flatnonzero(usable)
            assert tok.tolist() == expected.tolist()
            assert lp.tobytes() == row[expected].tobytes()
            seen[min(len(expected), 2)] += 1
    assert seen[1] and (top_k == 1 or seen[2])   # sole and several candidates both met


def test_frame_statistics_name_the_sole_usable_label_in_a_large_vocabulary():
    """The usable counts and label-id sums are 16-bit integers: with 600 labels a frame where
    all are usable wraps the sum around, but the sum is only read where one label (or blank
    and one) is usable, and there it is that label's id exactly."""
    size, blank = 600, 0
    emit = np.ones(size, bool)
    emit[blank] = False
    x = np.full((3, size), np.float32(-50.0))
    x[0] = np.float32(-math.log(size))                 # every label usable
    x[1, 599] = 0.0                                    # only label 599
    x[2, [blank, 598]] = np.float32(math.log(0.5))     # blank and label 598
    stats = frame_stats(x, emit, blank, np.float32(-5.0))
    assert stats.n_usable.tolist() == [size, 1, 2]
    assert stats.label_sum[0] != size * (size - 1) // 2   # wrapped: never read
    assert stats.label_sum[1] == 599 and stats.label_sum[2] == blank + 598
    assert stats.blank_ok.tolist() == [True, False, True]


def test_one_device_flag_reaches_the_emission_stage_and_the_beam():
    """eval/run.py has one --device: the emission stage's, which the beam's device shares (the
    same field name, the same meaning)."""
    from ctclab.core.options import given_options
    from ctclab.emission.options import ExtractOptions
    from ctclab.eval import run as run_mod
    from ctclab.eval.systems import decoder_options

    parser = run_mod.build_parser()
    args = parser.parse_args(["--device", "cpu", "--array-backend", "torch"])
    assert given_options(args, decoder_options())["device"] == "cpu"
    assert given_options(args, {"extract": ExtractOptions})["device"] == "cpu"
    assert "also beam" in parser.format_help()
    options = BeamOptions(**{k: v for k, v in given_options(args, decoder_options()).items()
                             if k in ("device", "array_backend")})
    assert arrays_for(options.device, options.array_backend).name == "torch"
    assert arrays_for("mps") is NUMPY   # an Apple GPU has no float64: the search stays on the CPU
