"""Named defaults of the ``beam`` decoder (decoders/beam.py), each with the reason for its value.

All scores are natural logs. Defaults that also exist in pyctcdecode use pyctcdecode's values, so
that "beam at defaults" and "pyctcdecode at defaults" are matched settings in comparisons.
"""
from __future__ import annotations

import math

# Beams kept per utterance after every frame. 100 is pyctcdecode's default and the common setting in
# published comparisons; on peaky CTC output the score threshold below usually binds first.
DEFAULT_BEAM_WIDTH = 100

# Per-frame token pruning: a label is only tried as an extension when its ln prob is at least this
# (the frame's argmax label is always tried). e^-5 = 0.7 %: a label that unlikely in one frame
# almost never ends up on the best path, and it removes ~95 % of the (beam, token) pairs of real
# emissions. Same value as pyctcdecode's token_min_logp.
DEFAULT_TOKEN_MIN_LOGP = -5.0

# Optional per-frame top-k on top of the threshold (None = off): useful on flat, random-like
# emissions where many labels pass the threshold; real emissions rarely have more than 2.
DEFAULT_TOKEN_TOP_K: int | None = None

# Beams scoring this far (ln) below the best beam of the same utterance are dropped after each
# frame: e^-10 relative mass cannot overtake the best beam in practice. pyctcdecode's default.
DEFAULT_BEAM_PRUNE_LOGP = -10.0

# Frames where token pruning leaves no usable non-blank label are always folded without a search
# step, exactly (every prefix just accumulates the blank mass; real emissions are ~60 % such
# frames). This threshold additionally folds frames whose blank *probability* is at least this,
# which only matters when token_min_logp is below ln(1 - threshold). Why it is safe: every other
# label then has p <= 0.001, so the only mass dropped is that of paths leaving the blank there, at
# most 0.1 % of a prefix's mass per folded frame. None = only the exact folding.
DEFAULT_BLANK_SKIP_THRESHOLD: float | None = 0.999

# Shallow fusion weights: total = acoustic + alpha * ln P_LM(words) + beta * num_words.
# pyctcdecode's defaults (0.5, 1.5); tune them per LM and corpus (eval/tune.py).
DEFAULT_ALPHA = 0.5
DEFAULT_BETA = 1.5

# Lexicon handling of partial words: "soft" penalises, "hard" forbids, "none" ignores.
LEXICON_MODES = ("none", "soft", "hard")
DEFAULT_LEXICON_MODE = "soft"
# With a pronunciation lexicon (phonemes) an unknown partial word has no text of its own (only
# labels), so by default only lexicon words are output, as flashlight's lexicon decoder does.
PRONUNCIATION_LEXICON_MODE = "hard"

# ln penalty while a partial word is not a prefix of any known word, and for a finished word that is
# not known. Same value as pyctcdecode's unk_score_offset (-10). pyctcdecode applies it alike to
# partial words, but to a finished unknown word inside its LM term, as a log10 offset
# (alpha * ln 10 * -10 = -11.5 at alpha 0.5); here it is the same flat -10 in both places.
DEFAULT_UNKNOWN_PREFIX_PENALTY = -10.0

# An off-lexicon partial word longer than this many labels has its penalty scaled by
# length / AVG_WORD_LABELS: a run-on "word" that swallowed several word boundaries keeps getting
# less likely as it grows, instead of paying one flat penalty (and then never paying the LM for the
# words it hides). 6 is about the mean English word length in letters; pyctcdecode does the same.
AVG_WORD_LABELS = 6

# ln bonus for a finished hotword (a partial hotword gets the fraction it has spelled so far).
# pyctcdecode's default hotword weight.
DEFAULT_HOTWORD_WEIGHT = 10.0

# Alternatives returned in Hypothesis.nbest (1 = only the best; nbest stays empty then).
DEFAULT_NBEST = 1

# Word confidences (decoders/confidence.py) are computed unless turned off: eval's word records and
# calibration read them, and a decoder that leaves them out gives a results file without them.
# Their cost is the frame confidence: each label's best probability within its word's frames, a
# gather of (labels x word frames) values, ~6% of the beam's time on a test-clean-sized corpus
# with the 3-gram (bench/decode_speed.py --no-word-confidence; README, Speed). pyctcdecode and
# the C++ decoders compute none.
DEFAULT_WORD_CONFIDENCE = True

# Utterances searched together through the same array operations, per device (batch_size unset).
# A batch takes as many steps as its longest utterance has, and each step costs a fixed number of
# array calls plus work linear in the live beams, so larger batches of utterances of similar
# length (the decoder sorts them) spread the fixed cost thinner.
# CPU: numpy calls cost ~1 us each. Measured on a test-clean-sized synthetic set (2,620
# utterances, 5.4 h) with the shared 3-gram, one process, the decoders' passes interleaved (12
# each; min / median relative to 1,024): 0.970 / 0.976 at 1,536, 0.949 / 0.970 at 2,048, 1.035 /
# 1.040 at all 2,620 in one batch (2,048 cuts the set into two batches, 1,024 into three: 1,035
# steps instead of 1,238, while one batch of all makes every step's arrays larger than the
# caches). Peak memory of the benchmark's beam process: 492 MiB at 1,024, 605 MiB at 2,048.
# (Two rounds before, with a costlier schedule: 0.99 s at 2,048 against 1.005 at 1,024. A later
# session: all 2,620 at 0.977 / 0.990 of 2,048's time, the other way within the noise.) Since
# logaddexp skips the pairs holding a -inf (core/arrays.py), large steps cost less per beam, and
# one batch of all pays: 2,620 utterances at 0.979 / 0.976 and 0.997 / 0.962 of 2,048's time (20
# and 14 passes each), a test-other-sized set (2,939 utterances, 5.3 h) at 4,096 (one batch)
# 0.974 / 0.981 (14 passes), peak memory 614 -> 633 MiB. Hence 4,096.
# GPU: a kernel launch costs ~5-10 us whatever its size, so thousands of utterances share each
# step: a test-other-sized set (2,939 utterances) is one batch. Memory stays small: ~0.3 GB of
# step tables and candidates for 5 h of audio, and the live beams (~100 bytes each).
DEFAULT_BATCH_SIZE_CPU = 4096
# A default CPU batch also ends before its emissions pass this many frame-label cells (float32:
# 2 GiB): a batch's memory grows with frames x labels, and a large word-piece vocabulary (5,000
# labels: 2,048 LibriSpeech utterances would take 16 GB) would otherwise set it. Vocabularies of
# up to ~1,300 labels never meet it at 1,024 LibriSpeech utterances; an explicit batch_size is
# taken as it is.
DEFAULT_BATCH_CELLS_CPU = 2**29
DEFAULT_BATCH_SIZE_GPU = 4096

