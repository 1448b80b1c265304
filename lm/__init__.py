"""Word n-gram language models: build with KenLM's tools, load, score; lexicons and unigram lists."""
from lm.language_model import KenLMLanguageModel, LanguageModel, load_language_model

__all__ = ["KenLMLanguageModel", "LanguageModel", "load_language_model"]
