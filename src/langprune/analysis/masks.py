"""Mask overlap: do different calibration languages prune the same weights?

For every pair of checkpoints of one (model, method, structure, sparsity), the intersection
over union (IoU) of their pruned weight sets, per layer and per linear type (q, k, v, o, gate,
up, down). Pairs of two seeds of the same language give the sampling-noise baseline: a
language effect is only visible where cross-language IoU falls below same-language IoU.
Two independent random masks of sparsity p overlap with IoU p / (2 - p) (1/3 at 50%).

Counting is done on all checkpoints of a linear at once: with the masks stacked as an
[n_checkpoints, n_weights] 0/1 matrix, every pairwise intersection is one entry of M Mᵀ.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.ticker import MaxNLocator

from ..checkpoint import iter_masks, read_manifest
from ..errors import LangpruneError
from ..variant import SETTING_KEYS, variant_labels
from .common import (
    check_outputs,
    checkpoint_tags,
    limit_threads,
    save_figure,
    sort_languages,
    use_headless_backend,
    variant_title,
    write_csv,
)

LINEAR_TYPES = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate",
                "up_proj": "up", "down_proj": "down"}
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_CHUNK = 1 << 22  # float32 counts stay exact below 2**24


def linear_type(name: str) -> str:
    """'q', 'k', ... for a linear's module name; the last name part otherwise."""
    part = name.removesuffix(".weight").rsplit(".", 1)[-1]
    return LINEAR_TYPES.get(part, part)


def layer_index(name: str) -> int:
    """Decoder layer of a linear from its module name (counted from 1, as in the figures)."""
    match = _LAYER.search(name)
    if not match:
        raise LangpruneError(f"mask '{name}' is not inside a decoder layer (expected '...layers.<i>....')")
    return int(match.group(1)) + 1


def random_iou(sparsity: float) -> float:
    """Expected IoU of two independent random masks that each prune a fraction p."""
    return sparsity / (2 - sparsity) if sparsity else float("nan")


def pair_counts(stacked):
    """Pruned counts [N] and pairwise intersections [N, N] of stacked boolean masks [N, n_weights]."""
    flat = stacked.reshape(stacked.shape[0], -1)
    inter = torch.zeros(flat.shape[0], flat.shape[0], dtype=torch.int64)
    for start in range(0, flat.shape[1], _CHUNK):
        block = flat[:, start:start + _CHUNK].float()
        inter += (block @ block.T).round().to(torch.int64)
    return inter.diagonal().clone(), inter


def iou(intersection, count_a, count_b) -> float:
    union = count_a + count_b - intersection
    return float(intersection / union) if union else float("nan")


class PrunedMasks:
    """A checkpoint's masks as True = pruned, one linear at a time (a paper-sized model's masks
    unpacked together would not fit in memory). Keys are module names without '.weight'."""

    def __init__(self, checkpoint: str):
        self.checkpoint = checkpoint
        self.weights = {name.removesuffix(".weight"): name for name in read_manifest(checkpoint)["tensors"]}

    def __iter__(self):
        return iter(self.weights)

    def __len__(self):
        return len(self.weights)

    def __getitem__(self, name: str):
        ((_, keep),) = iter_masks(self.checkpoint, [self.weights[name]])
        return ~keep

    def items(self):
        return ((name, self[name]) for name in self)


def overlap_counts(masks_by_checkpoint: list[dict[str, object]]) -> Iterator[tuple[int, str, object, object]]:
    """Per pruned linear: (layer, linear type, pruned counts [N], pairwise intersections [N, N])."""
    names = sorted(masks_by_checkpoint[0], key=lambda n: (layer_index(n), n))
    for other in masks_by_checkpoint[1:]:
        if set(other) != set(names):
            raise LangpruneError("checkpoints of one pruning variant prune different linears; "
                                 "they cannot be compared weight by weight")
    for name in names:
        stacked = torch.stack([masks[name].bool() for masks in masks_by_checkpoint])
        counts, inter = pair_counts(stacked)
        yield layer_index(name), linear_type(name), counts, inter


def overlap_table(labels: list[dict], masks_by_checkpoint: list[dict[str, object]]):
    """Tidy rows per checkpoint pair x (layer, linear type): intersection, union, iou, pair kind."""
    totals: dict[tuple[int, str], tuple] = {}  # linears of one kind in one layer are pooled
    for layer, kind, counts, inter in overlap_counts(masks_by_checkpoint):
        if (layer, kind) in totals:
            counts, inter = counts + totals[layer, kind][0], inter + totals[layer, kind][1]
        totals[layer, kind] = (counts, inter)
    rows = []
    for (layer, kind), (counts, inter) in sorted(totals.items()):
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                a, b = labels[i], labels[j]
                union = int(counts[i] + counts[j] - inter[i, j])
                rows.append({**{k: a[k] for k in SETTING_KEYS}, "calib_a": a["calib"], "seed_a": a["seed"],
                             "calib_b": b["calib"], "seed_b": b["seed"], "layer": layer, "linear_type": kind,
                             "intersection": int(inter[i, j]), "union": union,
                             "iou": iou(int(inter[i, j]), int(counts[i]), int(counts[j])),
                             "pair": "same-language" if a["calib"] == b["calib"] else "cross-language"})
    return pd.DataFrame(rows, columns=[*SETTING_KEYS, "calib_a", "seed_a", "calib_b", "seed_b", "layer",
                                       "linear_type", "intersection", "union", "iou", "pair"])


