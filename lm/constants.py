"""Named defaults for the ``lm`` package, each with the reason it has its value."""
from __future__ import annotations

# Environment variable that moves the built KenLM tools (the cache root is ctclab.core.paths').
TOOLS_DIR_ENV = "CTCLAB_TOOLS_DIR"

# Decompressed LMs and fetched resources live under <cache root>/lm, beside the emission caches.
LM_CACHE_SUBDIR = "lm"

# ARPA tokens that are sentence markers, not words a decoder can spell.
ARPA_SPECIAL_TOKENS = frozenset({"<s>", "</s>", "<unk>", "<UNK>"})

# Copy buffer for gzip decompression and downloads: large enough that Python overhead is nil,
# small enough to be harmless in memory.
COPY_CHUNK_BYTES = 1 << 20

# Work smaller than these shows no progress display (it takes about a second or less): the
# compressed bytes of an .arpa.gz to decompress, the n-grams of an ARPA to read into arrays.
PROGRESS_MIN_GZIP_BYTES = 32 * COPY_CHUNK_BYTES
PROGRESS_MIN_NGRAMS = 1_000_000

# Casing detection looks at this many LM words: enough to be certain, fast on a 200k-word LM.
CASING_SAMPLE_WORDS = 50_000

# oov_rate reports this many of the most frequent OOV words.
TOP_OOV_WORDS = 10

# Default acoustic alphabet for lm/build.py when no --vocab is given: the upper-case English
# letters plus apostrophe of wav2vec2-base-960h (the most common English CTC vocabulary).
DEFAULT_ENGLISH_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"

# Both spellings KenLM reads as its unknown word (vocabulary id 0).
UNKNOWN_WORDS = frozenset({"<unk>", "<UNK>"})

# log10 probability KenLM gives <unk> when an ARPA lacks it (its Config.unknown_missing_logprob):
# the array LM must score unknown words exactly as KenLM does.
KENLM_UNKNOWN_MISSING_LOG10 = -100.0

# ARPA lines parsed per bulk step while building the array LM: big enough that Python's per-chunk
# work vanishes, small enough that a chunk's split lines (~200 bytes each) stay ~40 MB.
ARPA_READ_CHUNK_LINES = 200_000

# Word-at-a-time LMs (KenLM) behind the array interface (lm.scalar_batch): scores cached per
# (history, word), ~100 bytes an entry; interned histories and words (~100 bytes each) are
# forgotten between searches once there are more than these, so a long corpus cannot grow memory
# without bound. Array LMs need neither.
LM_SCORE_CACHE_SIZE = 2_000_000
LM_CONTEXT_LIMIT = 1_000_000
LM_WORD_LIMIT = 1_000_000

# Forms of an LM a decoder can fuse (lm.loaded): the array LM, KenLM, or arrays when possible.
LM_BACKENDS = ("auto", "arrays", "kenlm")

# Slots (log2) of the array LM's memo of recent (history, word) answers: 2^16 slots take 1.5 MB,
# small enough to stay in a core's L2 cache between search steps, where a lookup in the full
# arrays (100 MB for the shared 3-gram) misses the cache at every level of its binary search; a
# beam search over a corpus asks far fewer distinct pairs than that between repeats.
ARRAY_LM_MEMO_BITS = 16

# Arrays of the array LM copied at load out of its file mapping into the process's own memory:
# the sorted n-gram keys, binary-searched for every (history, word) pair not asked before (each
# search ~22 dependent reads across 28 MB for the shared 3-gram). numpy backs large allocations
# with transparent huge pages where Linux allows it (madvise mode), so those reads miss the TLB far
# less than in the file's 4 KiB pages: over the real set's first pass, its 177 cold lookups'
# searches took 8 ms instead of 30-38 (caches flushed before each), and the beam's first pass with
# the 3-gram 0.068 s instead of 0.112. Copying the other query arrays too (+77 MB) gained little
# more (measured); they stay shared between processes.
ARRAY_LM_PRIVATE_ARRAYS = ("keys",)

# From this many searches in one array LM query on, the keys are searched in sorted order:
# numpy's searchsorted starts each search where the previous one ended, and neighbouring searches
# share cache lines. Measured on the shared 3-gram with fresh random n-gram keys: 86 -> 71 us at
# 128 searches, 382 -> 206 us at 512, 4.9 -> 1.5 ms at 8192; below ~100 the sort's own calls eat
# the gain (a beam step on a small batch asks ~50, mostly answered by the memo).
ARRAY_LM_SORTED_SEARCH = 128
