"""Emission cache, audio sources, model loading and evaluation of CTC decoders."""
