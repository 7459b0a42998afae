"""Language-specific vs language-agnostic features of the final embedding (the paper's Figure 1).

LSAR (Xie et al., 2022, "Discovering low-rank subspaces for language-agnostic multilingual
representations", EMNLP): the mean embeddings of different languages differ mostly along a
few directions. Centre the matrix of per-language mean embeddings and take its top-r left
singular vectors B (fitted on the dense model only). For an embedding e, the language-specific
part is its projection s = B Bᵀ e and the language-agnostic part is a = e - s.

Default rank: number of probe languages - 1, the most the centred language means can span,
so every direction that separates the languages' means counts as language-specific.
Per pruned model the table reports the mean, over parallel probe passages, of ||Δa|| and
||Δs|| against the dense model, per evaluation language.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..errors import LangpruneError
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
from .states import by_language, load_variants, read_states

COMPONENTS = ("agnostic", "specific")


def default_rank(n_languages: int) -> int:
    """L - 1: the rank of L centred language means."""
    return max(1, n_languages - 1)


def fit_language_subspace(embeddings: dict[str, object], rank: int | None = None):
    """Orthonormal basis [hidden, rank] of the directions separating the languages' mean embeddings."""
    if len(embeddings) < 2:
        raise LangpruneError("the language subspace needs probe text in at least two languages")
    means = torch.stack([embeddings[lang].double().mean(0) for lang in sorted(embeddings)], dim=1)  # [d, L]
    centred = means - means.mean(dim=1, keepdim=True)
    rank = default_rank(len(embeddings)) if rank is None else rank
    if not 1 <= rank <= min(centred.shape[0], len(embeddings) - 1):
        raise LangpruneError(f"--rank {rank} must be between 1 and {min(centred.shape[0], len(embeddings) - 1)} "
                             f"(number of probe languages - 1)")
    left, _, _ = torch.linalg.svd(centred, full_matrices=False)
    return left[:, :rank]


def split_features(embeddings, basis):
    """(s, a): projection onto the language subspace and the rest; embeddings [n, hidden]."""
    specific = (embeddings.double() @ basis) @ basis.T
    return specific, embeddings.double() - specific


def feature_change(pruned, dense, basis) -> dict[str, float]:
    """Mean over passages of ||Δa|| and ||Δs||; the split is linear, so it is applied to the difference."""
    specific, agnostic = split_features(pruned.double() - dense.double(), basis)
    return {"agnostic": float(agnostic.norm(dim=-1).mean()), "specific": float(specific.norm(dim=-1).mean())}


def features_table(dense_final: dict, variants: list[tuple[dict, dict]], rank: int | None = None):
    """Tidy rows (variant labels, eval_language, component, change, dense_magnitude, rank)."""
    basis = fit_language_subspace(dense_final, rank)
    magnitude = {}
    for lang, dense in dense_final.items():
        s, a = split_features(dense, basis)
        magnitude[lang] = {"specific": float(s.norm(dim=-1).mean()), "agnostic": float(a.norm(dim=-1).mean())}
    rows = []
    for label, tensors in variants:
        for lang, final in by_language(tensors, "final").items():
            if lang not in dense_final:
                raise LangpruneError(f"evaluation language '{lang}' has no dense reference states")
            for component, value in feature_change(final, dense_final[lang], basis).items():
                rows.append({**label, "eval_language": lang, "component": component, "change": value,
                             "dense_magnitude": magnitude[lang][component], "rank": basis.shape[1]})
    return pd.DataFrame(rows, columns=[*LABEL_KEYS, "eval_language", "component", "change",
                                       "dense_magnitude", "rank"])


def observation_check(table):
    """Test the paper's two claims per pruning variant.

    - ``*_spread``: mean over evaluation languages of (max - min) / mean of the change across
      calibration languages; claim 1 holds when the agnostic spread is below the specific one.
    - ``*_target_min``: share of evaluation languages whose own-language calibration gives the
      smallest change; claim 2 holds for s when that share is above one half.
    Seeds are averaged first. Only monolingual calibrations are compared, as in the paper's
    figure (mixes such as all7 stay in the table and plot). Variants with fewer than two
    calibration sets (magnitude pruning reads none) have nothing to compare and are left out.
    """
    mean = table.groupby([*SETTING_KEYS, "calib", "eval_language", "component"], as_index=False)["change"].mean()
    rows = []
    for key, block in mean.groupby(list(SETTING_KEYS)):
        if block["calib"].nunique() < 2:
            continue
        row = dict(zip(SETTING_KEYS, key))
        for component in COMPONENTS:
            part = block[block["component"] == component]
            mono = part[part["calib"].isin(set(part["eval_language"]))]  # as in the paper's figure: no mixes
            per_lang = mono.groupby("eval_language")["change"]
            row[f"{component}_spread"] = float(((per_lang.max() - per_lang.min()) / per_lang.mean()).mean())
            hits = {lang: bool(g.loc[g["change"].idxmin(), "calib"] == lang)
                    for lang, g in mono.groupby("eval_language") if lang in set(g["calib"])}
            row[f"{component}_target_min"] = sum(hits.values()) / len(hits) if hits else float("nan")
            row[f"{component}_target_languages"] = " ".join(lang for lang, hit in hits.items() if hit)
            row["n_target_languages"] = len(hits)
        row["agnostic_stable"] = bool(row["agnostic_spread"] < row["specific_spread"])
        row["specific_target_least"] = bool(row["specific_target_min"] > 0.5)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*SETTING_KEYS, "agnostic_spread", "specific_spread", "agnostic_stable",
                                       "n_target_languages", "agnostic_target_min", "agnostic_target_languages",
                                       "specific_target_min", "specific_target_languages", "specific_target_least"])


