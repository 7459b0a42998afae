"""Language-specific MLP neurons and whether calibration language protects them from pruning.

Method: Language Activation Probability Entropy (LAPE) of Tang et al. (2024), "Language-Specific
Neurons: The Key to Multilingual Capabilities in Large Language Models" (ACL 2024).
On the dense model, a neuron's activation probability in language k is the share of probe
tokens of k on which its activation is positive. Normalising those probabilities over languages
gives a distribution whose entropy is low when the neuron fires for few languages. As in that
paper: drop neurons whose highest probability is not above the ``filter_rate`` quantile of all
probabilities, keep the ``top_rate`` share of all neurons with the lowest entropy, and assign
each kept neuron to every language whose probability reaches the ``activation_bar`` quantile
(both thresholds inclusive, so that saturated probabilities of 1 still qualify).

A neuron's weights are its row in gate_proj and up_proj and its column in down_proj. Per
checkpoint the table gives the share of those weights that were pruned, per neuron language
and linear type; "all" rows are the same share over every MLP neuron (the baseline).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..errors import LangpruneError
from ..variant import LABEL_KEYS, SETTING_KEYS, variant_labels
from .common import (
    check_outputs,
    checkpoint_tags,
    limit_threads,
    save_figure,
    sort_languages,
    use_headless_backend,
    variant_title,
    write_csv,
    write_text,
)
from .masks import PrunedMasks, layer_index, linear_type
from .states import by_language, read_states

NEURON_AXIS = {"gate": 1, "up": 1, "down": 0}  # sum over this axis to get one count per neuron


def activation_probability(active: dict[str, object], tokens: dict[str, object], languages: list[str]):
    """[layers, neurons, languages] share of each language's tokens on which a neuron fired."""
    return torch.stack([active[lang].double() / max(int(tokens[lang]), 1) for lang in languages], dim=-1)


def lape(probability):
    """Entropy over languages of the normalised activation probabilities, [layers, neurons]."""
    total = probability.sum(-1, keepdim=True)
    normed = torch.where(total > 0, probability / total.clamp_min(1e-30), torch.zeros_like(probability))
    return -(torch.where(normed > 0, normed * normed.clamp_min(1e-30).log(), torch.zeros_like(normed))).sum(-1)


def select_language_neurons(probability, languages: list[str], *, top_rate: float = 0.01,
                            filter_rate: float = 0.95, activation_bar: float = 0.95) -> dict[str, object]:
    """Boolean [layers, neurons] mask of the language-specific neurons of each language."""
    flat = probability.flatten().float()
    entropy = lape(probability)
    # ">=": a small model's probabilities saturate at 1, and a strict ">" would then admit nothing
    frequent = probability.amax(-1) >= torch.quantile(flat, filter_rate)
    entropy = torch.where(frequent, entropy, torch.full_like(entropy, float("inf")))
    count = min(int(round(entropy.numel() * top_rate)), int(frequent.sum()))
    chosen = torch.zeros(entropy.numel(), dtype=torch.bool)
    if count > 0:
        order = torch.argsort(entropy.flatten(), stable=True)  # ties broken by position: deterministic
        chosen[order[:count]] = True
    chosen = chosen.view_as(entropy)
    bar = torch.quantile(flat, activation_bar)
    return {lang: chosen & (probability[..., k] >= bar) for k, lang in enumerate(languages)}


def neuron_pruned_counts(masks: dict[str, object]) -> dict[tuple[int, str], object]:
    """Pruned weights per MLP neuron: {(layer, 'gate'|'up'|'down'): counts [neurons]} and the row length."""
    counts = {}
    for name in masks:
        kind = linear_type(name)
        if kind in NEURON_AXIS:
            pruned = masks[name]
            counts[(layer_index(name), kind)] = (pruned.sum(NEURON_AXIS[kind]), pruned.shape[NEURON_AXIS[kind]])
    return counts


