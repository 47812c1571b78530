#!/usr/bin/env python3
"""Reference fixtures for crates/model from two independent implementations.

Runs Hugging Face transformers (float32, in the `hf` venv) and llama.cpp (through
llama-cpp-python, in the `llamacpp` venv) on the same SmolLM2-135M-Instruct Q4_1 gguf and
writes crates/model/tests/fixtures/reference.json plus logits_<name>.f32 (the full
next-token logits at the last prompt position from HF f32, raw little-endian f32).

Usage (any python3; it starts the two venvs made by setup_venvs.sh itself):
    scripts/model_fixtures/make_fixtures.py [--model NAME] [--gguf PATH] [--out DIR]
                                            [--skip-llamacpp]

--model smollm2 (default) or qwen2.5-coder-0.5b / qwen2.5-coder-1.5b: which store file,
which prompts, and where the fixtures go (SmolLM2's in tests/fixtures/, the others in
tests/fixtures/NAME/). For the Qwen models the logits files hold every LOGITS_STRIDE-th
vocabulary entry (ids 0, S, 2S, ...) instead of all 151,936, to keep the committed
fixtures small; top_logits still has the 20 largest. --skip-llamacpp leaves out the
llama.cpp stage (ids_llamacpp and greedy_llamacpp are then null).

Stages (each runs in its own venv and exchanges JSON through a scratch directory):
    --stage hf        tokenizer ids, chat template, prompt logits, hidden norms, greedy
    --stage llamacpp  tokenizer ids, greedy and logits diff against the HF logits
The driver (no --stage) runs both and merges. Nothing is fetched from a model hub.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STORE = Path(os.environ.get("SELENE_HOME", Path.home() / ".cache" / "selene"))
FIXTURES = REPO / "crates" / "model" / "tests" / "fixtures"
VENVS = Path(os.environ.get("SELENE_REF_VENVS", Path.home() / ".cache" / "selene-ref"))

# Per model: store file, its sha256, vocabulary, layers, output dir, logits stride.
MODELS = {
    "smollm2": dict(
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        vocab=49152, layers=30, out=FIXTURES, stride=1),
    "qwen2.5-coder-0.5b": dict(
        file="Qwen2.5-Coder-0.5B-Instruct-AWQ.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        vocab=151936, layers=24, out=FIXTURES / "qwen2.5-coder-0.5b", stride=37),
    "qwen2.5-coder-1.5b": dict(
        file="Qwen2.5-Coder-1.5B-Instruct.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        vocab=151936, layers=28, out=FIXTURES / "qwen2.5-coder-1.5b", stride=37),
}
MODEL = os.environ.get("SELENE_FIXTURE_MODEL", "smollm2")
VOCAB = MODELS[MODEL]["vocab"]
N_LAYERS = MODELS[MODEL]["layers"]
LOGITS_STRIDE = MODELS[MODEL]["stride"]
EXPECTED_SHA256 = MODELS[MODEL]["sha256"]
GREEDY_TOKENS = 24
TOP_K = 20
THREADS = 2

PATIENT_CONTINUATION = " a rare genetic disorder that affects the immune system."

TOKENIZER_CASES = [
    "",
    "12345",
    "3.14159",
    "2026-11-24",
    "Hello, world!",
    "Wait... what?!? (yes) [no] {maybe} <tag> \"quoted\" 'single' a;b:c",
    "don't won't I'm you're we'll",
    "x=1+2*3/4-5^6 % 7 | 8 & 9 ~ 10",
    "https://example.com/path?q=1&r=2#frag",
    "café crème",
    "über naïve résumé façade",
    "中文",
    "Ελληνικά",
    "Zürich: 東京 → Москва",
    "😀👍🏽",
    "👨\u200d👩\u200d👧 family",
    " leading space",
    "   three leading spaces",
    "\tTab\tseparated\t",
    "line one\nline two\n\nline four\n",
    "\r\nwindows line\r\n",
    "multiple     spaces   here",
    "trailing spaces   ",
    "<|im_start|>user\nhi<|im_end|>",
    "<|endoftext|>",
    "text<|im_end|>\n<|im_start|>assistant\n",
    "Account #12,345.67 - $1,000,000.00",
]

CHAT_CASES = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a concise medical assistant."},
        {"role": "user", "content": "What does hypertension mean?"},
    ],
    [
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "7 is a prime number."},
        {"role": "user", "content": "Name a larger one."},
    ],
]

# (name, text or chat messages). The chat prompt is rendered with the HF chat template.
PROMPTS = [
    ("patient", "The patient was diagnosed with"),
    ("finance", "Account 4417-2093 had a balance of $12,850.75 on 2026-03-31, and the"),
    ("chat", [{"role": "user", "content": "How many days are there in a leap year?"}]),
    ("nonascii", "Le médecin a expliqué à la patiente à Zürich que"),
    ("code", "def fibonacci(n):\n    "),
]

if MODEL != "smollm2":
    # Code models: code and code questions, plus one non-ASCII line.
    PROMPTS = [
        ("code", "def fibonacci(n):\n    "),
        ("chat", [{"role": "user",
                   "content": "Write a Python function that reverses a string."}]),
        ("explain", "# What does this SQL do?\n# SELECT name FROM users WHERE age > 30;\n#"),
        ("nonascii", "Le médecin a expliqué à la patiente à Zürich que"),
    ]

NOTES = [
    "ids are without BOS: the gguf says add_bos_token=false.",
    "tokenizer_cases: HF ids from AutoTokenizer.from_pretrained(dir, gguf_file=...)"
    " with add_special_tokens=False; llama.cpp ids from Llama(vocab_only=True)"
    ".tokenize(text.encode(), add_bos=False, special=True).",
    "chat_cases and the chat prompt: HF apply_chat_template(messages, tokenize=False,"
    " add_generation_prompt=True) with the template stored in the gguf; ids are the"
    " rendered text tokenized with add_special_tokens=False.",
    "logits_<name>.f32 and top_logits: HF transformers float32 (weights dequantized"
    " from the gguf), next-token logits at the last prompt position, raw little-endian"
    " f32, 49152 values.",
    "hidden_last_l2[i]: L2 norm of the residual stream at the last prompt position"
    " after decoder layer i (0..29), taken with forward hooks on the decoder layers."
    " HF output_hidden_states[30] has the final RMSNorm applied; the value for"
    " layer 29 here is the PRE-norm residual (hook on the last decoder layer).",
    "greedy_hf: argmax of full f32 forwards, 24 tokens or up to and including EOS"
    " (id eos_id). greedy_llamacpp: argmax over llama.cpp logits with its KV cache,"
    " n_ctx 512, same prompt ids, same stopping rule.",
    "llamacpp_max_abs_logit_diff: max over the vocabulary of |llama.cpp - HF f32|"
    " at the last prompt position (logits_all=True). llama.cpp quantizes activations"
    " to 8 bits (Q8_1) inside its Q4_1/Q8_0 matmuls, so diffs up to ~1 are expected"
    " and greedy texts may diverge after a near-tie; HF f32 is the reference to"
    " match to 1e-3.",
]


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def top_logits(logits, k):
    """[[id, value], ...] for the k largest logits, ties broken by the smaller id."""
    order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:k]
    return [[i, float(logits[i])] for i in order]


# --------------------------------------------------------------------------- HF stage
def stage_hf(gguf, scratch):
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import torch
    import transformers
    import gguf as gguf_pkg
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(THREADS)
    d, f = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    model.eval()
    eos = int(model.config.eos_token_id)

    def encode(text):
        return tok(text, add_special_tokens=False).input_ids

    def render(messages):
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    layers = model.model.layers
    assert len(layers) == N_LAYERS
    captured = [None] * N_LAYERS

    def hook(i):
        def fn(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            captured[i] = out.detach()
        return fn

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]

    @torch.no_grad()
    def forward(ids, hidden=False):
        x = torch.tensor([ids], dtype=torch.long)
        out = model(input_ids=x, output_hidden_states=hidden, use_cache=False)
        return out

    @torch.no_grad()
    def greedy(ids):
        seq, new = list(ids), []
        for _ in range(GREEDY_TOKENS):
            nxt = int(torch.argmax(forward(seq).logits[0, -1]).item())
            new.append(nxt)
            seq.append(nxt)
            if nxt == eos:
                break
        return new

    out = {
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "gguf": gguf_pkg.__version__ if hasattr(gguf_pkg, "__version__")
            else __import__("importlib.metadata").metadata.version("gguf"),
            "numpy": np.__version__,
        },
        "eos_id": eos,
        "tokenizer_cases": [{"text": t, "ids_hf": encode(t)} for t in TOKENIZER_CASES],
        "chat_cases": [],
        "prompts": [],
    }
    for messages in CHAT_CASES:
        text = render(messages)
        out["chat_cases"].append({"messages": messages, "add_generation_prompt": True,
                                  "text": text, "ids": encode(text)})

    for name, prompt in PROMPTS:
        text = render(prompt) if isinstance(prompt, list) else prompt
        ids = encode(text)
        res = forward(ids, hidden=True)
        logits = res.logits[0, -1].float().numpy().astype("<f4")
        assert logits.shape == (VOCAB,), logits.shape
        hs = res.hidden_states
        assert len(hs) == N_LAYERS + 1
        # Consistency of the hooks with HF's own hidden states: layers 0..28 equal,
        # and hidden_states[30] is the final norm of the hooked layer-29 output.
        for i in range(N_LAYERS - 1):
            assert torch.equal(hs[i + 1], captured[i]), f"hook mismatch at layer {i}"
        normed = model.model.norm(captured[N_LAYERS - 1])
        assert torch.allclose(normed, hs[N_LAYERS], atol=1e-5), "final-norm mismatch"
        l2 = [float(torch.linalg.vector_norm(captured[i][0, -1]).item())
              for i in range(N_LAYERS)]
        lfile = f"logits_{name}.f32"
        logits.tofile(scratch / (lfile + ".full"))
        logits[::LOGITS_STRIDE].tofile(scratch / lfile)
        g = greedy(ids)
        if name == "patient" and MODEL == "smollm2":
            cont = tok.decode(g)
            assert cont.startswith(PATIENT_CONTINUATION), f"patient continuation {cont!r}"
        out["prompts"].append({
            "name": name, "text": text, "ids": ids, "logits_file": lfile,
            "top_logits": top_logits(logits.tolist(), TOP_K),
            "hidden_last_l2": l2, "greedy_hf": g,
            "greedy_hf_text": tok.decode(g),
        })
        print(f"hf: {name}: {len(ids)} ids, greedy {tok.decode(g)!r}", file=sys.stderr)
    for h in handles:
        h.remove()
    (scratch / "hf.json").write_text(json.dumps(out, ensure_ascii=False))


# --------------------------------------------------------------------- llama.cpp stage
def stage_llamacpp(gguf, scratch):
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama

    hf = json.loads((scratch / "hf.json").read_text())
    vocab = Llama(model_path=str(gguf), vocab_only=True, verbose=False)

    def encode(text):
        return vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    llm = Llama(model_path=str(gguf), n_ctx=512, logits_all=True, n_threads=THREADS,
                n_threads_batch=THREADS, seed=0, verbose=False)
    eos = llm.token_eos()
    out = {
        "versions": {"llama_cpp_python": llama_cpp.__version__},
        "eos_id": int(eos),
        "tokenizer_ids": [encode(c["text"]) for c in hf["tokenizer_cases"]],
        "chat_ids": [encode(c["text"]) for c in hf["chat_cases"]],
        "prompts": [],
    }
    for p in hf["prompts"]:
        ids = p["ids"]
        llm.reset()
        llm.eval(ids)
        last = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        full = scratch / (p["logits_file"] + ".full")
        if full.exists():
            ref = np.fromfile(full, dtype="<f4")
            diff = float(np.max(np.abs(last - ref)))
        else:
            # --llamacpp-only: only the committed strided logits exist.
            ref = np.fromfile(scratch / p["logits_file"], dtype="<f4")
            diff = float(np.max(np.abs(last[::LOGITS_STRIDE] - ref)))
        new = []
        for _ in range(GREEDY_TOKENS):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            new.append(nxt)
            if nxt == eos:
                break
            llm.eval([nxt])
        out["prompts"].append({
            "name": p["name"], "ids_llamacpp": encode(p["text"]),
            "greedy_llamacpp": new, "llamacpp_max_abs_logit_diff": diff,
            "llamacpp_argmax": int(np.argmax(last)),
            "greedy_llamacpp_text": vocab.detokenize(new).decode("utf-8", "replace"),
        })
        print(f"llama.cpp: {p['name']}: max|diff| {diff:.4f}", file=sys.stderr)
    (scratch / "llamacpp.json").write_text(json.dumps(out, ensure_ascii=False))


# ---------------------------------------------------------------------------- driver
def run_stage(venv, stage, gguf, scratch):
    py = VENVS / venv / "bin" / "python"
    if not py.exists():
        sys.exit(f"missing {py}: run scripts/model_fixtures/setup_venvs.sh first")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error",
               SELENE_FIXTURE_MODEL=MODEL)
    subprocess.run([str(py), __file__, "--stage", stage, "--gguf", str(gguf),
                    "--scratch", str(scratch)], check=True, env=env)


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def merge(gguf, scratch, out_dir, sha):
    hf = json.loads((scratch / "hf.json").read_text())
    lc_path = scratch / "llamacpp.json"
    if lc_path.exists():
        lc = json.loads(lc_path.read_text())
    else:
        # --skip-llamacpp: no second reference; its fields are null.
        lc = {"eos_id": hf["eos_id"], "versions": {"llama_cpp_python": None},
              "tokenizer_ids": [None] * len(hf["tokenizer_cases"]),
              "chat_ids": [None] * len(hf["chat_cases"]),
              "prompts": [{"name": p["name"], "ids_llamacpp": None,
                           "greedy_llamacpp": None, "llamacpp_max_abs_logit_diff": None,
                           "greedy_llamacpp_text": None} for p in hf["prompts"]]}
    if hf["eos_id"] != lc["eos_id"]:
        sys.exit(f"eos ids differ: hf {hf['eos_id']} llama.cpp {lc['eos_id']}")
    disagreements = []
    tcases = []
    for case, ids_lc in zip(hf["tokenizer_cases"], lc["tokenizer_ids"]):
        tcases.append({"text": case["text"], "ids_hf": case["ids_hf"],
                       "ids_llamacpp": ids_lc})
        if ids_lc is not None and case["ids_hf"] != ids_lc:
            disagreements.append({"where": "tokenizer_cases", "text": case["text"]})
    for case, ids_lc in zip(hf["chat_cases"], lc["chat_ids"]):
        if ids_lc is not None and case["ids"] != ids_lc:
            case["ids_llamacpp"] = ids_lc
            disagreements.append({"where": "chat_cases", "text": case["text"]})
    prompts, greedy_summary = [], []
    for p, q in zip(hf["prompts"], lc["prompts"]):
        assert p["name"] == q["name"]
        entry = {k: p[k] for k in ("name", "text", "ids", "logits_file", "top_logits",
                                   "hidden_last_l2", "greedy_hf")}
        entry["greedy_llamacpp"] = q["greedy_llamacpp"]
        entry["llamacpp_max_abs_logit_diff"] = q["llamacpp_max_abs_logit_diff"]
        if q["ids_llamacpp"] is not None and q["ids_llamacpp"] != p["ids"]:
            entry["ids_llamacpp"] = q["ids_llamacpp"]
            disagreements.append({"where": "prompts", "text": p["text"]})
        prompts.append(entry)
        lc_greedy = q["greedy_llamacpp"] or []
        agree = common_prefix(p["greedy_hf"], lc_greedy)
        greedy_summary.append({
            "name": p["name"], "agreeing_prefix": agree,
            "of": max(len(p["greedy_hf"]), len(lc_greedy)),
            "hf_text": p["greedy_hf_text"], "llamacpp_text": q["greedy_llamacpp_text"],
        })
        shutil.copyfile(scratch / p["logits_file"], out_dir / p["logits_file"])
    ref = {
        "generated_by": "scripts/model_fixtures/make_fixtures.py --model " + MODEL,
        "model": MODEL,
        "gguf_sha256": sha,
        "logits_stride": LOGITS_STRIDE,
        "versions": {
            "torch": hf["versions"]["torch"],
            "transformers": hf["versions"]["transformers"],
            "gguf": hf["versions"]["gguf"],
            "llama_cpp_python": lc["versions"]["llama_cpp_python"],
            "numpy": hf["versions"]["numpy"],
        },
        "notes": NOTES,
        "eos_id": hf["eos_id"],
        "vocab_size": VOCAB,
        "tokenizer_disagreements": disagreements,
        "greedy_agreement": greedy_summary,
        "tokenizer_cases": tcases,
        "chat_cases": hf["chat_cases"],
        "prompts": prompts,
    }
    (out_dir / "reference.json").write_text(
        json.dumps(ref, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out_dir / 'reference.json'}", file=sys.stderr)
    print(f"tokenizer disagreements: {len(disagreements)}", file=sys.stderr)
    for g, p in zip(greedy_summary, prompts):
        diff = p["llamacpp_max_abs_logit_diff"]
        print(f"{g['name']}: greedy agree {g['agreeing_prefix']}/{g['of']}, "
              f"max|logit diff| {diff}", file=sys.stderr)


def reuse_hf(out_dir, scratch):
    """Rebuilds the hf stage's output from committed fixtures (for --llamacpp-only)."""
    ref = json.loads((out_dir / "reference.json").read_text(encoding="utf-8"))
    texts = {g["name"]: g["hf_text"] for g in ref["greedy_agreement"]}
    hf = {
        "versions": {k: ref["versions"][k] for k in ("torch", "transformers", "gguf", "numpy")},
        "eos_id": ref["eos_id"],
        "tokenizer_cases": [{"text": c["text"], "ids_hf": c["ids_hf"]}
                            for c in ref["tokenizer_cases"]],
        "chat_cases": [{k: c[k] for k in ("messages", "add_generation_prompt", "text", "ids")}
                       for c in ref["chat_cases"]],
        "prompts": [dict({k: p[k] for k in ("name", "text", "ids", "logits_file", "top_logits",
                                            "hidden_last_l2", "greedy_hf")},
                         greedy_hf_text=texts[p["name"]]) for p in ref["prompts"]],
    }
    for p in ref["prompts"]:
        shutil.copyfile(out_dir / p["logits_file"], scratch / p["logits_file"])
    (scratch / "hf.json").write_text(json.dumps(hf, ensure_ascii=False))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default=MODEL)
    ap.add_argument("--gguf", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--skip-llamacpp", action="store_true")
    ap.add_argument("--llamacpp-only", action="store_true",
                    help="add the llama.cpp stage to existing fixtures in --out "
                         "(the hf stage is not re-run; logit diffs on the stored stride)")
    ap.add_argument("--stage", choices=["hf", "llamacpp"])
    ap.add_argument("--scratch", type=Path)
    args = ap.parse_args()
    if args.model != MODEL:
        # Module constants depend on the model: re-run with it in the environment.
        env = dict(os.environ, SELENE_FIXTURE_MODEL=args.model)
        sys.exit(subprocess.run([sys.executable, __file__] + sys.argv[1:], env=env).returncode)
    spec = MODELS[MODEL]
    gguf = (args.gguf or STORE / spec["file"]).resolve()
    args.out = args.out or spec["out"]
    if args.stage == "hf":
        stage_hf(gguf, args.scratch)
        return
    if args.stage == "llamacpp":
        stage_llamacpp(gguf, args.scratch)
        return
    if not gguf.exists():
        sys.exit(f"missing {gguf} (selene fetches it into $SELENE_HOME on first use)")
    sha = sha256_of(gguf)
    if sha != EXPECTED_SHA256:
        sys.exit(f"{gguf}: sha256 {sha}, expected {EXPECTED_SHA256}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="selene-fixtures-") as tmp:
        scratch = Path(tmp)
        if args.llamacpp_only:
            reuse_hf(args.out, scratch)
        else:
            run_stage("hf", "hf", gguf, scratch)
        if not args.skip_llamacpp:
            run_stage("llamacpp", "llamacpp", gguf, scratch)
        merge(gguf, scratch, args.out, sha)


if __name__ == "__main__":
    main()
