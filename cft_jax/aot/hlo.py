"""The collectives of a compiled step, and libtpu's per-instruction cycle estimates, read from its
optimized HLO text and counted per step.

`collectives(hlo_text)` lists every all-gather, reduce-scatter, all-reduce, all-to-all and
collective-permute with its per-device size, its group size and how many times one step runs it:
the product of the trip counts of the while loops around it (scanned layers, micro-batches,
vocabulary chunks). A while loop's trip count is its `known_trip_count` where the compiler wrote
one, else the `i < N` bound of its condition (JAX's scans count from 0 by 1).

TPU's compiler writes a reduce-scatter as a fusion around an all-reduce and a dynamic-slice (an
`all-reduce-scatter` computation); those count as reduce-scatters of the full input. Sizes are the
per-device shapes the SPMD partitioner produced, and `traffic_bytes` is what one device sends in a
ring: (n-1)/n of the gathered or scattered size, twice that for an all-reduce.

`instruction_cycles(hlo_text)` lists the instructions TPU's compiler annotated with its own cycle
estimate (its scheduler's cost model, finer than `cost_analysis()`), with the same per-step counts:
a whole-step view of the program as it runs, no unrolled recompiles needed. Standard-library only.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict

DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")

_HEADER = re.compile(r"^(ENTRY )?%(\S+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.*)$")
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_CALLEES = re.compile(r"\b(calls|to_apply|body|condition)=%([^\s,)]+)")
_BRANCHES = re.compile(r"\b(?:branch_computations|called_computations)=\{([^}]*)\}")


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective instruction of the compiled program."""

    kind: str  # one of KINDS
    name: str
    computation: str
    bytes: int  # per device: the gathered / scattered (full) / reduced / exchanged array
    elements: int  # of that array (the largest one, for a tuple of several)
    shape: tuple[int, ...]  # of that array
    group_size: int
    per_step: int  # times one step runs it (trip counts of the loops around it)

    @property
    def traffic_bytes(self) -> float:
        """Bytes one device sends for one execution, in a ring over its group."""
        n = self.group_size
        if n <= 1:
            return 0.0
        if self.kind == "all-reduce":
            return 2 * self.bytes * (n - 1) / n
        if self.kind == "collective-permute":
            return float(self.bytes)
        return self.bytes * (n - 1) / n


def arrays(type_text: str) -> list[tuple[tuple[int, ...], int]]:
    """(shape, bytes) of each array in an HLO type (`bf16[8,128]{1,0}` or a tuple of them)."""
    found = []
    for dtype, dims in _ARRAY.findall(type_text):
        if dtype not in DTYPE_BYTES:
            continue
        shape = tuple(int(d) for d in filter(None, dims.split(",")))
        count = 1
        for d in shape:
            count *= d
        found.append((shape, count * DTYPE_BYTES[dtype]))
    return found


def _split_type(rest: str) -> tuple[str, str]:
    """`TYPE opcode(...)...` -> (TYPE, the text from the opcode on); TYPE may be a parenthesised tuple."""
    if rest.startswith("("):
        depth = 0
        for i, char in enumerate(rest):
            depth += char == "("
            depth -= char == ")"
            if depth == 0:
                return rest[: i + 1], rest[i + 1 :].lstrip()
    type_text, _, tail = rest.partition(" ")
    return type_text, tail


def _group_size(attributes: str, num_partitions: int) -> int:
    if match := re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attributes):
        sizes = dict(re.findall(r"'([^']+)'=(\d+)", match.group(1)))
        size = 1
        for axis in re.findall(r"'([^']+)'", match.group(2)):
            size *= int(sizes.get(axis, 1))
        return size
    if match := re.search(r"replica_groups=\[(\d+),(\d+)\]<=", attributes):
        return int(match.group(2))
    if match := re.search(r"replica_groups=\{\{([^}]*)\}", attributes):
        return len(match.group(1).split(","))
    if match := re.search(r"source_target_pairs=\{(.*?)\}\}", attributes):
        return 2
    return num_partitions


@dataclasses.dataclass
class _Computation:
    name: str
    lines: list[str]


def _computations(text: str) -> tuple[dict[str, _Computation], str]:
    computations, entry, current = {}, "", None
    for line in text.splitlines():
        if current is None:
            if match := _HEADER.match(line):
                current = _Computation(match.group(2), [])
                computations[current.name] = current
                entry = current.name if match.group(1) else entry
        elif line.rstrip() == "}":  # a kernel's backend config may span lines that start with "}}"
            current = None
        else:
            current.lines.append(line)
    return computations, entry


