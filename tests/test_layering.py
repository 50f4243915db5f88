"""The package graph points down: every module imports only from its own layer and the layers below.

Layers, lowest first (README, "Layout"):

    cft_jax (the package), errors, schema, remote, integrity, assets (shipped material, tokenizers)
    hub         hf:// ids: models, tokenizers and data files downloaded through huggingface_hub
    models      the decoder, HF import/export, the sharding rules table
    config      the typed config schema, the data pipeline's DataConfig included (values only, no I/O)
    data        records, templates, packing, the Grain pipeline (configured by config's DataConfig)
    sampling    the KV-cache sampler (below training, whose validation samples with it)
    training | convert      beside each other: neither imports the other
    tools       train.py, aot/, bench/, demo/, every JAX package's __main__

The side tools `critique/` and `evaluation/` (with eval.py) stand apart: they import only the package,
errors, schema and remote, and each other one way (critique grades with evaluation's grader), so no
module that imports JAX is reachable from them. Only the tools import a side tool. No module imports an
entry point (train.py, eval.py, a __main__), no import cycle joins two modules, and the JAX core never
reaches torch or vLLM. Imports inside functions count as much as those at the top of a module.
"""

from __future__ import annotations

import ast
import dataclasses
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cft_jax"

RANKS = {
    "package": 0,
    "errors": 1,
    "schema": 2,
    "remote": 3,
    "integrity": 4,
    "assets": 5,
    "hub": 6,
    "models": 7,
    "config": 8,
    "data": 9,
    "sampling": 10,
    "training": 11,
    "convert": 11,
    "tools": 12,
}
SIDE_TOOLS = ("critique", "evaluation")
# What a side tool may import besides the side tools: standard library and etils underneath.
SIDE_TOOL_BASE = ("package", "errors", "schema", "remote")
# The one direction the side tools import each other in.
SIDE_TOOL_EDGES = {("critique", "evaluation")}
JAX = ("jax", "jaxlib", "flax", "optax", "orbax", "grain")
TORCH = ("torch", "vllm")
JAX_CORE = tuple(name for name in RANKS if name != "tools")


@dataclasses.dataclass(frozen=True)
class Import:
    """One import statement's target: a cft_jax module, or the top-level name of another package."""

    source: str
    line: int
    target: str

    @property
    def where(self) -> str:
        return f"{modules()[self.source].relative_to(PACKAGE.parent)}:{self.line}"


