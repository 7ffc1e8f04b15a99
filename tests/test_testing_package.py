"""snakeway.testing is for tests only: snakeway itself never imports it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import trio
import trio.testing

import snakeway
import snakeway.testing

PACKAGE = Path(snakeway.__file__).parent
DOC = Path(__file__).parents[1] / "docs" / "testing.md"


def imported_modules(source: str) -> set[str]:
    """Every module an import statement in ``source`` names (``from a import b`` gives ``a`` and ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_imported_modules_sees_every_spelling() -> None:
    source = "import snakeway.testing\nfrom snakeway import testing\nfrom snakeway.testing._clock import X\n"
    assert {"snakeway.testing", "snakeway.testing._clock"} <= imported_modules(source)


def test_no_module_outside_snakeway_testing_imports_it() -> None:
    production = [p for p in PACKAGE.rglob("*.py") if PACKAGE / "testing" not in p.parents]
    assert production  # the walk found snakeway's modules
    importers = sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in production
        if any(
            name == "snakeway.testing" or name.startswith("snakeway.testing.")
            for name in imported_modules(path.read_text(encoding="utf-8"))
        )
    )
    assert importers == []


def test_public_names_are_reexported_from_the_package() -> None:
    for name in ("FakeCA", "PlannedFailure", "STEPS", "Validator", "TrioLinkedClock", "inline", "cert_dates"):
        assert hasattr(snakeway.testing, name), name


def test_the_example_in_docs_testing_md_passes() -> None:
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    namespace: dict[str, object] = {}
    exec(compile(code, str(DOC), "exec"), namespace)  # the repository's own documentation
    (test,) = [value for name, value in namespace.items() if name.startswith("test_") and callable(value)]
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(test, clock, clock=clock)
