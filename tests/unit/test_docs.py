"""The implementation-guide pages in docs/ig/ are what the generator makes of profiles/ and mappings/."""

from __future__ import annotations

import shutil
from pathlib import Path

from fhir_gateway import docs_gen
from fhir_gateway.workflow.tasks import FORWARD


def test_committed_pages_are_current() -> None:
    """Fails when profiles/, mappings/ or the state machine changed without regenerating the guide."""
    assert docs_gen.main(["--check"]) == 0, "run: python -m fhir_gateway.docs_gen"


def test_check_notices_drift(tmp_path: Path) -> None:
    out = tmp_path / "ig"
    assert docs_gen.main(["--out", str(out)]) == 0
    assert docs_gen.main(["--check", "--out", str(out)]) == 0
    page = out / "StructureDefinition-wor-task.md"
    page.write_text(page.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    assert docs_gen.main(["--check", "--out", str(out)]) == 1
    shutil.copy(page, out / "stale.md")
    assert docs_gen.differences(out, docs_gen.Guide().pages()) == ["stale.md", page.name]


def test_pages_carry_profiles_terminology_and_workflow() -> None:
    pages = docs_gen.Guide().pages()
    task = pages["StructureDefinition-wor-task.md"]
    assert "`status = 'rejected' implies statusReason.exists()`" in task  # invariant with FHIRPath
    assert (
        "fixedCode: `order`" in task
        and "required: [https://wor.example.nl/fhir/ValueSet/wor-milestones]" in task
    )
    assert "| `Task.owner` | min 1 |" in task
    assert "| `intake-held` | Intake gehouden | Intake held |" in pages["codesystems.md"]
    assert "is-a `Z01`" in pages["valuesets.md"]
    machine = pages["task-state-machine.md"]
    assert "```mermaid" in machine
    for source, targets in FORWARD.items():
        for target in targets:
            assert f"{source.replace('-', '_')} --> {target.replace('-', '_')} : owner" in machine
    feedback = pages["feedback.md"]
    assert "| client-declined | Cliënt ziet af | cancelled |" in feedback
    assert "### nieuwegein" in feedback
    assert all(name in pages["index.md"] for name in pages if name.startswith("StructureDefinition-"))