# From this many (beam, label) candidates in a search step on, extensions that cannot come within
# beam_prune_logp of their utterance's best beam are dropped before their words are scored (the
# scoring then works on ~30% fewer); below it the ~8 array calls of that early pruning cost more
# than they save (per-call overhead dominates small arrays). Results are the same either way:
# the final pruning drops them too.
EARLY_PRUNE_MIN_CANDIDATES = 2048

# Candidate layout of a search step (decoders/search_schedule.py). Dense: every beam reads its
# utterance's (K,) row, K the most candidates any utterance has in that step, padded; one gather,
# then broadcasting. Ragged: every beam reads only its utterance's own candidates; ~17 more array
# calls per step, but no padding. In a batch of hundreds of utterances one noisy frame sets K for
# all: on a test-clean-sized synthetic set K averaged 12 against 1.7 live labels per utterance.
# A step is ragged from RAGGED_MIN_CELLS dense cells on, when they are more than
# RAGGED_MIN_PADDING times its live candidates (the real QuartzNet set stays dense: K ~ 1.8,
# half of the cells live). Results are the same either way.
RAGGED_MIN_CELLS = 4096
RAGGED_MIN_PADDING = 3

# Largest dense child table of the word trie (nodes x columns int32); a larger one is kept sparse
# (decoders/child_table.py). Letters over a 70k-word LM take 38 MB dense and stay dense (one
# gather per lookup); a BPE-1000 word-piece vocabulary over the same LM took 0.8-1.6 GB dense,
# 1.6 MB sparse (a binary search per lookup: 10% slower decoding there, measured).
DENSE_CHILD_TABLE_MAX_BYTES = 256 * 2**20

# Slots (log2) of the word scorer's memo of (LM context, word node) -> (word score, context
# after): a search step's finished words then cost one hashed lookup instead of the word tables
# plus the LM's own memo. 2^16 slots take 1.5 MB; numpy only (a GPU scores its words in bulk).
# The memo is direct-mapped and answers a step only when it holds all its words: the real set's
# 1,824 (context, word) pairs share 1,801 slots, so 27 of its 181 word steps per pass score
# again. 2^20 slots cut that to 4 and ran 1.4% fewer instructions, yet no faster: the word
# scoring took 4.2-5.0 ms a pass at 2^16 and 4.7-6.6 ms at 2^20 (three 8 MB tables: every lookup
# lands on cache lines and pages of its own).
WORD_MEMO_BITS = 16

# Where the beam search runs: "auto" as the emission stage reads it (CUDA when a GPU is present,
# else the CPU). On the CPU the search runs in numpy (torch is not imported).
DEFAULT_DEVICE = "auto"

# Largest difference between the scores of one hypothesis found on two array backends (numpy,
# torch on the CPU, torch on a GPU), in ln units: the same float64 operations in the same order,
# except that libraries round log / exp / log1p differently in the last place (~1e-16 relative)
# and a GPU may fuse a multiply-add. Over ~1000 steps that stays below 1e-9; the texts are the
# same (a tie that different roundings break differently is below this tolerance too).
BACKEND_SCORE_TOLERANCE = 1e-9

# Between batches, partial words made during search (trie rows of V int32 each, ~120 bytes) are
# forgotten once there are more than this: they are only needed within a batch, and keeping them
# would let a long corpus grow memory without bound. (The LM's own limits: lm/constants.py.)
SEARCH_NODE_LIMIT = 500_000

# Which form of the LM the beam fuses (lm.loaded, lm.constants.LM_BACKENDS): "auto" = the array LM
# for ARPA files (KenLM's scores, a search step's words in one array call, no per-word Python),
# KenLM for binaries and for LMs over the memory limit below; "arrays" = the array LM or an error;
# "kenlm" = KenLM (the reference).
DEFAULT_LM_BACKEND = "auto"

# Largest array LM (MiB of arrays) "auto" builds; larger LMs are scored with KenLM. Building holds
# about 4x this in memory while sorting (the arrays, the parsed n-grams, sort permutations), so
# 2 GiB needs ~8 GiB of RAM once; a 3-gram of 4M n-grams takes 100 MiB. The arrays take
# 13 + 12 * (order - 1) bytes per middle n-gram: beyond this size KenLM's binaries (trie,
# quantised) are the better fit.
DEFAULT_LM_ARRAYS_MAX_MIB = 2048.0

NEG_INF = -math.inf
