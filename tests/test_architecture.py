"""The import graph and the size rules that docs/architecture.md states.

Read from the source with :mod:`ast`, not by importing it, so that a module whose
optional libraries are missing here (TensorRT, CUDA) is checked all the same, and an
import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
#: the libraries only the GPU leaves may import
GPU_LIBRARIES = {"tensorrt", "cuda", "pycuda", "nvidia.nvimgcodec"}
#: the GPU decoder (nvImageCodec) is a leaf of its own beside the runtimes' two
GPU_LEAVES = {"edge.runtimes.tensorrt", "edge.runtimes.cuda", "edge.pipeline.gpudecode"}
#: what is not the appliance: the hub, the tools, and the command line that starts them all
NOT_APPLIANCE = ("edge.hub", "edge.tools", "edge.cli", "edge.__main__")


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    tree: ast.Module


@cache
def modules() -> tuple[Module, ...]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append(Module(name, path, ast.parse(path.read_text(), str(path))))
    return tuple(found)


def imports(module: Module) -> set[str]:
    """Every module name ``module`` imports, anywhere in it, resolved to absolute names."""
    names: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    known = {m.name for m in modules()}
    # "from edge.x import name" names a module only when edge.x.name is one
    return {n for n in names if not n.startswith("edge") or n in known}


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def package_of(name: str) -> str:
    """``edge.pipeline.watch`` -> ``edge.pipeline``; a top-level module is its own."""
    return ".".join(name.split(".")[:2])


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module in modules():
        source = package_of(module.name)
        targets = {package_of(n) for n in imports(module) if n.startswith("edge.")}
        graph.setdefault(source, set()).update(targets - {source, "edge"})
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def importers_of(prefix: str) -> set[str]:
    return {
        m.name
        for m in modules()
        if any(n == prefix or n.startswith(prefix + ".") for n in imports(m))
    }


def test_no_module_is_over_the_limit() -> None:
    long = {
        m.name: n
        for m in modules()
        if (n := len(m.path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_is_over_the_limit() -> None:
    long = {
        f"{m.name}.{f.name}:{f.lineno}": length
        for m in modules()
        for f in functions(m.tree)
        if (length := (f.end_lineno or f.lineno) - f.lineno + 1) > MAX_FUNCTION_LINES
    }
    assert long == {}


def test_no_package_imports_one_that_imports_it_back() -> None:
    assert cycles(package_graph()) == []


def test_the_cycle_check_can_fail() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_the_appliance_never_imports_the_hub() -> None:
    appliance = {m for m in importers_of("edge.hub") if not m.startswith(NOT_APPLIANCE)}
    assert appliance == set()


def test_only_the_gpu_leaves_import_tensorrt_or_cuda() -> None:
    importers = set().union(*(importers_of(library) for library in GPU_LIBRARIES))
    assert importers <= GPU_LEAVES
    assert importers, "the GPU leaves import TensorRT and CUDA: the check reads imports"


def test_nothing_but_the_entry_point_imports_the_cli() -> None:
    assert importers_of("edge.cli") <= {"edge.__main__"}


def test_the_runtimes_are_leaves() -> None:
    """Backends depend on the bundle, never on the engine that loads them."""
    runtimes = {m for m in importers_of("edge.engines") if m.startswith("edge.runtimes")}
    pipeline = {m for m in importers_of("edge.pipeline") if m.startswith("edge.runtimes")}
    assert runtimes | pipeline == set()


def test_the_bundle_is_a_leaf() -> None:
    bundle = [m for m in modules() if m.name.startswith("edge.bundle")]
    reached = {package_of(n) for m in bundle for n in imports(m) if n.startswith("edge.")}
    assert reached <= {"edge.bundle", "edge.errors", "edge.types", "edge.common"}


def test_the_architecture_page_names_every_package() -> None:
    """docs/architecture.md stays true to the layout: each package is named there."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    named = {package_of(m.name) for m in modules()} - {"edge"}
    missing = {name for name in named if f"`{name.replace('.', '/')}" not in page}
    assert missing == set()


def test_only_the_client_factory_makes_a_paho_client() -> None:
    """Protocol, TLS, credentials and the will are set in one place (edge.common.mqttclient)."""
    makers = {
        m.name
        for m in modules()
        for node in ast.walk(m.tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "Client"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "paho"
    }
    assert makers == {"edge.common.mqttclient"}
