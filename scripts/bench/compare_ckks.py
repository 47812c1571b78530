#!/usr/bin/env python3
"""Puts `selene bench ckks --json` beside ../shared/anchors/bench_ckks.py --json, with ratios.

Usage: compare_ckks.py SELENE.json ANCHORS.json > table.md

Ratios are selene / the faster of OpenFHE and SEAL (1 thread), so < 1 means Selene is
faster. The issue-4 targets are checked per row: encrypt, decrypt, mul_plain, mul_relin,
rescale and rotate at most 0.7x the faster anchor; rotate_hoisted at most OpenFHE's
hoisted rotation.
"""
import json
import sys

# selene op -> anchors op name
OPS = {
    "encode": "encode",
    "encrypt": "encrypt (pk)",
    "decrypt": "decrypt+decode",
    "add": "add ct+ct",
    "mul_plain": "mul ct*pt",
    "mul_relin": "mul ct*ct + relin",
    "rescale": "rescale",
    "rotate": "rotate 1 (key switch)",
    "rotate_hoisted": "hoisted rotate 1 (per rotation)",
    "keygen_relin": "keygen relin key",
    "keygen_rotation": "keygen 1 rotation key",
}
TARGET_07 = {"encrypt", "decrypt", "mul_plain", "mul_relin", "rescale", "rotate"}
SIZE_OPS = {
    "openfhe": "size ciphertext (fresh, BINARY)",
    "seal": "size ciphertext (fresh, SEAL save, zstd)",
}


def main() -> int:
    selene = json.load(open(sys.argv[1]))
    anchors = json.load(open(sys.argv[2]))
    ours = {(r["log_n"], r["op"]): r for r in selene["results"]}
    theirs = {}
    for r in anchors["rows"]:
        if r.get("threads", 1) != 1 or r["lib"] not in ("openfhe", "seal"):
            continue
        if r["lib"] == "openfhe" and r["N"] == 2**15 and r.get("dnum") == 3:
            continue  # the optional OpenFHE dnum=3 cell; compare like with like (dnum = L+1)
        theirs[(r["N"].bit_length() - 1, r["lib"], r["op"])] = r
    logns = sorted({k[0] for k in ours})
    print(f"Selene threads = {selene.get('threads')}; anchors 1 thread. "
          "ratio = Selene / faster anchor (< 1: Selene faster).\n")
    misses = []
    for logn in logns:
        print(f"### N = 2^{logn}\n")
        print("| op | Selene ms | OpenFHE ms | SEAL ms | ratio | target |")
        print("|---|---|---|---|---|---|")
        for op, aop in OPS.items():
            mine = ours.get((logn, op))
            if mine is None:
                continue
            o = theirs.get((logn, "openfhe", aop))
            s = theirs.get((logn, "seal", aop))
            om = o["median_ms"] if o else None
            sm = s["median_ms"] if s else None
            best = min(x for x in (om, sm) if x is not None) if (om or sm) else None
            ratio = mine["ms"] / best if best else None
            target = ""
            if op in TARGET_07 and best and logn in (13, 14):
                ok = mine["ms"] <= 0.7 * best
                target = "met (<= 0.7x)" if ok else "MISSED (> 0.7x)"
                if not ok:
                    misses.append((logn, op, ratio))
            if op == "rotate_hoisted" and om and logn in (13, 14):
                ok = mine["ms"] <= om
                target = "met (<= OpenFHE)" if ok else "MISSED (> OpenFHE)"
                if not ok:
                    misses.append((logn, op, mine["ms"] / om))
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
            print(f"| {op} | {mine['ms']:.3f} | {fmt(om)} | {fmt(sm)} | "
                  f"{'n/a' if ratio is None else f'{ratio:.2f}x'} | {target} |")
        mb = ours.get((logn, "ct_bytes"))
        if mb:
            ob = theirs.get((logn, "openfhe", SIZE_OPS["openfhe"]))
            sb = theirs.get((logn, "seal", SIZE_OPS["seal"]))
            seeded = ours.get((logn, "ct_bytes_seeded"))
            print(f"| ct_bytes | {mb['bytes']:,}"
                  + (f" (seeded {seeded['bytes']:,})" if seeded else "")
                  + f" | {ob['bytes']:,} | {sb['bytes']:,} | | |" if ob and sb else " | | | | |")
        prec = ours.get((logn, "precision_mul_relin"))
        if prec:
            po = theirs.get((logn, "openfhe", "precision ct*ct+relin+rescale"))
            ps = theirs.get((logn, "seal", "precision ct*ct+relin+rescale"))
            print(f"| precision mul_relin (bits) | {prec['bits']:.1f} | "
                  f"{po['bits'] if po else 'n/a'} | {ps['bits'] if ps else 'n/a'} | | |")
        print()
    if misses:
        print("Targets missed: " + ", ".join(f"2^{l} {op} ({r:.2f}x)" for l, op, r in misses))
    else:
        print("All issue-4 targets met at N = 2^13 and 2^14.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
