"""Layer-wise drift: how far each layer's hidden states move when the model is pruned.

The paper's Figure 2 finds that calibrating in the evaluation language helps only the first
and last few layers. Here drift is the mean, over probe passages, of the Euclidean distance
between the dense and the pruned model's mean-pooled layer output, per (calibration,
evaluation) language pair; the summary says at which layers target-language calibration
gives the smallest drift.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import MaxNLocator

from ..variant import LABEL_KEYS, SETTING_KEYS
from .common import (
    check_outputs,
    language_colors,
    legend_for_all,
    save_figure,
    sort_languages,
    use_headless_backend,
    variant_title,
    write_csv,
    write_text,
)
from .states import by_language, load_variants


def layer_distance(pruned, dense):
    """Mean over passages of ||pruned - dense|| per layer; inputs [layers, passages, hidden]."""
    return (pruned.float() - dense.float()).norm(dim=-1).mean(dim=-1)


def drift_table(variants: list[tuple[dict, dict]]):
    """Tidy rows (variant labels, eval_language, layer, drift, dense_norm) from pruned probe states."""
    rows = []
    for label, tensors in variants:
        norms = by_language(tensors, "dense_norm")
        for lang, drift in by_language(tensors, "drift").items():
            for layer, value in enumerate(drift.tolist(), start=1):
                rows.append({**label, "eval_language": lang, "layer": layer, "drift": value,
                             "dense_norm": float(norms[lang][layer - 1])})
    return pd.DataFrame(rows, columns=[*LABEL_KEYS, "eval_language", "layer", "drift", "dense_norm"])


def target_benefit(table):
    """Per (group, eval language, layer): target-calibration drift vs the other calibrations.

    ``benefit`` = mean drift under other calibration languages minus drift under the target
    language (positive: target calibration moves the layer less); ``relative_benefit`` divides
    by the others' mean; ``target_is_best`` marks layers where no other calibration does better.
    Seeds are averaged first. Only evaluation languages that were also calibration languages count,
    and "other" means the other monolingual calibrations (mixes are shown, not compared).
    """
    mean = table.groupby([*SETTING_KEYS, "calib", "eval_language", "layer"], as_index=False)["drift"].mean()
    mean = mean[mean["calib"].isin(set(mean["eval_language"]))]  # monolingual calibrations only
    rows = []
    for key, block in mean.groupby([*SETTING_KEYS, "eval_language", "layer"]):
        lang = key[len(SETTING_KEYS)]
        target = block[block["calib"] == lang]["drift"]
        others = block[block["calib"] != lang]["drift"]
        if target.empty or others.empty:
            continue
        t, o = float(target.iloc[0]), float(others.mean())
        rows.append({**dict(zip([*SETTING_KEYS, "eval_language", "layer"], key)), "target_drift": t,
                     "other_drift": o, "benefit": o - t, "relative_benefit": (o - t) / o if o else 0.0,
                     "target_is_best": bool(t <= float(others.min()))})
    return pd.DataFrame(rows, columns=[*SETTING_KEYS, "eval_language", "layer", "target_drift", "other_drift",
                                       "benefit", "relative_benefit", "target_is_best"])


def layers_that_benefit(benefit, majority: float = 0.5):
    """Per (group, layer): share of evaluation languages where target calibration is best; flag a majority."""
    summary = benefit.groupby([*SETTING_KEYS, "layer"], as_index=False).agg(
        share_target_best=("target_is_best", "mean"), mean_relative_benefit=("relative_benefit", "mean"),
        n_languages=("eval_language", "nunique"))
    summary["benefits"] = (summary["share_target_best"] > majority) & (summary["mean_relative_benefit"] > 0)
    return summary


def describe_benefit(summary) -> str:
    """Plain-language statement of which layers gain from target-language calibration."""
    if summary.empty:
        return ("No evaluation language was also a calibration language, so the benefit of target-language "
                "calibration cannot be measured.\n")
    lines = []
    for key, block in summary.groupby(list(SETTING_KEYS)):
        n_layers = int(block["layer"].max())
        good = block[block["benefits"]]["layer"].tolist()
        title = f"{key[0]} {variant_title(dict(zip(SETTING_KEYS, key)))}"
        if good:
            lines.append(f"{title}: target-language calibration gives the smallest drift for most evaluation "
                         f"languages at layers {', '.join(map(str, good))} of {n_layers}.")
        else:
            lines.append(f"{title}: no layer (of {n_layers}) where target-language calibration gives the "
                         "smallest drift for most evaluation languages.")
        best = block.loc[block["mean_relative_benefit"].idxmax()]
        lines.append(f"  largest mean relative benefit {best['mean_relative_benefit']:+.1%} at layer "
                     f"{int(best['layer'])}; share of languages where target calibration is best, per layer: "
                     + ", ".join(f"{int(r.layer)}:{r.share_target_best:.2f}" for r in block.itertuples()))
    return "\n".join(lines) + "\n"


def plot_drift(table, languages_order=None):
    """One row per pruning variant, one panel per evaluation language, one line per calibration language."""
    use_headless_backend()

    mean = table.groupby([*SETTING_KEYS, "calib", "eval_language", "layer"], as_index=False)["drift"].mean()
    groups = list(mean.groupby(list(SETTING_KEYS)))
    evals = sort_languages(mean["eval_language"].unique(), languages_order)
    colors = language_colors(mean["calib"].unique())
    fig, axes = plt.subplots(len(groups), len(evals), figsize=(2.6 * len(evals), 2.4 * len(groups)),
                             squeeze=False, sharex=True)
    for row, (key, block) in enumerate(groups):
        for col, lang in enumerate(evals):
            ax = axes[row][col]
            for calib in sort_languages(block["calib"].unique(), languages_order):
                line = block[(block["calib"] == calib) & (block["eval_language"] == lang)].sort_values("layer")
                ax.plot(line["layer"], line["drift"], marker=".", color=colors[calib], label=calib,
                        linewidth=2.2 if calib == lang else 1.0)
            ax.set_title(f"eval {lang}" + (f"\n{variant_title(dict(zip(SETTING_KEYS, key)))}" if col == 0 else ""),
                         fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if col == 0:
                ax.set_ylabel("mean |dense - pruned|", fontsize=7)
            if row == len(groups) - 1:
                ax.set_xlabel("layer", fontsize=7)
    legend_for_all(fig, axes)
    return fig


def run_drift(*, inputs: list[str], out_table: str, out_figure: str, out_summary: str,
              out_benefit: str | None = None, languages: list[str] | None = None) -> list[Path]:
    """`langprune analyze drift`: tidy drift table, per-layer benefit table, figure and a plain summary."""
    check_outputs(inputs, out_table=out_table, out_figure=out_figure, out_summary=out_summary,
                  out_benefit=out_benefit)
    table = drift_table(load_variants(inputs, need="drift"))
    benefit = target_benefit(table)
    summary = layers_that_benefit(benefit)
    written = [write_csv(table, out_table), save_figure(plot_drift(table, languages), out_figure),
               write_text(describe_benefit(summary), out_summary)]
    if out_benefit:
        written.append(write_csv(summary, out_benefit))
    return written

