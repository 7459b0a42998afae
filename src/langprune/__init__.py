"""langprune: language-specific calibration for pruning multilingual LLMs."""

__version__ = "0.1.0"
