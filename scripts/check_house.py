#!/usr/bin/env python3
"""The house's two structural rules, checked from the source text (scripts/test.sh runs this):

1. No file import circle inside a crate: a file reaches other files of its crate through
   `crate::a::b`, `super::x` and `self::x` paths (in `use` lines and inline); those edges must
   form no loop. The crate root (lib.rs/main.rs) is left out: it declares the modules and hands
   names on, so every file may lean on it; a name it re-exports (`crate::CLUSTER_FILE`) counts
   as an import of the file that defines it. Unit-test modules (`#[cfg(test)] mod tests`)
   are cut off, as is a `tests.rs` file: a test may reach anywhere.
2. ARCHITECTURE.md's code map names every top-level module of every crate (`name.rs` or
   `name/`) in that crate's entry, and every `*.rs` or `dir/` it names there exists.

Exits 1 with one line per problem, 0 with a summary line. Python 3 standard library only.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CRATES = ROOT / "crates"


def module_files(src: Path) -> dict:
    """Module path (tuple of names; () = the crate root) -> file."""
    modules = {}
    for path in src.rglob("*.rs"):
        rel = path.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts in (["lib"], ["main"]):
            parts = []
        elif parts[-1] == "mod":
            parts = parts[:-1]
        elif len(parts) >= 2 and parts[0] == "bin":
            continue  # src/bin/*.rs are crates of their own
        modules[tuple(parts)] = path
    return modules


def code_of(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    # Unit tests live at the bottom of a file; they may reach anywhere.
    cut = re.search(r"^\s*#\[cfg\(test\)\]\s*\n\s*(pub(\(crate\))?\s+)?mod\s+\w+\s*\{", text, re.M)
    if cut:
        text = text[: cut.start()]
    text = re.sub(r"//[^\n]*", "", text)  # comments and doc comments
    text = re.sub(r'"(\\.|[^"\\])*"', '""', text)  # strings
    return text


def expand_use_tree(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> ['a::b', 'a::c::d', 'a::c::e']."""
    tree = re.sub(r"\s*([{},]|::)\s*", r"\1", tree.strip())
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                prefix, inner, rest = tree[:start], tree[start + 1 : i], tree[i + 1 :]
                items, depth2, cur = [], 0, ""
                for c in inner:
                    if c == "," and depth2 == 0:
                        items.append(cur)
                        cur = ""
                        continue
                    depth2 += c == "{"
                    depth2 -= c == "}"
                    cur += c
                items.append(cur)
                out = []
                for item in filter(None, items):
                    out.extend(expand_use_tree(prefix + item + rest))
                return out
    return [tree]


def referenced_paths(code: str) -> list:
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", code):
        paths.extend(expand_use_tree(m.group(1)))
    # Inline paths such as `crate::metrics::record(...)` or `super::Shared`.
    paths.extend(m.group(0) for m in re.finditer(r"\b(?:crate|super|self)(?:::\w+)+", code))
    return paths


def resolve(path: str, here: tuple, modules: dict, root_exports: dict = None):
    """The module file a path refers to, as a module tuple, or None if outside the crate. A name
    the crate root re-exports (`pub use cluster::CLUSTER_FILE;`) leads to the file defining it."""
    path = re.sub(r"\s*\bas\s+\w+$", "", path)
    parts = path.split("::")
    if parts[0] == "crate":
        base, rest = (), parts[1:]
    elif parts[0] in ("super", "self"):
        base = here
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
        rest = parts
    else:
        return None
    target = base
    for name in rest:
        if target + (name,) in modules:
            target = target + (name,)
        else:
            if target == () and root_exports and name in root_exports:
                target = root_exports[name]
            break
    return target


def root_exports_of(modules: dict) -> dict:
    """Name -> the module file it comes from, for every `use` in the crate root."""
    root = modules.get(())
    if root is None:
        return {}
    exports = {}
    for m in re.finditer(r"\buse\s+([^;]+);", code_of(root)):
        for path in expand_use_tree(m.group(1)):
            alias = re.search(r"\bas\s+(\w+)$", path)
            path = re.sub(r"\s*\bas\s+\w+$", "", path)
            name = alias.group(1) if alias else path.split("::")[-1]
            if not path.startswith(("crate::", "self::", "super::")):
                path = "crate::" + path
            target = resolve(path, (), modules)
            if target not in (None, ()):
                exports[name] = target
    return exports


def circles_of(crate: Path) -> list:
    src = crate / "src"
    modules = module_files(src)
    exports = root_exports_of(modules)
    edges = {}
    for module, path in modules.items():
        if module == () or path.name == "tests.rs":
            continue
        targets = set()
        for p in referenced_paths(code_of(path)):
            target = resolve(p, module, modules, exports)
            if target is None or target == () or target == module:
                continue
            if modules[target].name == "tests.rs":
                continue
            targets.add(target)
        edges[module] = targets
    # Strongly connected components (Tarjan) with more than one file are circles.
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(str(modules[m].relative_to(ROOT)) for m in component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def code_map_sections(text: str) -> dict:
    """crate name -> the text of its entry in the code map (`- `crates/<name>`` bullets)."""
    start = text.index("## Code map")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    sections, current = {}, None
    for line in body.splitlines():
        m = re.match(r"^- `crates/([\w-]+)`", line)
        if m:
            current = m.group(1)
            sections[current] = line + "\n"
        elif re.match(r"^- ", line) or not line.strip():
            current = None
        elif current:
            sections[current] += line + "\n"
    return sections


def code_map_problems() -> list:
    problems = []
    sections = code_map_sections((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    for crate in sorted(p for p in CRATES.iterdir() if (p / "Cargo.toml").exists()):
        entry = sections.get(crate.name)
        if entry is None:
            problems.append(f"ARCHITECTURE.md: the code map has no entry `crates/{crate.name}`")
            continue
        named = set(re.findall(r"`([\w./-]+)`", entry))
        for top in sorted((crate / "src").iterdir()):
            if top.name in ("lib.rs", "main.rs", "tests.rs"):
                continue
            shown = top.name + ("/" if top.is_dir() else "")
            if shown not in named:
                problems.append(f"ARCHITECTURE.md: crates/{crate.name}: module `{shown}` is not in the code map")
        for name in named:
            if not (name.endswith(".rs") or name.endswith("/")) or name.startswith("crates/"):
                continue
            # A name in a folder's description may be relative to that folder.
            here = any((base / name).exists() for base in (crate / "src", crate, ROOT))
            if not here and not any(p.name == name.rstrip("/") for p in crate.rglob("*")):
                problems.append(f"ARCHITECTURE.md: crates/{crate.name}: `{name}` is named but does not exist")
    return problems


def main() -> int:
    problems = []
    crates = sorted(p for p in CRATES.iterdir() if (p / "src").is_dir())
    for crate in crates:
        for circle in circles_of(crate):
            problems.append(f"import circle in crates/{crate.name}: " + " <-> ".join(circle))
    problems.extend(code_map_problems())
    for problem in problems:
        print(problem)
    if problems:
        return 1
    print(f"house: no import circle in {len(crates)} crates; the code map names every top-level module")
    return 0


if __name__ == "__main__":
    sys.exit(main())
