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

# Casing detection looks at this many LM words: enough to be certain, fast on a 200k-word LM.
CASING_SAMPLE_WORDS = 50_000

# oov_rate reports this many of the most frequent OOV words.
TOP_OOV_WORDS = 10

# Default acoustic alphabet for lm/build.py when no --vocab is given: the upper-case English
# letters plus apostrophe of wav2vec2-base-960h (the most common English CTC vocabulary).
DEFAULT_ENGLISH_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'"
