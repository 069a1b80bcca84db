"""What ptxas says of each kernel it compiles (`ptxas -v`, `nvcc --resource-usage`): registers,
spills, local and static shared memory, read from its log."""

from __future__ import annotations

import re
from typing import NamedTuple


class KernelResources(NamedTuple):
    registers: int  # per thread
    spill_stores: int  # bytes per thread
    spill_loads: int  # bytes per thread
    local: int  # bytes of local memory per thread: the stack frame (spills included) and lmem
    static_shared: int  # bytes per block (declared __shared__; dynamic shared memory is not)
    barriers: int


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_PROPERTIES = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")


def _number(pattern: str, line: str) -> int:
    match = re.search(pattern, line)
    return int(match.group(1)) if match else 0


def parse_ptxas_log(log: str) -> dict[str, KernelResources]:
    """Resources of every entry function (kernel) in a `ptxas -v` log, by mangled name.

    ptxas prints, per entry: "Compiling entry function 'NAME' for 'sm_XX'", then "Function
    properties for NAME" with the stack frame and spills on the next line, then "Used N
    registers, used B barriers, S bytes smem, ..." (smem and lmem only when not zero)."""
    frames: dict[str, tuple[int, int, int]] = {}
    found: dict[str, KernelResources] = {}
    entry = properties_of = None
    for line in log.splitlines():
        if match := _ENTRY.search(line):
            entry = match.group(1)
        elif match := _PROPERTIES.search(line):
            properties_of = match.group(1)
        elif (match := _FRAME.search(line)) and properties_of is not None:
            frames[properties_of] = tuple(int(g) for g in match.groups())
            properties_of = None
        elif (match := _USED.search(line)) and entry is not None:
            stack, stores, loads = frames.get(entry, (0, 0, 0))
            found[entry] = KernelResources(
                registers=int(match.group(1)),
                spill_stores=stores,
                spill_loads=loads,
                local=stack + _number(r"(\d+) bytes lmem", line),
                static_shared=_number(r"(\d+) bytes smem", line),
                barriers=_number(r"used (\d+) barriers", line),
            )
            entry = None
    return found
