#!/usr/bin/env python3
"""Reads a kernel's SASS the way the sparse producer's stall was found (docs/perf-notes.md,
"a stall found in the SASS"): no GPU needed.

  scripts/sass_check.py moves   KERNEL.cubin [--within N]
      Global loads whose result is copied by a MOV before anything else reads it, within N
      instructions (default 12). ptxas does that when a loaded vector's home registers are not
      the load's aligned destination, or when it wants one of them for a temporary; the copy
      then waits the whole load latency right after the load (the MODEL1 crossover lost 5.5%
      to one, and 23% to one five instructions after its load). Exit status 1 if any is found.

  scripts/sass_check.py control KERNEL.cubin [--from ADDR] [--to ADDR]
      Every instruction with its control bits decoded from the encoding: stall cycles, the
      scoreboard a variable-latency instruction sets (W: its result, R: its source
      registers) and the scoreboards it waits on. Loads that share a scoreboard are waited
      for together.

A cubin comes from the build (e.g. nvcc ... -cubin -o k.cubin src/.../instantiations/x.cu),
compiled with the package's flags (setup.py NVCC_FLAGS, -lineinfo included, after PyTorch's
-D__CUDA_NO_*): ptxas allocates registers differently without them, and a move seen in the
package's kernel was absent from a plainer build. cuobjdump must be on PATH.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class Instruction:
    address: int
    text: str
    stall: int
    write_barrier: int | None  # scoreboard set when the result is written
    read_barrier: int | None  # scoreboard set when the source registers are read
    waits: tuple[int, ...]  # scoreboards waited on before issue


INSTRUCTION = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;\s*/\* (0x[0-9a-f]{16}) \*/")
SECOND_WORD = re.compile(r"^\s*/\* (0x[0-9a-f]{16}) \*/")
REGISTER = re.compile(r"(?<![A-Z])R(\d+)(\.64)?")
GUARD = re.compile(r"^@!?U?P\w+\s+")  # an instruction's guard predicate, e.g. "@!P0 "


def unguarded(text: str) -> str:
    return GUARD.sub("", text)


def disassemble(cubin: str) -> list[Instruction]:
    lines = subprocess.run(
        ["cuobjdump", "-sass", cubin], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    result = []
    for i, line in enumerate(lines):
        match = INSTRUCTION.match(line)
        if not match or i + 1 >= len(lines):
            continue
        second = SECOND_WORD.match(lines[i + 1])
        if not second:
            continue
        # The control bits are the top 23 bits of the 128-bit encoding: stall (4), yield (1),
        # write barrier (3), read barrier (3), wait mask (6), reuse (4).
        control = int(second.group(1), 16) >> 41
        write_barrier = (control >> 5) & 7
        read_barrier = (control >> 8) & 7
        wait_mask = (control >> 11) & 0x3F
        result.append(
            Instruction(
                address=int(match.group(1), 16),
                text=match.group(2),
                stall=control & 0xF,
                write_barrier=None if write_barrier == 7 else write_barrier,
                read_barrier=None if read_barrier == 7 else read_barrier,
                waits=tuple(b for b in range(6) if wait_mask >> b & 1),
            )
        )
    return result


def registers(operand: str) -> set[int]:
    found = set()
    for number, wide in REGISTER.findall(operand):
        found.add(int(number))
        if wide:
            found.add(int(number) + 1)
    return found


def load_destination(text: str) -> set[int] | None:
    body = unguarded(text)
    match = re.match(r"LDG[.\w]*\s+R(\d+),", body)
    if not match:
        return None
    opcode = body.split(" ", 1)[0]
    width = 4 if ".128" in opcode else 2 if ".64" in opcode else 1
    base = int(match.group(1))
    return set(range(base, base + width))


def check_moves(code: list[Instruction], within: int) -> int:
    found = 0
    for i, load in enumerate(code):
        destination = load_destination(load.text)
        if destination is None:
            continue
        for later in code[i + 1 : i + 1 + within]:
            body = unguarded(later.text)
            opcode, _, operands = body.partition(" ")
            read = set()
            for source in operands.split(",")[1:]:  # the first operand is the destination
                read |= registers(source)
            if not destination & read:
                continue
            if opcode.startswith(("MOV", "IMAD.MOV")):
                print(f"{load.address:6x}  {load.text}\n    -> {later.address:6x}  {later.text}")
                found += 1
            break  # only the first reader counts
    print(f"{found} load result(s) moved within {within} instructions of the load")
    return 1 if found else 0


def show_control(code: list[Instruction], first: int, last: int) -> int:
    for ins in code:
        if not first <= ins.address <= last:
            continue
        sets = "".join(
            f"{kind}{barrier}"
            for kind, barrier in (("W", ins.write_barrier), ("R", ins.read_barrier))
            if barrier is not None
        )
        waits = ",".join(map(str, ins.waits))
        print(f"{ins.address:6x}  {ins.text[:72]:72s} stall {ins.stall:2d} {sets:5s} wait[{waits}]")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("moves", "control"))
    parser.add_argument("cubin")
    parser.add_argument("--within", type=int, default=12)
    parser.add_argument("--from", dest="first", type=lambda s: int(s, 16), default=0)
    parser.add_argument("--to", dest="last", type=lambda s: int(s, 16), default=1 << 40)
    args = parser.parse_args()
    code = disassemble(args.cubin)
    if args.mode == "moves":
        return check_moves(code, args.within)
    return show_control(code, args.first, args.last)


if __name__ == "__main__":
    sys.exit(main())
