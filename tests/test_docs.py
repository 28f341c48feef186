"""The docs stand alone (issue 26): every document the repository cites is in it. A reference to
SCIENCE.md or DESIGN.md, in any tracked file (code, tests, docs, `salrun list` text), names a
file that exists relative to the citing file or to the repository's root, and every relative
link of a markdown file leads to a file or folder that exists."""
import re
import subprocess
from pathlib import Path

import pytest

from salrun.settings import describe

ROOT = Path(__file__).resolve().parent.parent
CITED = re.compile(r"[\w./-]*(?:SCIENCE|DESIGN)\.md")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def tracked() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in names.splitlines()
            if name.endswith((".py", ".md", ".sh", ".yaml", ".toml", ".txt")) and (ROOT / name).is_file()]


def resolves(citing: Path, reference: str) -> bool:
    return any((base / reference).exists() for base in (citing.parent, ROOT))


def test_every_cited_science_or_design_document_exists():
    missing = [f"{path.relative_to(ROOT)}: {ref}" for path in tracked() if path != Path(__file__).resolve()
               for ref in CITED.findall(path.read_text(errors="replace")) if not resolves(path, ref)]
    assert not missing, missing


def test_every_relative_markdown_link_exists():
    missing = [f"{path.relative_to(ROOT)}: {link}" for path in tracked() if path.suffix == ".md"
               for link in LINK.findall(path.read_text()) if "://" not in link and not resolves(path, link)]
    assert not missing, missing


def test_science_holds_what_the_docs_cite():
    text = (ROOT / "docs" / "SCIENCE.md").read_text()
    for heading in ("## 1. Definitions", "## 2. The SAL rule", "## 3. The paper's four claims", "## 4. Peers",
                    "## 5. What \"learns\" means"):
        assert heading in text
    assert "every hyperparameter in salrun" in text and "never the paper's" in text


def test_salrun_list_points_to_the_file():
    assert "docs/SCIENCE.md §2" in describe("method")["sal"]


def test_docs_scripts_are_command_lines():
    """Issue 27: the analysis lives in `salrun report`. docs/*.py other than check_chaos.py (independent
    by design) stay short and read no run folder; the shell scripts hold no inline Python."""
    scripts = [p for p in (ROOT / "docs").glob("*.py") if p.name != "check_chaos.py"]
    assert sum(len(p.read_text().splitlines()) for p in scripts) <= 150
    for path in scripts:
        assert not re.search(r"summary\.json|metrics\.csv|sweep\.csv|read_csv|load_collection", path.read_text()), path
    for path in (ROOT / "docs").glob("*.sh"):
        assert not re.search(r"python3? -(c|\s)|<<\s*'?PY", path.read_text()), path
