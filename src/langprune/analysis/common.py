"""Small helpers shared by the analyses: checkpoint labels, tidy-table and figure writing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import matplotlib
import matplotlib.pyplot as plt
import torch

from ..checkpoint import read_manifest
from ..io import atomic_path, check_output
from ..variant import checkpoint_labels, run_labels


def checkpoint_tags(checkpoint: str | os.PathLike | None) -> dict[str, str]:
    """Labels of a checkpoint as the metrics tables give them (variant.run_labels): its manifest's tags,
    else what the manifest records itself; the dense model gets the dense labels. Labels neither
    gives (a model without a tag) are left out."""
    manifest = None if checkpoint is None else read_manifest(checkpoint)
    tags = {} if manifest is None else manifest.get("tags")
    labels = run_labels(None, checkpoint_labels(manifest), tags, dense=checkpoint is None)
    return {key: value for key, value in labels.items() if value is not None}


def check_outputs(inputs: list[str | None], **outs: str | None) -> None:
    """Before an analysis runs: each ``out_x`` (flag ``--out-x``) must not be a directory or an input."""
    for key, path in outs.items():
        if path is not None:
            check_output(path, inputs=inputs, flag="--" + key.replace("_", "-"))


def write_csv(frame, path: str | os.PathLike) -> Path:
    """Write a DataFrame atomically with a stable float format (byte-identical reruns)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return Path(path)


def write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure atomically without timestamps (deterministic PNG bytes)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return Path(path)


def use_headless_backend() -> None:
    """Figures are written to files only; never try to open a window."""
    matplotlib.use("Agg", force=True)


def language_colors(languages: Iterable[str]) -> dict[str, Any]:
    """One stable colour per calibration language, the same in every figure."""
    palette = plt.get_cmap("tab10").colors
    return {lang: palette[i % len(palette)] for i, lang in enumerate(sorted(languages))}


def legend_for_all(fig, axes) -> None:
    """One legend of calibration sets beside the figure, collected from every panel (rows may differ)."""
    entries: dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    ordered = sort_languages(entries)
    fig.legend([entries[k] for k in ordered], ordered, title="calibration", loc="center left",
               bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.tight_layout()


def variant_title(row: dict[str, Any]) -> str:
    """A short human title for a (method, structure, sparsity) group."""
    return f"{row['method']} {row['structure']} {row['sparsity']}"


def sort_languages(languages: Iterable[str], order: Iterable[str] | None = None) -> list[str]:
    """Languages in the user's order where given, else alphabetical; mixes (e.g. all7) last."""
    languages = list(dict.fromkeys(languages))
    order = list(order or [])
    rank = {lang: i for i, lang in enumerate(order)}
    return sorted(languages, key=lambda lang: (lang not in rank, rank.get(lang, 0), len(lang) > 2, lang))


def limit_threads(threads: int | None) -> None:
    """Use the CPU threads the scheduler granted: on a shared 2-core machine, torch's default of
    one thread per core makes small forwards several times slower under contention."""
    if threads:
        torch.set_num_threads(threads)
