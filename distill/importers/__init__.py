"""Converters from packaged model formats to ordinary Hugging Face / sentence-transformers folders."""
