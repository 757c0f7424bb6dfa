"""Import contract of lib/mmrepr: no subpackage imports upward (docs/ARCHITECTURE.md).

Every import is counted, also the lazy ones inside functions. Rules:

- nothing imports ``runner``, ``notebook`` or ``cli`` (except ``cli``/``__main__``/``runner``);
- ``config`` may import each stage's ``params`` module; a ``params`` module imports only
  core modules (io, paths), other ``params`` modules and its own package's contract
  (``training.params`` -> ``training.results``), never models or stage code, so
  ``data -> config`` pulls in no model code;
- ``data`` imports no ``models``, ``training``, ``features`` (``config`` is core);
- ``models`` imports no ``features``, ``lvlm``, ``data``, ``training``;
- ``analysis`` imports stage code only through the artefact contracts ``data.schema``,
  ``features.store``, ``training.results``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "lib" / "mmrepr"
ENTRY = {"cli", "__main__", "runner"}
CONTRACTS = {"data.schema", "features.store", "training.results"}
STAGE_PACKAGES = {"data", "features", "lvlm", "models", "training", "evaluation", "analysis"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def imports_of(source: str, module: str) -> set[str]:
    """mmrepr modules imported anywhere in ``source`` (relative to mmrepr, e.g. 'models.registry')."""
    out = set()
    pkg_parts = module.split(".")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level]
                names = [".".join(["mmrepr", *base, *([node.module] if node.module else [])])]
            else:
                names = [node.module or ""]
            # from X import y: y is a submodule when such a file exists, else a name in X.
            names = [f"{names[0]}.{a.name}" if _is_module(f"{names[0]}.{a.name}") else names[0] for a in node.names]
        else:
            continue
        for n in names:
            if n == "mmrepr" or n.startswith("mmrepr."):
                out.add(n[len("mmrepr."):] if n != "mmrepr" else "")
    out.discard("")
    return out


def _is_module(dotted: str) -> bool:
    if not dotted.startswith("mmrepr."):
        return False
    rel = Path(*dotted.split(".")[1:])
    return (PKG / rel).with_suffix(".py").is_file() or (PKG / rel / "__init__.py").is_file()


def violations(module: str, imported: set[str]) -> list[str]:
    top = module.split(".")[0]
    bad = []
    for imp in sorted(imported):
        itop = imp.split(".")[0]
        why = None
        if itop in ("runner", "notebook", "cli") and top not in ENTRY:
            why = "imports the runner/notebook/cli layer"
        elif module.endswith(".params") and itop in STAGE_PACKAGES and not imp.endswith(".params") \
                and imp != f"{top}.results":
            why = "a params module imports stage code"
        elif top == "data" and itop in ("models", "training", "features"):
            why = "data imports a later stage"
        elif top == "models" and itop in ("features", "lvlm", "data", "training"):
            why = "models import stage code"
        elif top == "analysis" and itop in STAGE_PACKAGES - {"analysis"} and imp not in CONTRACTS:
            why = "analysis imports stage code outside the artefact contracts"
        if why:
            bad.append(f"{module} -> {imp}: {why}")
    return bad


def all_modules() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p.read_text(encoding="utf-8"), module_name(p)) for p in sorted(PKG.rglob("*.py"))}


def test_no_subpackage_imports_upward():
    bad = [v for m, imps in all_modules().items() for v in violations(m, imps)]
    assert bad == [], "\n".join(bad)


@pytest.mark.parametrize("module,source", [
    # today's (before issue 10) violations, as they were written
    ("training.search", "def f():\n    from mmrepr.runner import code_hash\n"),
    ("models.params", "from pydantic import BaseModel\nfrom mmrepr.models import registry\n"),
    ("data.prepare", "from mmrepr.models.params import TrainParams\n"),
    ("analysis.load", "from mmrepr.training.cells import prepare\n"),
    ("analysis.load", "import mmrepr.models.registry\n"),
    ("models.lattice", "from mmrepr.features.store import load_feature_set\n"),
    ("data.schema", "from ..training import results\n"),
    ("features.extract", "from mmrepr import notebook\n"),
])
def test_the_checker_catches_upward_imports(module, source):
    assert violations(module, imports_of(source, module)), f"{module}: {source!r} was not flagged"


def test_the_checker_allows_the_contracts():
    assert violations("analysis.load", imports_of("from mmrepr.training import results\n", "analysis.load")) == []
    assert violations("config", imports_of("from mmrepr.training.params import TrainParams\n", "config")) == []
    assert violations("training.params", imports_of("from mmrepr.training.results import X\n",
                                                    "training.params")) == []


def test_architecture_doc_names_only_files_that_exist():
    doc = (PKG.parents[1] / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = doc.split("## Where to add", 1)
    assert len(section) == 2, "docs/ARCHITECTURE.md has no 'Where to add ...' section"
    body = section[1].split("\n## ", 1)[0]
    import re

    paths = set(re.findall(r"`((?:lib|params|notebooks|tests|docs)/[\w./-]+\.\w+)`", body))
    assert len(paths) >= 8, paths
    missing = [p for p in sorted(paths) if not (PKG.parents[1] / p).exists()]
    assert missing == [], f"named in docs/ARCHITECTURE.md but missing: {missing}"
