#!/usr/bin/env python3
"""Fails when files inside `protocol`, `cli` or `keys` import each other in a circle.

ARCHITECTURE.md asks that no file cycle exist inside a crate: a client file never imports a server file or the reverse, and a lower module never
reaches back up. This reads every `crate::` and `super::` path in each crate's `src/`
(use lines and inline paths alike), maps it to the file that defines the module, and
looks for strongly connected components of more than one file. A file's own test module
(`#[cfg(test)]` with `#[path]`) is part of that file; `mod.rs` re-exports (`pub use`)
do not count as dependencies, since a parent that lists its children is not using them.
Also enforces the role rule of `protocol`: nothing under `client/` names `server/`, and
nothing under `server/` names `client/`.
"""
import pathlib
import re
import sys

# Crates whose file cycles fail the check; the others' are printed as notes (an error
# enum naming the domain types it reports, a pair of sibling modules sharing a table).
ENFORCED = {"protocol", "cli", "keys"}
_ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
ROOT = pathlib.Path(_ARGS[0] if _ARGS else pathlib.Path(__file__).resolve().parent.parent)
PATH_RE = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP_RE = re.compile(r"\b(crate|super)::\{([^;]*?)\}", re.S)


def module_of(crate_src: pathlib.Path, f: pathlib.Path) -> tuple:
    rel = f.relative_to(crate_src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def test_files(crate_src: pathlib.Path) -> dict:
    """Files included with #[path] as a test module, mapped to the file including them."""
    owner = {}
    for f in crate_src.rglob("*.rs"):
        for m in re.finditer(r'#\[path\s*=\s*"([^"]+)"\]', f.read_text()):
            owner[(f.parent / m.group(1)).resolve()] = f.resolve()
    return owner


def resolve(mods: dict, base: tuple, segs: list):
    """The longest module prefix of base + segs that is a file of the crate."""
    full = list(base) + segs
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in mods:
            return mods[tuple(full[:n])]
    return None


def crate_graph(crate_src: pathlib.Path) -> dict:
    files = sorted(crate_src.rglob("*.rs"))
    owners = test_files(crate_src)
    mods = {}
    for f in files:
        if f.resolve() in owners:
            continue
        mods[module_of(crate_src, f)] = f
    graph = {f: set() for f in mods.values()}
    for f in files:
        src = owners.get(f.resolve(), f.resolve())
        me = next((m for m, p in mods.items() if p.resolve() == src), None)
        if me is None:
            continue
        is_dir_mod = pathlib.Path(src).stem in ("mod", "lib", "main")
        text = strip_comments(f.read_text())
        # A parent module's `pub use` of its own children is structure, not use.
        if is_dir_mod:
            text = re.sub(r"pub(\([a-z]+\))?\s+use\s+[^;]*;", "", text)
        paths = []
        for m in GROUP_RE.finditer(text):
            for item in re.split(r",", m.group(2)):
                item = item.strip().split(" as ")[0].strip()
                if item and item not in ("self", "*"):
                    paths.append((m.group(1), item.split("::")))
        for m in PATH_RE.finditer(text):
            paths.append((m.group(1), m.group(2).strip(":").split("::")))
        for kind, segs in paths:
            segs = [s for s in segs if s and s != "{"]
            if kind == "crate":
                base = ()
            else:
                base = me[:-1]
                while segs and segs[0] == "super":
                    base, segs = base[:-1], segs[1:]
            target = resolve(mods, base, segs)
            if target is not None and target.resolve() != src:
                # Naming an ancestor module file (lib.rs, a mod.rs) for its re-exports is
                # not a dependency on its children.
                graph[mods[me]].add(target)
    return graph


def sccs(graph: dict) -> list:
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def role_violations(crate_src: pathlib.Path, graph: dict) -> list:
    bad = []
    for f, deps in graph.items():
        rel = f.relative_to(crate_src).parts
        for d in deps:
            drel = d.relative_to(crate_src).parts
            for a, b in (("client", "server"), ("server", "client")):
                if rel[0] == a and drel[0] == b:
                    bad.append(f"{f} imports {d}")
    return bad


def self_test() -> None:
    """The checker finds a planted cycle and a role violation, and passes a clean tree."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        src = pathlib.Path(d) / "src"
        (src / "client").mkdir(parents=True)
        (src / "server").mkdir()
        (src / "lib.rs").write_text("pub mod a;\npub mod b;\npub mod client;\npub mod server;\n")
        (src / "a.rs").write_text("use crate::b::B;\npub struct A;\n")
        (src / "b.rs").write_text("pub struct B;\n")
        (src / "client" / "mod.rs").write_text("mod x;\npub use x::X;\n")
        (src / "client" / "x.rs").write_text("use super::super::a::A;\npub struct X;\n")
        (src / "server" / "mod.rs").write_text("mod y;\n")
        (src / "server" / "y.rs").write_text("// crate::client::X in a comment is no use\n")
        clean = crate_graph(src)
        assert not sccs(clean), sccs(clean)
        assert not role_violations(src, clean)
        assert src / "a.rs" in clean[src / "client" / "x.rs"], clean
        (src / "b.rs").write_text("use crate::a::A;\npub struct B;\n")
        (src / "server" / "y.rs").write_text("fn f() { let _ = crate::client::X; }\n")
        bad = crate_graph(src)
        assert [sorted(p.name for p in c) for c in sccs(bad)] == [["a.rs", "b.rs"]], sccs(bad)
        assert len(role_violations(src, bad)) == 1, role_violations(src, bad)


def main() -> int:
    if "--self-test" in sys.argv:
        self_test()
        print("check_modules: self-test passed")
        return 0
    problems, notes = [], []
    total = 0
    for crate in sorted((ROOT / "crates").iterdir()):
        src = crate / "src"
        if not src.is_dir():
            continue
        graph = crate_graph(src)
        total += len(graph)
        for comp in sccs(graph):
            names = ", ".join(sorted(str(p.relative_to(ROOT)) for p in comp))
            line = f"{crate.name}: import cycle between files: {names}"
            if crate.name in ENFORCED:
                problems.append(line)
            else:
                notes.append(line)
        if crate.name == "protocol":
            problems += [f"protocol: {v}" for v in role_violations(src, graph)]
    for n in notes:
        print(f"check_modules: note: {n}")
    for p in problems:
        print(f"check_modules: {p}", file=sys.stderr)
    if not problems:
        enforced = ", ".join(sorted(ENFORCED))
        print(f"check_modules: {total} files; no import cycle between files in {enforced}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