def describe_observations(check) -> str:
    """The paper's Figure 1 claims, stated as holding or not for each pruning variant."""
    lines = []
    for row in check.to_dict("records"):
        title = f"{row['model']} {variant_title(row)}"
        lines.append(
            f"{title}: (1) a changes {'less' if row['agnostic_stable'] else 'NOT less'} across calibration "
            f"languages than s (relative spread a {row['agnostic_spread']:.3f} vs s {row['specific_spread']:.3f}) "
            f"-> claim {'holds' if row['agnostic_stable'] else 'does not hold'}. "
            f"(2) own-language calibration gives the smallest change of s for "
            f"{row['specific_target_min']:.0%} of {row['n_target_languages']} evaluation languages "
            f"({row['specific_target_languages'] or 'none'}; the paper shows it for de, es, sw) "
            f"(of a: {row['agnostic_target_min']:.0%}) -> claim "
            f"{'holds' if row['specific_target_least'] else 'does not hold'} for most languages.")
    return "\n".join(lines) + "\n" if lines else "No pruning variant with two or more calibration sets to compare.\n"


def plot_features(table, languages_order=None):
    """Grouped bars: evaluation language on x, one colour per calibration language; a | s side by side."""
    use_headless_backend()

    stats = table.groupby([*SETTING_KEYS, "calib", "eval_language", "component"], as_index=False)["change"].agg(
        ["mean", "std"])
    groups = list(stats.groupby(list(SETTING_KEYS)))
    evals = sort_languages(stats["eval_language"].unique(), languages_order)
    colors = language_colors(stats["calib"].unique())
    fig, axes = plt.subplots(len(groups), 2, figsize=(max(6, 1.1 * len(evals)) * 2, 2.8 * len(groups)),
                             squeeze=False)
    for row, (key, block) in enumerate(groups):
        calibs = sort_languages(block["calib"].unique(), languages_order)
        width = 0.8 / len(calibs)
        for col, component in enumerate(COMPONENTS):
            ax = axes[row][col]
            for i, calib in enumerate(calibs):
                part = block[(block["calib"] == calib) & (block["component"] == component)].set_index("eval_language")
                x = np.arange(len(evals)) + (i - (len(calibs) - 1) / 2) * width
                ax.bar(x, [part["mean"].get(lang, np.nan) for lang in evals], width,
                       yerr=[part["std"].fillna(0).get(lang, 0) for lang in evals], color=colors[calib],
                       label=calib, error_kw={"linewidth": 0.6})
            ax.set_xticks(np.arange(len(evals)), evals, fontsize=8)
            ax.set_title(f"({'ab'[col]}) language-{component} | {variant_title(dict(zip(SETTING_KEYS, key)))}",
                         fontsize=8)
            ax.set_ylabel("mean ||Δ|| vs dense", fontsize=7)
            ax.set_xlabel("evaluation language", fontsize=7)
    legend_for_all(fig, axes)
    return fig


def run_features(*, dense: str, inputs: list[str], out_table: str, out_figure: str, out_summary: str,
                 out_check: str | None = None, rank: int | None = None,
                 languages: list[str] | None = None) -> list[Path]:
    """`langprune analyze features`: LSAR change table, grouped-bar figure and the claims check."""
    check_outputs([dense, *inputs], out_table=out_table, out_figure=out_figure, out_summary=out_summary,
                  out_check=out_check)
    dense_tensors, _ = read_states(dense)
    variants = load_variants(inputs, need="final")
    table = features_table(by_language(dense_tensors, "final"), variants, rank)
    check = observation_check(table)
    written = [write_csv(table, out_table), save_figure(plot_features(table, languages), out_figure),
               write_text(describe_observations(check), out_summary)]
    if out_check:
        written.append(write_csv(check, out_check))
    return written
