"""Transformer-RL: teach GPT-style transformers to play games."""

__version__ = "0.1.0"
