"""The feedback package is library code: the service and the CLI are shells over it."""

from __future__ import annotations

import ast
from pathlib import Path

import cnnlab.feedback


def test_feedback_imports_neither_serve_nor_cli() -> None:
    root = Path(cnnlab.feedback.__file__).parent
    found = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [(path.name, n) for n in names
                      if n.split(".")[:2] in (["cnnlab", "serve"], ["cnnlab", "cli"])]
    assert found == []
    assert {p.name for p in root.glob("*.py")} >= {"store.py", "versions.py", "retrain.py"}
