"""The package's layering, checked on every import (function-level ones included).

Layers import strictly downward (docs/architecture.md explains each one and why):

    0 errors, files, redact, text    no package imports
    1 samples                        typed samples, schemas, the msgpack codec
    2 shards, loader, shuffle        tar encoding/decoding, the sink protocols, read plans
    3 stores                         disk, S3, HTTP: implement the shard protocols
    4 dataset                        Dataset[T], write_samples
    5 index (entries, providers)     what an index stores and where
    6 atmosphere                     ATProto records, PDS client, blob reads
    7 index.index, local, loading,   the Index facade (composes repositories, stores and the
      gc, cli                        atmosphere), load_dataset, garbage collection, the CLI
    8 Dagster modules                resources, IO manager, checks, promotion, components

Modules of one layer may import each other, without cycles. Imports under
``if TYPE_CHECKING:`` never run and are not counted. A function-level import is allowed
only with a ``# lazy: <reason>`` comment on its line (an optional dependency, a heavy
import kept off the CLI's start-up path...).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "atdata_dagster"
NAME = "atdata_dagster"

#: THE LAYER TABLE. Longest dotted prefix (relative to the package) -> layer.
#: A new module must be classified here (a module inside a sub-package is covered by the
#: sub-package's entry), and docs/architecture.md's picture updated to match.
LAYERS: dict[str, int] = {
    "errors": 0, "files": 0, "redact": 0, "text": 0,
    "samples": 1,
    "shards": 2, "loader": 2, "loader_torch": 2, "shuffle": 2,  # shards.query, shards.*: 2
    "stores": 3,  # stores.sources (URL/S3/blob data sources) and every other store module: 3
    "dataset": 4, "lenses": 4,  # lenses: typed sample transforms that Dataset.as_type uses
    "index": 5,
    "atmosphere": 6,
    "atmosphere.compat": 7,  # atdata's client classes; AtmosphereIndex wraps index.Index (not re-exported by atmosphere/)
    "index.index": 7, "local": 7, "loading": 7, "gc": 7, "repair": 7, "cli": 7,
    "metadata": 8, "naming": 8, "resolution": 8, "resources": 8, "io_manager": 8, "checks": 8,
    "promotion": 8, "components": 8, "assets": 8, "observe": 8, "validation": 8,
    "": 9,  # the package's own __init__ only: it re-exports everything
}
DAGSTER_LAYER = 8
MAX_LAZY = 25  # optional/heavy dependencies only (torch, atproto, httpx, boto3, pyarrow, pandas, psycopg); never a way around the layering


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _table_layer(module: str) -> int | None:
    """The layer LAYERS gives ``module``, or None when no entry covers it."""
    rel = module[len(NAME) + 1:] if module != NAME else ""
    keys = [k for k in LAYERS if rel == k or (k and rel.startswith(k + "."))]
    return LAYERS[max(keys, key=len)] if keys else None


def layer_of(module: str) -> int:
    """A module's layer; a package's ``__init__`` runs its imports, so it sits at the
    highest layer it re-exports from. An unclassified module counts as the top layer here
    (``test_every_module_is_classified`` names it)."""
    own = _table_layer(module)
    own = 9 if own is None else own
    if MODULES.get(module, Path()).name == "__init__.py":
        subs = [_table_layer(m) for m in MODULES if m.startswith(module + ".")]
        return max([own] + [9 if s is None else s for s in subs])
    return own


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(module: str) -> list[tuple[str, int, bool, str]]:
    """(imported module, line, at function level, source line) for every runtime import."""
    path = MODULES[module]
    source = path.read_text()
    tree = ast.parse(source)
    lines = source.splitlines()
    skip = _type_checking_lines(tree)
    is_pkg = path.name == "__init__.py"
    in_functions = {
        id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)
    }
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skip:
            continue
        lazy = id(node) in in_functions
        text = lines[node.lineno - 1]
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                targets.append(sub if sub in MODULES else target)
        out += [(t, node.lineno, lazy, text) for t in targets]
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_is_classified_in_the_layer_table():
    unclassified = sorted(m for m in MODULES if _table_layer(m) is None)
    assert not unclassified, (
        f"modules with no layer: {unclassified}. Add each to LAYERS in tests/test_layers.py "
        "(0 foundations ... 7 Index/CLI, 8 Dagster; see docs/architecture.md) and to the picture there."
    )


def test_no_module_imports_upward():
    upward = [
        f"{m}:{line} imports {t} (layer {layer_of(t)} above {layer_of(m)})"
        for m, imps in GRAPH.items() for t, line, _, _ in imps
        if t in MODULES and t != m and layer_of(t) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def test_engine_modules_never_import_dagster():
    leaks = [
        f"{m}:{line} imports {t}"
        for m, imps in GRAPH.items() if layer_of(m) < DAGSTER_LAYER
        for t, line, _, _ in imps if t == "dagster" or t.startswith(("dagster.", "dagster_"))
    ]
    assert not leaks, "\n".join(leaks)


def test_there_is_no_import_cycle_even_counting_function_level_imports():
    edges = {m: {t for t, *_ in imps if t in MODULES and t != m} for m, imps in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_function_level_imports_are_few_and_each_says_why():
    lazy = [(m, line, text) for m, imps in GRAPH.items() for _, line, is_lazy, text in imps if is_lazy]
    unexplained = sorted({f"{m}:{line}: {text.strip()}" for m, line, text in lazy if "# lazy:" not in text})
    assert not unexplained, "function-level imports need a `# lazy: <reason>` comment:\n" + "\n".join(unexplained)
    assert len({(m, line) for m, line, _ in lazy}) <= MAX_LAZY
