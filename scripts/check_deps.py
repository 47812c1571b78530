#!/usr/bin/env python3
"""Fails when a workspace crate depends on one that ARCHITECTURE.md does not let it use.

The crate list is ordered: a crate may use only crates listed before it (arrows point
down the list), and `model` must know nothing of HE. `codec` comes first: it depends on
no workspace crate, and every crate may use it. A crate missing from the list is an
error too, so a new crate has to be placed on purpose. Some crates are held to a
narrower set: `keys` depends on `ckks` only (and the shared `codec`), so the protocol
depends on it and never the reverse; its dev-dependencies (tests, examples) still only
follow the list.
"""
import json
import subprocess
import sys

ORDER = ["codec", "ckks", "linalg", "model", "keys", "protocol", "audit", "cli"]
# `model` may use `codec` (first in ORDER), never the HE crates.
FORBIDDEN = {"model": {"ckks", "linalg"}}
# The only workspace crates these may use as normal or build dependencies.
ALLOWED_ONLY = {"keys": {"ckks", "codec"}}


def short(name: str) -> str:
    return name.removeprefix("selene-")


def main() -> int:
    meta = json.loads(
        subprocess.check_output(
            ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"]
        )
    )
    members = {p["name"]: p for p in meta["packages"]}
    problems = []
    for name, pkg in sorted(members.items()):
        me = short(name)
        if me not in ORDER:
            problems.append(f"{name}: not placed in scripts/check_deps.py ORDER")
            continue
        allowed = set(ORDER[: ORDER.index(me)]) - FORBIDDEN.get(me, set())
        for dep in pkg["dependencies"]:
            if dep["name"] not in members or dep.get("kind") == "dev" and dep["name"] == name:
                continue
            other = short(dep["name"])
            if other not in allowed:
                problems.append(f"{name} -> {dep['name']}: edge not allowed by ARCHITECTURE.md")
            elif me in ALLOWED_ONLY and dep.get("kind") != "dev" and other not in ALLOWED_ONLY[me]:
                only = ", ".join(sorted(ALLOWED_ONLY[me]))
                problems.append(
                    f"{name} -> {dep['name']}: {me} may depend only on {only} (ARCHITECTURE.md)"
                )
    for p in problems:
        print(f"check_deps: {p}", file=sys.stderr)
    if not problems:
        print(f"check_deps: {len(members)} workspace crates, all edges point down the stack")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