def pooled_iou(table, by: list[str]):
    """IoU pooled over the rows of each group (sum of intersections / sum of unions)."""
    summed = table.groupby(by, as_index=False)[["intersection", "union"]].sum()
    summed["iou"] = summed["intersection"] / summed["union"]
    return summed


def language_matrix(table):
    """Per variant: calib_a x calib_b IoU pooled over layers, linear types and seed pairs (both halves)."""
    mirrored = table.rename(columns={"calib_a": "calib_b", "calib_b": "calib_a", "seed_a": "seed_b",
                                     "seed_b": "seed_a"})
    both = pd.concat([table, mirrored[table.columns]])
    both = both[~((both["calib_a"] == both["calib_b"]) & (both["seed_a"] == both["seed_b"]))]
    return pooled_iou(both, [*SETTING_KEYS, "calib_a", "calib_b"])


def layer_curve(table):
    """Per variant, layer and pair kind: pooled IoU (same-language = seed noise baseline)."""
    return pooled_iou(table, [*SETTING_KEYS, "layer", "pair"])


def plot_masks(matrix, curve, languages_order=None):
    """Per variant: language x language heatmap (diagonal = two seeds) and the per-layer IoU curve."""
    use_headless_backend()

    groups = list(matrix.groupby(list(SETTING_KEYS)))
    curves = dict(list(curve.groupby(list(SETTING_KEYS))))
    fig, axes = plt.subplots(len(groups), 2, figsize=(10, 4 * len(groups)), squeeze=False)
    for row, (key, block) in enumerate(groups):
        langs = sort_languages(set(block["calib_a"]) | set(block["calib_b"]), languages_order)
        grid = block.pivot(index="calib_a", columns="calib_b", values="iou").reindex(index=langs, columns=langs)
        ax = axes[row][0]
        image = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis")
        ax.set_xticks(range(len(langs)), langs, fontsize=8)
        ax.set_yticks(range(len(langs)), langs, fontsize=8)
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="w")
        fig.colorbar(image, ax=ax, shrink=0.8, label="IoU of pruned sets")
        ax.set_title(f"mask IoU | {variant_title(dict(zip(SETTING_KEYS, key)))}\n(diagonal: two seeds, "
                     "same language)", fontsize=8)
        ax = axes[row][1]
        lines = curves[key]
        for pair, style in (("cross-language", "-o"), ("same-language", "--s")):
            part = lines[lines["pair"] == pair].sort_values("layer")
            if not part.empty:
                ax.plot(part["layer"], part["iou"], style, markersize=3, label=pair)
        try:
            ax.axhline(random_iou(float(key[3])), color="grey", linestyle=":", label="random masks")
        except ValueError:
            pass
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer", fontsize=8)
        ax.set_ylabel("IoU of pruned sets", fontsize=8)
        ax.set_title("per layer: cross-language vs seed baseline", fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def group_checkpoints(checkpoints: list[str]) -> dict[tuple, list[tuple[dict, str]]]:
    """Checkpoints grouped by (model, method, structure, sparsity), each sorted by (calib, seed)."""
    groups: dict[tuple, list[tuple[dict, str]]] = {}
    for path in checkpoints:
        label = variant_labels(checkpoint_tags(path))
        groups.setdefault(tuple(label[k] for k in SETTING_KEYS), []).append((label, path))
    return {key: sorted(items, key=lambda item: (item[0]["calib"], item[0]["seed"])) for key, items in groups.items()}


def run_masks(*, checkpoints: list[str], out_table: str, out_matrix: str, out_layers: str, out_types: str,
              out_figure: str, languages: list[str] | None = None, threads: int | None = None) -> list[Path]:
    """`langprune analyze masks`: pairwise IoU tables (per layer x type, language matrix, per layer, per type)
    and a figure."""
    limit_threads(threads)
    check_outputs(checkpoints, out_table=out_table, out_matrix=out_matrix, out_layers=out_layers,
                  out_types=out_types, out_figure=out_figure)
    tables = []
    for items in group_checkpoints(checkpoints).values():
        if len(items) < 2:
            continue
        labels = [label for label, _ in items]
        tables.append(overlap_table(labels, [PrunedMasks(path) for _, path in items]))
    if not tables:
        raise LangpruneError("mask overlap needs at least two checkpoints of the same model, method, "
                             "structure and sparsity")
    table = pd.concat(tables, ignore_index=True)
    matrix, curve = language_matrix(table), layer_curve(table)
    types = pooled_iou(table, [*SETTING_KEYS, "linear_type", "pair"])
    return [write_csv(table, out_table), write_csv(matrix, out_matrix), write_csv(curve, out_layers),
            write_csv(types, out_types), save_figure(plot_masks(matrix, curve, languages), out_figure)]

