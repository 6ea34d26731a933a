#!/usr/bin/env python3
"""Checks that every target of Package.swift (and Fuzz/, Examples/) depends on exactly what its sources import.

A dependency no file of the target imports makes every user build it for nothing; an import without a
dependency builds only by accident (another target pulled the module in). Modules of the toolchain
(Foundation, Glibc, Testing, Synchronization, ...) need no dependency and are ignored.
Exit status 1 with one line per mismatch.
"""
import os
import re
import sys

TOOLCHAIN = {
    "Foundation", "FoundationEssentials", "Glibc", "Musl", "Darwin", "Dispatch", "Testing", "XCTest",
    "Synchronization", "_Concurrency", "Swift", "os", "SwiftShims", "_StringProcessing", "RegexBuilder",
}
IMPORT = re.compile(
    r"^[ ]{0,4}(?:@testable\s+|@_exported\s+|@preconcurrency\s+)*(?:public\s+|package\s+|internal\s+|private\s+|"
    r"fileprivate\s+)?import\s+(?:(?:struct|class|enum|protocol|func|var|let|typealias)\s+)?([A-Za-z_][A-Za-z0-9_]*)",
    re.M)


def targets(package_swift):
    """(name, kind, path or None, [dependency module names]) for each target in a Package.swift."""
    text = open(package_swift).read()
    found = []
    for match in re.finditer(r"\.(target|executableTarget|testTarget|systemLibrary)\(\s*name:\s*\"([^\"]+)\"", text):
        kind, name = match.group(1), match.group(2)
        # The target's argument list: up to the matching parenthesis.
        depth, index = 0, match.start()
        while True:
            char = text[index]
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                if depth == 0:
                    break
            index += 1
        body = text[match.start():index + 1]
        path = re.search(r"path:\s*\"([^\"]+)\"", body)
        deps = []
        start = body.find("dependencies:")
        if start >= 0:
            rest = body[start + len("dependencies:"):]
            end = re.search(r"\b(?:path|swiftSettings|resources|exclude|linkerSettings|cSettings|plugins):", rest)
            expression = rest[:end.start()] if end else rest
            expression = re.sub(r"package:\s*\"[^\"]*\"", "", expression)
            deps = re.findall(r"\"([^\"]+)\"", expression)
        found.append((name, kind, path.group(1) if path else None, deps))
    return found


def imports(directory):
    modules = set()
    for root, _, files in os.walk(directory):
        if "/.build" in root:
            continue
        for file in files:
            if file.endswith(".swift"):
                modules.update(IMPORT.findall(open(os.path.join(root, file), encoding="utf-8").read()))
    return modules


def check(package_dir):
    problems = []
    for name, kind, path, deps in targets(os.path.join(package_dir, "Package.swift")):
        if kind == "systemLibrary":
            continue
        default = "Tests" if kind == "testTarget" else "Sources"
        directory = os.path.join(package_dir, path or os.path.join(default, name))
        if not os.path.isdir(directory):
            problems.append(f"{package_dir}: {name}: no directory {directory}")
            continue
        used = imports(directory) - TOOLCHAIN - {name.replace("-", "_")}
        declared = {dep.replace("-", "_") for dep in deps}
        for module in sorted(declared - used):
            problems.append(f"{name}: depends on {module} but never imports it")
        for module in sorted(used - declared):
            problems.append(f"{name}: imports {module} without depending on it")
    return problems


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    problems = []
    for package in [root, os.path.join(root, "Fuzz"), os.path.join(root, "Examples")]:
        if os.path.exists(os.path.join(package, "Package.swift")):
            problems += [f"{os.path.relpath(package, root) or '.'}: {p}" for p in check(package)]
    for problem in problems:
        print(problem)
    if problems:
        print(f"check-target-imports: {len(problems)} mismatch(es)")
        return 1
    print("check-target-imports: every target depends on exactly what it imports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
