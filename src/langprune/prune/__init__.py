"""Pruning: structures, statistics, methods (pure functions) and the sequential engine."""