@cache
def modules() -> dict[str, Path]:
    """Every module under cft_jax/, by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(module: str, name: str | None) -> str:
    """`from module import name`: the submodule when `name` is one, else the module itself."""
    return f"{module}.{name}" if name and f"{module}.{name}" in modules() else module


@cache
def imports(source: str) -> tuple[Import, ...]:
    """Every import in `source`, at module level or inside a function."""
    path = modules()[source]
    package = source if path.name == "__init__.py" else source.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(source, node.lineno, _top(alias.name)) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([module] if module else [])])
            found += [Import(source, node.lineno, _top(_resolve(module, a.name))) for a in node.names]
    return tuple(dict.fromkeys(found))  # one edge per statement and target


def _top(name: str) -> str:
    """A cft_jax module as named; any other package by its top-level name."""
    return name if name == "cft_jax" or name.startswith("cft_jax.") else name.split(".")[0]


def internal(source: str) -> list[Import]:
    return [i for i in imports(source) if i.target in modules()]


def layer(module: str) -> str:
    """The layer a cft_jax module belongs to (module docstring)."""
    if module == "cft_jax":
        return "package"
    parts = module.split(".")
    top = parts[1]
    if top in SIDE_TOOLS:
        return top
    if top == "eval":
        return "evaluation"
    if parts[-1] == "__main__" or top in ("train", "aot", "bench", "demo"):
        return "tools"
    if top in RANKS:
        return top
    raise AssertionError(f"{module}: no layer; add it to `layer` in tests/test_layering.py and README")


def is_entry_point(module: str) -> bool:
    return module in ("cft_jax.train", "cft_jax.eval") or module.endswith(".__main__")


def broken_rule(edge: Import) -> str | None:
    """Why `edge` goes against the layering, or None."""
    src, dst = layer(edge.source), layer(edge.target)
    if is_entry_point(edge.target):
        return "no module imports an entry point (only `python -m` runs it): move what it needs below"
    if src in SIDE_TOOLS:
        if dst in SIDE_TOOLS and (dst == src or (src, dst) in SIDE_TOOL_EDGES):
            return None
        if dst in SIDE_TOOL_BASE:
            return None
        return f"the side tool {src} imports only {', '.join(SIDE_TOOL_BASE)} and the side tools it uses"
    if src == "tools" or src == dst:
        return None
    if dst in SIDE_TOOLS:
        return f"only the tools import a side tool ({dst}); the {src} layer must not"
    if RANKS[dst] < RANKS[src]:
        return None
    if RANKS[dst] == RANKS[src]:
        return f"{src} and {dst} stand beside each other: neither imports the other"
    return f"{src} is below {dst}: imports point down only"


def test_every_module_has_a_layer():
    for module in modules():
        layer(module)


def test_imports_point_down():
    broken = [
        f"{edge.where}: imports {edge.target} ({layer(edge.target)} layer) from the {layer(edge.source)} "
        f"layer: {rule}"
        for module in modules()
        for edge in internal(module)
        if (rule := broken_rule(edge))
    ]
    assert not broken, "\n".join(broken)


def test_no_import_cycles():
    """Depth-first search for a back edge; each cycle is reported with every import along it."""
    state: dict[str, str] = {}
    path: list[Import] = []  # the imports from the search's root to the module being visited
    cycles: list[list[Import]] = []

    def visit(module: str) -> None:
        state[module] = "open"
        for edge in internal(module):
            if state.get(edge.target) == "open":
                open_modules = [path[0].source if path else module, *(e.target for e in path)]
                cycles.append([*path[open_modules.index(edge.target) :], edge])
            elif edge.target not in state:
                path.append(edge)
                visit(edge.target)
                path.pop()
        state[module] = "done"

    for module in modules():
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(
        "import cycle: " + " -> ".join(f"{e.where} imports {e.target}" for e in cycle) for cycle in cycles
    )


def runs(module: str) -> list[Import]:
    """What importing `module` runs: its imports, and its packages' `__init__` (line 0)."""
    parents = [".".join(module.split(".")[:k]) for k in range(1, module.count(".") + 1)]
    return [*imports(module), *(Import(module, 0, p) for p in parents if p in modules())]


def _describe(edge: Import) -> str:
    if edge.line == 0:
        return f"{edge.source} runs its package {edge.target}"
    return f"{edge.where} imports {edge.target}"


def chain_to(start: str, forbidden: tuple[str, ...]) -> list[Import] | None:
    """The shortest chain of imports by which importing `start` imports one of `forbidden`, or None."""
    chains: dict[str, list[Import]] = {start: []}
    todo = [start]
    while todo:
        module = todo.pop(0)
        for edge in runs(module):
            if edge.target in forbidden:
                return [*chains[module], edge]
            if edge.target in modules() and edge.target not in chains:
                chains[edge.target] = [*chains[module], edge]
                todo.append(edge.target)
    return None


def reaching(group: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    """Each import by which a module of the layers `group` reaches `forbidden`, with the rest of the way."""
    found = []
    for module in modules():
        if layer(module) not in group:
            continue
        for edge in runs(module):
            if edge.target in forbidden:
                found.append(_describe(edge))
            elif edge.target in modules() and layer(edge.target) not in group:
                chain = chain_to(edge.target, forbidden)
                if chain:
                    found.append(f"{_describe(edge)}, and then " + " -> ".join(map(_describe, chain)))
    return found


def test_side_tools_reach_no_jax():
    found = reaching(SIDE_TOOLS, JAX)
    assert not found, "the side tools never import JAX (vLLM pins its own stack):\n" + "\n".join(found)


def test_jax_core_reaches_no_torch_or_vllm():
    found = reaching(JAX_CORE, TORCH)
    assert not found, "the JAX core never imports torch or vLLM:\n" + "\n".join(found)
