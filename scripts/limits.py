#!/usr/bin/env python3
"""The size limits of src/ (docs/architecture.md section 2), tests excepted:
no file over 1,200 lines (counted to its first `#[cfg(test)]` at column 0)
and no function over 120 lines. Prints each offender; exit 1 if any.

Usage: python3 scripts/limits.py [MAX_FUNCTION_LINES]   (from the repository root)
Stdlib only. Braces inside string and char literals are not counted."""
import os
import re
import sys

MAX_FILE = 1200
MAX_FN = int(sys.argv[1]) if len(sys.argv) > 1 else 120
LITERAL = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])\'')
FN = re.compile(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)")


def braces(line):
    """The line without its string/char literals and its `//` comment."""
    return LITERAL.sub('""', line).split("//")[0]


files, functions = [], []
for root, _, names in os.walk("src"):
    for name in names:
        path = os.path.join(root, name)
        if not name.endswith(".rs") or "/tests/" in path or path.endswith("/tests.rs"):
            continue
        lines = open(path, encoding="utf-8").read().split("\n")
        cut = next((i for i, l in enumerate(lines) if l.startswith("#[cfg(test)]")), len(lines))
        if cut > MAX_FILE:
            files.append((cut, path))
        for i in range(cut):
            m = FN.match(lines[i])
            if not m:
                continue
            depth, started, j = 0, False, i
            while j < cut:
                text = braces(lines[j])
                if not started and text.rstrip().endswith(";"):
                    break
                for ch in text:
                    if ch == "{":
                        depth, started = depth + 1, True
                    elif ch == "}":
                        depth -= 1
                if started and depth <= 0:
                    break
                j += 1
            if started and j - i + 1 > MAX_FN:
                functions.append((j - i + 1, path, m.group(6), i + 1))

for n, path in sorted(files):
    print(f"file {path}: {n} lines before its tests (limit {MAX_FILE})")
for n, path, name, line in sorted(functions):
    print(f"function {path}:{line} {name}: {n} lines (limit {MAX_FN})")
print(f"{len(files)} files over {MAX_FILE} lines, {len(functions)} functions over {MAX_FN} lines")
sys.exit(1 if files or functions else 0)
