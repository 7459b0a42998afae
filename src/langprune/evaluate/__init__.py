"""Evaluation: perplexity and bits-per-byte, lm-eval tasks (incl. MKQA and the toy udhr_mc), metrics JSON."""
