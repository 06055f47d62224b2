"""The package's shape: lazy top-level names and submodules, no import circle, and
imports that point one way (shared layers never import methods or estimators)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skucdr"


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path):
    """The skucdr modules ``path`` imports, at any depth of its code (lazy imports too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("skucdr"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("skucdr"):
                found.add(target)
                found.update(f"{target}.{a.name}" for a in node.names)
    return found


def _graph():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # an import of a package runs its __init__; "from pkg import sub" imports pkg.sub
        edges = {m for m in _imports(path) if m in modules and m != name}
        graph[name] = edges
    return graph


def test_no_import_circle():
    graph = _graph()
    # a package's __init__ re-exports its submodules: it may import them, but no
    # module may import back into a package whose __init__ imports it
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package importing its own submodule
                continue
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert len(graph) > 20  # the walk saw the package


def test_the_circle_check_finds_a_circle(tmp_path, monkeypatch):
    """The check above can fail: a module pair importing each other is reported."""
    graph = {"skucdr.a": {"skucdr.b"}, "skucdr.b": {"skucdr.a"}}
    monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: graph)
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_import_circle()


# the layers every method builds on, and what sits above them
SHARED_LAYERS = ("skucdr._validation", "skucdr._domains", "skucdr._gallery", "skucdr.nn",
                 "skucdr.neighbors", "skucdr.metrics", "skucdr.cluster", "skucdr.open_set")
UPPER_LAYERS = ("skucdr.uem", "skucdr.tpsnet", "skucdr._base", "skucdr.persistence",
                "skucdr.cli")


def _within(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_shared_layers_never_import_methods_or_estimators():
    graph = _graph()
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() if _within(a, SHARED_LAYERS)
                    for b in targets if _within(b, UPPER_LAYERS))
    if upward:
        pytest.fail("imports point up: " + "; ".join(upward))
    assert any(_within(a, SHARED_LAYERS) for a in graph)  # the walk saw the layers


def test_the_torch_layer_imports_no_estimator():
    graph = _graph()
    estimators = ("skucdr.cluster", "skucdr.preprocessing", "skucdr.model_selection")
    found = sorted(f"{a} -> {b}" for a, targets in graph.items() if _within(a, ("skucdr.nn",))
                   for b in targets if _within(b, estimators))
    assert not found, "skucdr.nn holds no scikit-learn code: " + "; ".join(found)


def test_the_direction_check_finds_an_arrow_pointing_up(monkeypatch):
    """The check above can fail: a shared layer importing a method package is reported."""
    graph = {"skucdr.nn.encoders": {"skucdr.tpsnet.text"}, "skucdr.tpsnet.text": set()}
    monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: graph)
    with pytest.raises(pytest.fail.Exception, match="skucdr.nn.encoders -> skucdr.tpsnet.text"):
        test_shared_layers_never_import_methods_or_estimators()


def test_submodules_are_reachable_and_import_skucdr_stays_light():
    code = (
        "import sys, skucdr\n"
        "assert 'torch' not in sys.modules, 'import skucdr imported torch'\n"
        "for name in ('metrics', 'datasets', 'model_selection', 'neighbors', 'cluster',\n"
        "             'open_set', 'preprocessing', 'uem', 'tpsnet', 'nn'):\n"
        "    assert getattr(skucdr, name).__name__ == 'skucdr.' + name\n"
        "assert skucdr.metrics.mean_average_precision\n"
        "assert skucdr.UniversalCDRRetriever is skucdr.uem.UniversalCDRRetriever\n"
        "assert 'metrics' in dir(skucdr)\n"
        "try:\n"
        "    skucdr.nothing\n"
        "except AttributeError as exc:\n"
        "    assert 'nothing' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
