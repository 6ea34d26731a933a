#!/usr/bin/env python3
"""`make examples`: the documentation's copies of the example code stay the example code.

A ```swift block in README.md or a DocC article (Sources/*/*.docc/*.md) whose introducing line (the last
non-blank line before the fence) names a file `Examples/....swift` in backticks must appear verbatim in that
file. Fails, printing the block and the file, when one does not (or when the file is gone).
"""
import glob
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
NAMED = re.compile(r"`(Examples/[A-Za-z0-9_/.-]+\.swift)`")


def blocks(path):
    """Yields (line number, named example file, code) for every swift block introduced by a file name."""
    lines = open(path, encoding="utf-8").read().split("\n")
    previous, i = "", 0
    while i < len(lines):
        if lines[i].strip() == "```swift":
            start, j = i + 1, i + 1
            while j < len(lines) and lines[j].strip() != "```":
                j += 1
            named = NAMED.findall(previous)
            if named:
                yield start, named[-1], "\n".join(lines[start:j]) + "\n"
            i, previous = j + 1, ""
            continue
        if lines[i].strip():
            previous = lines[i]
        i += 1


def main():
    documents = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "Sources/*/*.docc/*.md")))
    checked, failures = 0, []
    for document in documents:
        for line, name, code in blocks(document):
            checked += 1
            example = os.path.join(ROOT, name)
            text = open(example, encoding="utf-8").read() if os.path.exists(example) else None
            if text is None or code not in text:
                failures.append(f"{os.path.relpath(document, ROOT)}:{line}: not verbatim in {name}")
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"check-doc-examples: {checked} snippets checked against Examples/, {len(failures)} differ")
    return 1 if failures or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
