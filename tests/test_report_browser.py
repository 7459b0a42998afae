"""The HTML report of the session's reference run (the reduced toy, conftest.py): `snakemake
--report` builds it with every table and figure, and headless Chromium (Debian's package,
installed here when absent) renders it: the landing page, a heatmap and a table, each
screenshot checked to be non-blank."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import unavailable
from helpers import workflow as wf

MODEL = "toy"
CONFIG = wf.reduced_default()
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1400,1000", "--virtual-time-budget=5000"]
# Opens one result in the report's own viewer, as a click on it would (the report app keeps
# its state in the global `app`; `results` maps each file to its embedded data).
VIEW_SCRIPT = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  var path = Object.keys(results).find(function (p) { return p.endsWith("%(suffix)s"); });
  app.setView({navbarMode: "resultinfo", content: "%(kind)s", contentPath: results[path].data_uri,
               resultPath: path});
}, 200); });
</script>"""


def chromium() -> str:
    """Chromium from Debian's packages; installed with apt-get when missing (CI runs as root)."""
    for name in ("chromium", "chromium-browser"):
        if found := shutil.which(name):
            return found
    if os.geteuid() != 0:
        unavailable("chromium is not installed and installing it needs root: apt-get install chromium", "chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
        if done.returncode != 0:
            unavailable(f"could not install chromium from Debian's packages ({' '.join(command)}): "
                        f"{done.stderr.strip()[-300:]}", "chromium")
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def report(reference_run, tmp_path_factory) -> Path:
    """The reference run's report, written outside its working directory (which other tests share)."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    wf.snakemake(reference_run, "--cores", "1", "--report", str(out))
    return out


def heatmap_names(workdir: Path) -> list[str]:
    heatmaps = workdir / "results" / "figures" / MODEL / "heatmaps"
    return sorted(p.relative_to(workdir).as_posix() for p in heatmaps.rglob("*.png"))


@pytest.mark.workflow
def test_report_holds_every_table_and_figure(reference_run, report):
    html = report.read_text(encoding="utf-8")
    figures = heatmap_names(reference_run)
    # each pruning method and quantization setting: perplexity + udhr_mc, each abs + rel
    variants = len(CONFIG["pruning"]["methods"]) + sum(map(len, CONFIG["quantization"]["methods"].values()))
    assert len(figures) == variants * 2 * 2, figures
    tables = [f"results/tables/{MODEL}/{name}.{ext}" for name in
              ["table1_perplexity", "table1_bits_per_byte", "table2_tasks", "table4_mixes_tasks",
               "table4_mixes_perplexity", "paper_comparison", "target_best", "significance"] for ext in ("html", "csv")]
    for path in figures + tables:
        assert (reference_run / path).is_file(), path
        assert f'"{path}"' in html, f"{path} missing from the report"
    assert "target language is the best calibration" in html  # a caption made it in


def screenshot(browser: str, page: Path, out: Path) -> np.ndarray:
    import matplotlib.image

    profile = out.with_suffix(".profile")
    subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out}", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert out.is_file(), f"chromium wrote no screenshot of {page}"
    return matplotlib.image.imread(out)[..., :3]


def viewing(report: Path, suffix: str, kind: str, out: Path) -> Path:
    """A copy of the report that opens the result ending in `suffix` on load."""
    html = report.read_text(encoding="utf-8")
    at = html.rfind("</body>")
    out.write_text(html[:at] + VIEW_SCRIPT % {"suffix": suffix, "kind": kind} + html[at:], encoding="utf-8")
    return out


def distinct_colours(pixels: np.ndarray) -> int:
    return len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))


@pytest.mark.workflow
@pytest.mark.browser
def test_report_renders_in_chromium(report):
    browser = chromium()
    shots = report.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    landing = screenshot(browser, report, shots / "landing.png")
    heatmap = screenshot(browser, viewing(report, "wanda_unstructured_0.5/perplexity_abs.png", "img",
                                          shots / "heatmap.html"), shots / "heatmap.png")
    table = screenshot(browser, viewing(report, "table2_tasks.html", "html", shots / "table.html"),
                       shots / "table.png")
    for name, pixels in [("landing", landing), ("heatmap", heatmap), ("table", table)]:
        assert pixels.std() > 0.05, f"{name} screenshot is blank"
    # the heatmap view shows the figure's colour ramp, not just the report's chrome
    assert distinct_colours(heatmap) > distinct_colours(landing) + 100
