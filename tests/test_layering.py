"""The package's layering: no import cycle between subpackages, the metrics stay numpy-only.

Every import counts: module level, inside functions, under TYPE_CHECKING. The intended
order (lower first) is errors/data/model/profiles -> artifact -> metrics -> runtimes ->
inference -> training/export/quantize/drift -> bench -> serve -> demo -> cli.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "drifa_edge"
LAYERS = [
    {"errors", "_moved", "progress", "data", "model", "profiles"},
    {"artifact", "card"},  # card.py: the old path of artifact.card (a warning shim)
    {"metrics"},
    {"runtimes"},
    {"inference"},
    {"training", "export", "quantize", "drift", "scaleout"},  # scaleout: Ray around the Predictor
    {"bench"},
    {"serve"},
    {"demo"},
    {"cli", "__main__"},  # __main__: python -m drifa_edge
]


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importing subpackage, imported subpackage) -> 'file:line' of each such import."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        source = _subpackage(module)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    targets = [".".join(base + ([node.module] if node.module else []))]
                else:
                    targets = [node.module or ""]
                if targets == ["drifa_edge"]:  # from drifa_edge import metrics, ...
                    targets = [f"drifa_edge.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                dest = _subpackage(target) if target.startswith("drifa_edge.") else None
                real = dest and ((PACKAGE / dest).is_dir() or (PACKAGE / f"{dest}.py").is_file())
                if source and real and dest != source:
                    edges.setdefault((source, dest), []).append(f"{rel}.py:{node.lineno}")
    return edges


def _cycles(edges) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_between_subpackages():
    edges = import_edges()
    cycles = _cycles(edges)
    detail = [
        f"{a} -> {b}: {where[0]}"
        for cycle in cycles
        for (a, b), where in edges.items()
        if {a, b} <= set(cycle)
    ]
    assert not cycles, f"import cycles {cycles}:\n" + "\n".join(detail)


def test_imports_follow_the_layers():
    """A subpackage imports only from its own layer or lower ones (siblings may, acyclically)."""
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    upward = [
        f"{a} (layer {rank[a]}) imports {b} (layer {rank[b]}): {where[0]}"
        for (a, b), where in import_edges().items()
        if a in rank and b in rank and rank[b] > rank[a]
    ]
    unknown = sorted({name for edge in import_edges() for name in edge} - set(rank))
    assert not unknown, f"subpackages missing from LAYERS: {unknown}"
    assert not upward, "\n".join(upward)


def test_the_cycle_check_can_fail():
    assert _cycles({("a", "b"): [], ("b", "c"): [], ("c", "a"): []}) == [["a", "b", "c"]]
    assert _cycles({("a", "b"): [], ("b", "c"): []}) == []


def test_metrics_and_artifact_import_without_torch_or_runtimes():
    code = (
        "import sys\n"
        "import drifa_edge.metrics, drifa_edge.artifact, drifa_edge.artifact.checkpoint\n"
        "heavy = sorted(m for m in ('torch', 'onnxruntime', 'openvino', 'tensorrt', 'scipy') if m in sys.modules)\n"
        "print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
