"""Compare a run with the paper's reported numbers (Tables 1-3 of Kurz et al. 2024).

Only runs whose model is named like one of the paper's (Llama-3-8B-Instruct, Aya-23-8B,
also as ``org/Meta-Llama-3-8B-Instruct``) and pruned at 50% unstructured sparsity are
comparable; for anything else (the toy default) the comparison says so and stays empty.
The paper's numbers come from ``langprune.reference`` (shipped CSVs, in langprune's units).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..reference import TABLES, load_reference
from ..variant import DENSE, UNCALIBRATED, canonical_calib
from .common import CELL_KEYS, html_page, metric_info, write_text

PAPER_MODELS = ["Llama-3-8B-Instruct", "Aya-23-8B"]
PAPER_STRUCTURE = "unstructured"
PAPER_SPARSITY = 0.5
COMPARISON_FORMATS = ["csv", "md", "html"]
JOIN_KEYS = ["paper_model", "method", "calib", "benchmark", "language", "metric"]


def paper_reference() -> pd.DataFrame:
    """All of the paper's numbers as one long table keyed like our cells (values in our units)."""
    tidy = pd.concat([load_reference(name, tidy=True) for name in TABLES], ignore_index=True)
    tidy = tidy.rename(columns={"model": "paper_model", "value": "paper"})
    for key in ["method", "calib", "benchmark", "language"]:
        tidy[key] = tidy[key].astype(str).str.lower()
    return tidy[JOIN_KEYS + ["paper"]]


def paper_model_for(model: str) -> str | None:
    """The paper's name for a model id, matching on the name's tail case-insensitively."""
    for paper_model in PAPER_MODELS:
        if model.lower().endswith(paper_model.lower()):
            return paper_model
    return None


def comparable_cells(agg: pd.DataFrame) -> pd.DataFrame:
    """Our seed-aggregated cells in the paper's setting (dense, or 50% unstructured)."""
    sparsity = pd.to_numeric(agg["sparsity"], errors="coerce")
    in_setting = (agg["method"] == DENSE) | ((agg["structure"] == PAPER_STRUCTURE) & (sparsity == PAPER_SPARSITY))
    ours = agg[in_setting & agg["mean"].notna()].copy()
    ours["paper_model"] = ours["model"].map(paper_model_for)
    ours = ours[ours["paper_model"].notna()]
    for key in ["method", "calib", "benchmark", "language"]:
        ours[key] = ours[key].str.lower()
    ours.loc[ours["method"] == DENSE, "calib"] = UNCALIBRATED
    return ours


def compare_with_paper(agg: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """One row per cell present in both: ours, paper, ours - paper, in display units (% for accuracy)."""
    reference = reference.assign(calib=reference["calib"].map(canonical_calib))  # the paper's dense '-'
    merged = comparable_cells(agg).merge(reference, on=JOIN_KEYS, how="inner")
    scale = merged["metric"].map(lambda m: metric_info(m).scale).astype(float)
    merged["ours"] = merged["mean"] * scale
    merged["ours_std"] = merged["std"] * scale
    merged["paper"] = merged["paper"] * scale
    merged["difference"] = merged["ours"] - merged["paper"]
    columns = CELL_KEYS + ["n_seeds", "ours", "ours_std", "paper", "difference"]
    return merged[columns].sort_values(CELL_KEYS).reset_index(drop=True)


def rank_correlation(a: pd.Series, b: pd.Series) -> float:
    """Spearman correlation as the Pearson correlation of ranks (no SciPy needed)."""
    if len(a) < 3:
        return float("nan")
    return float(a.rank().corr(b.rank()))


def agreement_summary(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per model/method/benchmark/metric: how many cells, mean difference, rank agreement."""
    keys = ["model", "method", "benchmark", "metric"]
    rows = []
    for key, group in comparison.groupby(keys, sort=True):
        rows.append(dict(zip(keys, key), cells=len(group), mean_difference=group["difference"].mean(),
                         mean_abs_difference=group["difference"].abs().mean(),
                         spearman=rank_correlation(group["ours"], group["paper"])))
    return pd.DataFrame(rows, columns=keys + ["cells", "mean_difference", "mean_abs_difference", "spearman"])


def write_paper_comparison(agg: pd.DataFrame, out_dir: Path, reference: pd.DataFrame | None = None) -> list[Path]:
    """Write paper_comparison.{csv,md,html}; empty with an explanation when nothing matches."""
    comparison = compare_with_paper(agg, paper_reference() if reference is None else reference)
    summary = agreement_summary(comparison)
    title = "Comparison with the paper (50% unstructured, Tables 1-3)"
    if comparison.empty:
        note = (f"No result here is from a paper model ({', '.join(PAPER_MODELS)}) at 50% unstructured "
                "sparsity, so there is nothing to compare (expected for the toy default).")
    else:
        note = ("ours = mean over seeds in the paper's units (accuracy and F1 in %); difference = ours - paper; "
                "spearman = rank agreement over the compared cells.")
    summary_md = summary.to_markdown(index=False, floatfmt=".3g") if len(summary) else "(no compared cells)"
    detail_md = comparison.to_markdown(index=False, floatfmt=".4g") if len(comparison) else ""
    return [
        write_text(out_dir / "paper_comparison.csv", comparison.to_csv(index=False)),
        write_text(out_dir / "paper_comparison.md", f"**{title}**\n\n{note}\n\n{summary_md}\n\n{detail_md}\n"),
        write_text(out_dir / "paper_comparison.html",
                   html_page(title, note, summary.to_html(index=False, border=0, float_format="{:.3g}".format)
                             + "<br>" + comparison.to_html(index=False, border=0, float_format="{:.4g}".format))),
    ]
