"""The embedded default's data and model: UDHR text in the paper's seven languages,
a byte-level BPE tokenizer and a small Llama-architecture model trained on it.

Small enough to build offline on two CPU cores in a couple of minutes, so a newcomer
sees the whole pipeline (and a small-scale version of the paper's effect) at once.
"""