def _trip_count(instruction: str, computations: dict[str, _Computation]) -> int:
    if match := re.search(r'"known_trip_count":\{"n":"(\d+)"\}', instruction):
        return int(match.group(1))
    condition = re.search(r"condition=%([^\s,)]+)", instruction)
    lines = computations[condition.group(1)].lines if condition else []
    constants = {}
    for line in lines:
        if (match := _INSTRUCTION.match(line)) and (value := re.search(r" constant\((-?\d+)\)", line)):
            constants[match.group(1)] = int(value.group(1))
    for line in lines:
        if " compare(" in line and "direction=LT" in line:
            operands = re.search(r"compare\(([^)]*)\)", line).group(1)
            for operand in re.findall(r"%([^\s,)]+)", operands):
                if operand in constants:
                    return constants[operand]
    return 1


def times_per_step(hlo_text: str) -> tuple[dict[str, int], dict[str, _Computation]]:
    """(computation -> how many times one step runs it, the computations) for the module in
    `hlo_text`: the entry once, a while body by its trip count times its caller's count."""
    computations, entry = _computations(hlo_text)
    edges: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for computation in computations.values():
        for line in computation.lines:
            for label, callee in _CALLEES.findall(line):
                factor = _trip_count(line, computations) if label == "body" else 1
                edges[computation.name].append((callee, factor))
            for group in _BRANCHES.findall(line):
                edges[computation.name] += [(c.strip().lstrip("%"), 1) for c in group.split(",") if c.strip()]
    per_step: dict[str, int] = defaultdict(int)

    def visit(name: str, times: int, depth: int = 0) -> None:
        if name not in computations or depth > 64:
            return
        per_step[name] += times
        for callee, factor in edges[name]:
            visit(callee, times * factor, depth + 1)

    visit(entry, 1)
    return per_step, computations


def collectives(hlo_text: str, num_partitions: int = 1) -> list[Collective]:
    """Every collective of the optimized HLO module(s) in `hlo_text`, with how often a step runs it."""
    per_step, computations = times_per_step(hlo_text)
    found = []
    for name, times in per_step.items():
        for line in computations[name].lines:
            if not (match := _INSTRUCTION.match(line)):
                continue
            type_text, tail = _split_type(match.group(2))
            opcode = tail.partition("(")[0]
            kind = opcode.removesuffix("-start")
            if kind not in KINDS:
                continue
            sizes = arrays(type_text)
            if not sizes:
                continue
            shape = max(sizes, key=lambda array: array[1])[0]
            elements = 1
            for d in shape:
                elements *= d
            if kind == "all-reduce" and not opcode.endswith("-start"):
                size = sum(nbytes for _, nbytes in sizes)
            else:
                size = max(nbytes for _, nbytes in sizes)
            group = _group_size(tail, num_partitions)
            if kind == "all-reduce" and "all-reduce-scatter" in name:
                kind = "reduce-scatter"
            found.append(Collective(kind, match.group(1), name, size, elements, shape, group, times))
    return found


def per_step_totals(found: list[Collective]) -> dict[str, dict[str, float]]:
    """kind -> {"count", "bytes", "traffic_bytes"} summed over one step (trip counts applied)."""
    totals = {kind: {"count": 0.0, "bytes": 0.0, "traffic_bytes": 0.0} for kind in KINDS}
    for c in found:
        totals[c.kind]["count"] += c.per_step
        totals[c.kind]["bytes"] += c.bytes * c.per_step
        totals[c.kind]["traffic_bytes"] += c.traffic_bytes * c.per_step
    return totals


@dataclasses.dataclass(frozen=True)
class Cycles:
    """libtpu's estimate for one scheduled instruction (`"estimated_cycles"` in its backend config)."""

    computation: str
    name: str
    opcode: str
    cycles: int  # for one execution
    per_step: int  # times one step runs it
    op_name: str  # the JAX source op, from the metadata


def instruction_cycles(hlo_text: str) -> list[Cycles]:
    """Every instruction of the TPU module that carries libtpu's per-instruction cycle estimate (XLA's
    own fusions and copies; collectives, async copies and Pallas kernels carry none), with how often a
    step runs it. Empty for HLO without the estimates (GPU, or a dump taken before they are added)."""
    per_step, computations = times_per_step(hlo_text)
    found = []
    for name, times in per_step.items():
        for line in computations[name].lines:
            cycles = re.search(r'"estimated_cycles":"(\d+)"', line)
            if not cycles or not (match := _INSTRUCTION.match(line)):
                continue
            _, tail = _split_type(match.group(2))
            op_name = re.search(r'op_name="([^"]*)"', tail)
            found.append(
                Cycles(
                    name,
                    match.group(1),
                    tail.partition("(")[0],
                    int(cycles.group(1)),
                    times,
                    op_name.group(1) if op_name else "",
                )
            )
    return found
