"""Guards over the test files themselves."""

from __future__ import annotations

import ast


def shadowed_tests(source: str) -> list[str]:
    """Test functions, test classes and test methods defined twice in the same
    scope of a module: the later definition silently replaces the earlier,
    whose test then never runs."""
    tree = ast.parse(source)
    found: list[str] = []

    def scan(body, prefix: str) -> None:
        seen: dict[str, int] = {}
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = node.name
                if name.startswith(("test", "Test")):
                    if name in seen:
                        found.append(f"{prefix}{name} (lines {seen[name]} and {node.lineno})")
                    else:
                        seen[name] = node.lineno
                if isinstance(node, ast.ClassDef):
                    scan(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name) and t.id.startswith("test") and t.id in seen:
                        found.append(f"{prefix}{t.id} (lines {seen[t.id]} and {node.lineno})")

    scan(tree.body, "")
    return found
