#!/usr/bin/env python3
"""Checks that the tether library's top-level modules form no import cycle.

Each file under src/ belongs to a top-level module (src/<m>.rs or src/<m>/...). A reference
`crate::<other>` in it (in a `use` or a path) is an edge m -> other. The script prints the
module graph, then every cycle it finds; it exits 1 when there is one.

    python3 scripts/module-cycles.py            # the graph and the verdict
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"
SKIP = {"lib.rs", "main.rs"}
REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"use crate::\{([^;]*)\};", re.S)


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0].removesuffix(".rs")


def item_end(text: str, i: int) -> int:
    """The end of the item starting at `i`: after its `;`, or after the brace matching its first
    `{`. Strings, raw strings, char literals and comments are skipped, so braces in them do not
    count."""
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        raw = re.match(r'r(#*)"', text[i:i + 260]) if c == "r" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")) else None
        if raw:
            close = '"' + raw.group(1)
            j = text.find(close, i + len(raw.group(0)))
            i = n if j < 0 else j + len(close)
            continue
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if c == "'":
            lit = re.match(r"'(\\.|[^\\'])'", text[i:i + 12])
            if lit:
                i += len(lit.group(0))
                continue
        if c == ";" and depth == 0:
            return i + 1
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return n


def strip_tests(text: str) -> str:
    # Unit tests may reach anywhere; the layering is about the code that ships. Each
    # `#[cfg(test)]` item (a `mod tests { ... }`, a `mod x;`, a test-only fn) is cut out whole,
    # and the code after it is read.
    out = []
    pos = 0
    while True:
        i = text.find("#[cfg(test)]", pos)
        if i < 0:
            out.append(text[pos:])
            return "".join(out)
        out.append(text[pos:i])
        pos = item_end(text, i + len("#[cfg(test)]"))


def main() -> int:
    graph: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        if path.relative_to(SRC).as_posix() in SKIP or path.name in ("tests.rs",) or path.name.endswith("_tests.rs"):
            continue
        m = module_of(path)
        text = strip_tests(path.read_text())
        refs = set(REF.findall(text))
        for group in USE_GROUP.findall(text):
            refs |= {part.strip().split("::")[0] for part in group.split(",") if part.strip()}
        graph.setdefault(m, set()).update(r for r in refs if r != m and r not in ("self",))
    for m in sorted(graph):
        print(f"{m:10} -> {', '.join(sorted(graph[m])) or '-'}")
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for nxt in sorted(graph.get(n, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    if cycles:
        for c in cycles:
            print("cycle: " + " -> ".join(c))
        print(f"module-cycles: 0 passed, {len(cycles)} failed")
        return 1
    print(f"module-cycles: no cycle among {len(graph)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
