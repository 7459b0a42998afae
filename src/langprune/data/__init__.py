"""Calibration and evaluation text: sources (mC4, text:DIR), shard sampling, language purity, overlap checks."""
