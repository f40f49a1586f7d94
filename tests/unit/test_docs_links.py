"""The README and the examples' READMEs link only inside the repository, to files that exist:
a reader of a clone or of the package has nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "examples").rglob("*.md"))]


def test_links_stay_inside_the_repository() -> None:
    problems = []
    for doc in documents():
        text = doc.read_text(encoding="utf-8")
        for target in LINK.findall(text):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or path.is_relative_to(ROOT / ".venv"):
                problems.append(f"{doc.relative_to(ROOT)}: {target} leaves the repository")
            elif not path.exists():
                problems.append(f"{doc.relative_to(ROOT)}: {target} does not exist")
        problems += [
            f"{doc.relative_to(ROOT)}: mentions {m}" for m in re.findall(r"(?:\.\./shared|/work/)\S*", text)
        ]
    assert not problems, problems


def test_examples_readme_says_how_to_get_tokens_and_a_fresh_referral() -> None:
    text = (ROOT / "examples" / "README.md").read_text(encoding="utf-8")
    assert "fhir-gateway token praktijk-de-geinoord-his" in text and "Authorization: Bearer" in text
    assert "GATEWAY_HOME" in text
    assert "sed \"s/VRW-2026-0001/" in text  # how to make a referral with a new number
    assert "VRW-2026-0001" in (ROOT / "examples" / "scenarios" / "01-referral-bundle.json").read_text()
