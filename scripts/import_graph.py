"""The package's import graph, every import counted (function-local ones too): cycles, and the function-local
imports that do not keep a framework or an optional dependency unimported (they could be at the top) and give no
other reason (a ``# lazy: why`` comment).

    python scripts/import_graph.py           # exit 1 on a cycle or on a function-local import without reason
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a function-local import may keep unimported until it is needed: the frameworks, and the optional or slow
# dependencies (extras, OpenCV, plotting).
HEAVY = {"keras", "tensorflow", "jax", "jaxlib", "torch", "onnxruntime", "onnx", "litserve", "fastapi", "starlette",
         "httpx", "cv2", "matplotlib", "tensorboardX", "ai_edge_litert", "openvino", "tf2onnx", "jax2onnx",
         "onnxscript", "uvicorn", "pydantic", "multiprocessing"}


def module_files() -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / "emotion").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "backends").glob("*.py")):
        name = "emotion.backends" + ("" if path.stem == "__init__" else f".{path.stem}")
        out[name] = path
    return out


def imports(path: Path, name: str) -> list[tuple[str, bool, int]]:
    """(imported module, at the top?, line) for every import in the file."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_nodes = set()
    for node in tree.body:
        for sub in ast.walk(node):
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                break
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            top_nodes.add(id(node))
        elif isinstance(node, (ast.If, ast.Try)):  # `if TYPE_CHECKING:` and try/except ImportError at the top
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    top_nodes.add(id(sub))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append((a.name, id(node) in top_nodes, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.append((full if full in MODULES else base, id(node) in top_nodes, node.lineno))
    return out


def type_checking_lines(path: Path) -> set[int]:
    tree = ast.parse(path.read_text())
    lines = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    lines.add(sub.lineno)
    return lines


MODULES = module_files()


def graph():
    edges, local = {}, []
    for name, path in MODULES.items():
        tc = type_checking_lines(path)
        for target, top, line in imports(path, name):
            if line in tc:
                continue
            root = target.split(".")[0]
            if target.startswith("emotion"):
                while target not in MODULES and "." in target:
                    target = target.rpartition(".")[0]
                if target != name:
                    edges.setdefault(name, set()).add(target)
            if not top:
                local.append((name, path, line, target, root))
    return edges, local


def with_parents(name: str) -> list[str]:
    """``a.b.c`` -> ``[a.b.c, a.b, a]``: importing a module runs its packages' ``__init__`` first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def heavy_modules(edges) -> set[str]:
    """Modules that import a framework or an optional dependency at their top, directly or through others."""
    top = {}
    for name, path in MODULES.items():
        tc = type_checking_lines(path)
        top[name] = {t for t, at_top, line in imports(path, name) if at_top and line not in tc}
    heavy = {n for n, ts in top.items() if any(t.split(".")[0] in HEAVY for t in ts)}
    changed = True
    while changed:
        changed = False
        for n, ts in top.items():
            inside = [t for t in ts if t.startswith("emotion")]
            if n not in heavy and any(p in heavy for t in inside for p in with_parents(t)):
                heavy.add(n)
                changed = True
    return heavy


def cycles(edges) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    return found


def main() -> int:
    edges, local = graph()
    heavy = heavy_modules(edges)
    bad = 0
    for cycle in cycles(edges):
        print("cycle: " + " -> ".join(cycle))
        bad += 1
    for _, path, line, target, root in local:
        if root in HEAVY or any(p in heavy for p in with_parents(target)) or \
                root not in ("emotion",) and root not in sys.stdlib_module_names:
            continue
        source = path.read_text().splitlines()[line - 1]
        if "# lazy:" in source:  # a reason given (the package's __init__ keeps `import emotion` fast)
            continue
        print(f"{path.relative_to(ROOT)}:{line}: function-local import of {target} (it imports no framework: "
              f"move it to the top){'  # ' + source.split('#', 1)[1].strip() if '#' in source else ''}")
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
