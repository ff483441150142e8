#!/usr/bin/env python3
"""What each crate adds to a binary's code, as `cargo bloat --crates` reports it.

Sums the sizes of the function symbols of BINARY (a build that kept its symbol table, e.g.
target/product/latchkey-app) by the crate their demangled path starts with (`<A as B>::f`
counts under A's crate); C functions are grouped by library where their names tell it.
Generic code is counted where it is defined, so core/alloc/std hold much inlined code of
others. Used for docs/BENCHMARKS.md ("The product build"), where `cargo bloat` itself stalled
in a second build of the same target.

Usage: scripts/size-by-crate.py BINARY [ROWS]
"""
import collections
import re
import subprocess
import sys


def crate_of(name: str) -> str:
    while name.startswith("<"):
        name = name[1:]
    name = re.sub(r"^(dyn |&mut |&|\*const |\*mut )", "", name)
    if "::" in name:
        return re.sub(r"\[.*", "", name.split("::", 1)[0])
    if name.startswith("sqlite3"):
        return "[C] sqlite (libsqlite3-sys)"
    if "sntrup" in name.lower() or name.startswith(("PQCLEAN", "crypto_")):
        return "[C] sntrup761 (pqcrypto)"
    if name.startswith("ring_") or "ring_core" in name:
        return "[C/asm] ring"
    return "[C, other] and symbols without a crate path"


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    listing = subprocess.run(
        ["nm", "--print-size", "--size-sort", "--demangle", binary],
        capture_output=True, text=True, check=True,
    ).stdout
    sizes: collections.Counter = collections.Counter()
    for line in listing.splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[2] in "tTwW":
            sizes[crate_of(parts[3])] += int(parts[1], 16)
    if not sizes:
        sys.exit(f"{binary}: no function symbols (stripped?)")
    total = sum(sizes.values())
    print(f"function symbols: {total / 1e6:.2f} MB")
    for crate, size in sizes.most_common(rows):
        print(f"{size / 1024:8.0f} KiB {100 * size / total:5.1f}%  {crate}")


if __name__ == "__main__":
    main()
