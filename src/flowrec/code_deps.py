"""Which source files a stage's code consists of: its module and every flowrec module it imports.

Snakemake reruns a job when one of its inputs changed; listing a rule's code as inputs by hand drifts
(a new import is forgotten, and editing that module no longer reruns the rule). rules/common.smk
derives each rule's `code` input from the imports instead: the stage module's source is parsed (never
imported: the workflow parser has no torch), every `flowrec` import is followed, transitively, and
each package's __init__.py is included because Python runs it on import. Imports inside functions
count too: they run when the stage does.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "flowrec"


def module_file(name: str, src: Path) -> Path | None:
    """The source file of module `name` under `src` (a module or a package's __init__.py), if any."""
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _absolute(node: ast.ImportFrom, current: str, is_package: bool) -> str:
    """The absolute module an ImportFrom names (resolving `from . import x` relative imports)."""
    if not node.level:
        return node.module or ""
    parts = current.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    base = parts[:keep]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(path: Path, name: str) -> set[str]:
    """flowrec modules the file `path` (module `name`) imports, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node, name, is_package)
            found.add(module)
            # `from flowrec.tune import loop` imports the submodule flowrec.tune.loop
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def module_files(module: str, src: str | Path) -> list[Path]:
    """Source files of `module` and of every flowrec module it imports, transitively, with the
    __init__.py of every package on the way; sorted. Raises if `module` itself has no source."""
    src = Path(src)
    if module_file(module, src) is None:
        raise FileNotFoundError(f"no source for module {module!r} under {src}")
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name, src)
        if path is None:  # a name imported from a module, not a module itself
            continue
        seen[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        todo.extend(imported_modules(path, name))
    return sorted(set(seen.values()))