def pruned_share_rows(label: dict, counts: dict, selection: dict[str, object]) -> list[dict]:
    """Share of pruned weights of each language's neurons (and of all neurons), per linear type and 'mlp'."""
    rows = []
    for lang, chosen in {**selection, "all": None}.items():
        totals: dict[str, tuple[int, int]] = {}
        for (layer, kind), (per_neuron, width) in counts.items():
            keep = per_neuron >= 0 if chosen is None else chosen[layer - 1]
            for key in (kind, "mlp"):
                pruned, weights = totals.get(key, (0, 0))
                totals[key] = (pruned + int(per_neuron[keep].sum()), weights + int(keep.sum()) * width)
        n_neurons = (sum(c.numel() for (_, kind), (c, _) in counts.items() if kind == "down") if chosen is None
                     else int(chosen.sum()))
        for kind, (pruned, weights) in totals.items():
            rows.append({**label, "neuron_language": lang, "linear_type": kind, "n_neurons": n_neurons,
                         "pruned_weights": pruned, "weights": weights,
                         "pruned_share": pruned / weights if weights else float("nan")})
    return rows


def protection_check(table):
    """Per variant and neuron language: own-language calibration share vs the other calibrations.

    ``protection`` = mean share under other calibration languages minus the share under the
    neuron's own language (positive: calibrating in a language prunes fewer of its neurons' weights).
    Languages without selected neurons are left out; mixed calibration sets are not compared.
    """
    mlp = table[(table["linear_type"] == "mlp") & (table["neuron_language"] != "all") & (table["n_neurons"] > 0)]
    mean = mlp.groupby([*SETTING_KEYS, "neuron_language", "calib"], as_index=False)["pruned_share"].mean()
    mean = mean[mean["calib"].isin(set(table["neuron_language"]))]  # monolingual calibrations only
    rows = []
    for key, block in mean.groupby([*SETTING_KEYS, "neuron_language"]):
        lang = key[-1]
        own, others = block[block["calib"] == lang], block[block["calib"] != lang]
        if own.empty or others.empty:
            continue
        o, r = float(own["pruned_share"].iloc[0]), float(others["pruned_share"].mean())
        rows.append({**dict(zip([*SETTING_KEYS, "neuron_language"], key)), "own_calibration": o,
                     "other_calibrations": r, "protection": r - o,
                     "own_is_lowest": bool(o <= float(others["pruned_share"].min()))})
    return pd.DataFrame(rows, columns=[*SETTING_KEYS, "neuron_language", "own_calibration", "other_calibrations",
                                       "protection", "own_is_lowest"])


def describe_protection(check, counts) -> str:
    """Answer 'does calibrating in a language protect that language's neurons?' per variant."""
    lines = ["language-specific neurons per language: " + ", ".join(f"{k}={v}" for k, v in counts.items())]
    if check.empty:
        lines.append("No neuron language was also a calibration language (or no neurons were selected).")
    for key, block in check.groupby(list(SETTING_KEYS)):
        protected = int((block["protection"] > 0).sum())
        lowest = int(block["own_is_lowest"].sum())
        verdict = "yes" if protected > len(block) / 2 else "no"
        lines.append(f"{key[0]} {variant_title(dict(zip(SETTING_KEYS, key)))}: {verdict} - own-language calibration "
                     f"prunes fewer of a language's neuron weights than other calibrations for {protected} of "
                     f"{len(block)} languages (lowest of all for {lowest}); mean protection "
                     f"{block['protection'].mean():+.4f} of the neurons' weights.")
    return "\n".join(lines) + "\n"


