#!/usr/bin/env python3
"""Speed of llama.cpp (llama-cpp-python) on the SmolLM2 gguf, for side-by-side runs with
`selene bench model`.

Measures, at a given thread count:
  load_s         time to construct Llama(...) (mmap + context; page cache warm or not)
  prefill_tok_s  128 prompt tokens (prompt128.txt, truncated to exactly 128 ids, no BOS)
                 evaluated in one batch, tokens / second
  decode_tok_s   64 further tokens generated greedily, one llama_decode per token (as
                 llama-bench's tg64), tokens / second; EOS does not stop the run
Each of --reps repetitions re-runs prefill and decode on a cleared KV cache after one
untimed warm-up; the reported figures are medians over the repetitions, every run is in
"runs". Writes {"engine":"llama.cpp","threads":T,"prefill_tok_s":..,"decode_tok_s":..,
"load_s":..,...} to --json FILE (or stdout).

Run it with the llamacpp venv from setup_venvs.sh (it re-executes itself there when
llama_cpp is not importable):
    scripts/model_fixtures/bench_llamacpp.py --threads 2 --reps 5 --json out.json
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_GGUF = Path(
    os.environ.get("SELENE_HOME", Path.home() / ".cache" / "selene")
) / "SmolLM2-135M-Instruct.Q4_1.gguf"
VENV_PY = Path(
    os.environ.get("SELENE_REF_VENVS", Path.home() / ".cache" / "selene-ref")
) / "llamacpp" / "bin" / "python"
PROMPT_TOKENS = 128
GEN_TOKENS = 64

try:
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama
except ImportError:
    # Compare prefixes, not resolved executables: a venv's python is a symlink to the
    # system interpreter.
    if VENV_PY.exists() and Path(sys.prefix).resolve() != VENV_PY.parent.parent.resolve():
        os.execv(str(VENV_PY), [str(VENV_PY), __file__, *sys.argv[1:]])
    sys.exit(f"llama_cpp not importable and {VENV_PY} missing: run setup_venvs.sh llamacpp")


def one_run(llm, ids):
    """Times prefill of `ids` and GEN_TOKENS greedy decode steps; returns (pp_s, tg_s)."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    t1 = time.perf_counter()
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t2 = time.perf_counter()
    for _ in range(GEN_TOKENS):
        llm.eval([nxt])
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t3 = time.perf_counter()
    return t1 - t0, t3 - t2


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--prompt", type=Path, default=HERE / "prompt128.txt")
    ap.add_argument("--json", type=Path, help="output file (default: stdout)")
    args = ap.parse_args()
    if args.threads < 1 or args.reps < 1:
        sys.exit("--threads and --reps must be >= 1")
    if not args.gguf.exists():
        sys.exit(f"missing {args.gguf}")

    t0 = time.perf_counter()
    llm = Llama(model_path=str(args.gguf), n_ctx=512, n_batch=512, n_ubatch=512,
                n_threads=args.threads, n_threads_batch=args.threads,
                logits_all=False, verbose=False)
    load_s = time.perf_counter() - t0

    ids = llm.tokenize(args.prompt.read_text(encoding="utf-8").encode("utf-8"),
                       add_bos=False, special=False)
    if len(ids) < PROMPT_TOKENS:
        sys.exit(f"{args.prompt} tokenizes to {len(ids)} < {PROMPT_TOKENS} tokens")
    ids = ids[:PROMPT_TOKENS]

    llm.reset()
    llm.eval(ids[:16])  # warm-up: first-touch of the mmapped weights, thread pool
    runs = []
    for _ in range(args.reps):
        pp_s, tg_s = one_run(llm, ids)
        runs.append({"prefill_tok_s": PROMPT_TOKENS / pp_s, "decode_tok_s": GEN_TOKENS / tg_s})
    result = {
        "engine": "llama.cpp",
        "threads": args.threads,
        "prefill_tok_s": statistics.median(r["prefill_tok_s"] for r in runs),
        "decode_tok_s": statistics.median(r["decode_tok_s"] for r in runs),
        "load_s": load_s,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "prompt_tokens": PROMPT_TOKENS,
        "gen_tokens": GEN_TOKENS,
        "reps": args.reps,
        "runs": runs,
        "llama_cpp_python": llama_cpp.__version__,
        "gguf": str(args.gguf),
    }
    text = json.dumps(result, indent=1) + "\n"
    if args.json:
        args.json.write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