def plot_neurons(table, languages_order=None):
    """Per variant: heatmap of pruned share, neuron language (rows) x calibration language (columns)."""
    use_headless_backend()

    mlp = table[table["linear_type"] == "mlp"]
    mean = mlp.groupby([*SETTING_KEYS, "neuron_language", "calib"], as_index=False)["pruned_share"].mean()
    groups = list(mean.groupby(list(SETTING_KEYS)))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.5), squeeze=False)
    for col, (key, block) in enumerate(groups):
        counts = mlp.drop_duplicates("neuron_language").set_index("neuron_language")["n_neurons"]
        rows = [*sort_languages([lang for lang in block["neuron_language"].unique()
                                 if lang != "all" and counts[lang] > 0], languages_order), "all"]
        cols = sort_languages(block["calib"].unique(), languages_order)
        grid = block.pivot(index="neuron_language", columns="calib", values="pruned_share").reindex(
            index=rows, columns=cols).to_numpy(dtype=float)
        ax = axes[0][col]
        baseline = float(np.nanmean(grid[-1]))  # the "all neurons" share: white in the colour scale
        spread = max(float(np.nanmax(np.abs(grid - baseline))), 1e-6)
        image = ax.imshow(grid, cmap="coolwarm", aspect="auto", vmin=baseline - spread, vmax=baseline + spread)
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=6)
        ax.set_xticks(range(len(cols)), cols, fontsize=8)
        ax.set_yticks(range(len(rows)), [f"{lang} ({counts[lang]})" for lang in rows], fontsize=8)
        ax.set_xlabel("calibration language", fontsize=8)
        ax.set_ylabel("language of the neurons (count)", fontsize=8)
        ax.set_title(f"share of neuron weights pruned\n{variant_title(dict(zip(SETTING_KEYS, key)))}", fontsize=8)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig


def run_neurons(*, dense: str, checkpoints: list[str], out_table: str, out_neurons: str, out_figure: str,
                out_summary: str, top_rate: float = 0.01, filter_rate: float = 0.95, activation_bar: float = 0.95,
                languages: list[str] | None = None, threads: int | None = None) -> list[Path]:
    """`langprune analyze neurons`: LAPE neuron selection on the dense model, pruned shares per checkpoint."""
    limit_threads(threads)
    check_outputs([dense, *checkpoints], out_table=out_table, out_neurons=out_neurons, out_figure=out_figure,
                  out_summary=out_summary)
    tensors, meta = read_states(dense)
    active, tokens = by_language(tensors, "active"), by_language(tensors, "tokens")
    if not active:
        raise LangpruneError(f"'{dense}' has no activation counts; pass the dense model's probe states")
    probe_langs = [lang for lang in meta["languages"] if lang in active]
    probability = activation_probability(active, tokens, probe_langs)
    selection = select_language_neurons(probability, probe_langs, top_rate=top_rate, filter_rate=filter_rate,
                                        activation_bar=activation_bar)
    neurons = neuron_list(selection, probability, probe_langs)
    rows = []
    for path in checkpoints:
        label = variant_labels(checkpoint_tags(path))
        rows.extend(pruned_share_rows(label, neuron_pruned_counts(PrunedMasks(path)), selection))
    table = pd.DataFrame(rows, columns=[*LABEL_KEYS, "neuron_language", "linear_type", "n_neurons",
                                        "pruned_weights", "weights", "pruned_share"])
    check = protection_check(table)
    counts = {lang: int(mask.sum()) for lang, mask in selection.items()}
    return [write_csv(table, out_table), write_csv(neurons, out_neurons),
            save_figure(plot_neurons(table, languages), out_figure),
            write_text(describe_protection(check, counts), out_summary)]


def neuron_list(selection: dict[str, object], probability, languages: list[str]):
    """Tidy list of the selected neurons: language, layer (from 1), index, LAPE and activation probabilities."""
    entropy = lape(probability)
    rows = []
    for lang, chosen in selection.items():
        for layer, index in chosen.nonzero().tolist():
            rows.append({"neuron_language": lang, "layer": layer + 1, "neuron": index,
                         "lape": float(entropy[layer, index]),
                         **{f"p_{k}": float(probability[layer, index, i]) for i, k in enumerate(languages)}})
    return pd.DataFrame(rows, columns=["neuron_language", "layer", "neuron", "lape",
                                       *[f"p_{k}" for k in languages]])
