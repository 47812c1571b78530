#!/usr/bin/env python3
"""Time to first token and decode speed through `selene openai` versus `selene run`.

Both run the same chat prompt greedily with the same policy, alternating, in this order:
endpoint, run, endpoint, run, ... The endpoint's time to first token is measured by the
`openai` client from sending the request to the first streamed text, so it includes the
HTTP layer, the chat template, tokenization, the fresh key and the prefill; `selene run`
reports its own prefill (fresh key and prefill, after the model is prepared). Decode is
seconds per token after the first. Prints a markdown table.

Needs the `openai` package (the venv the endpoint test makes:
~/.cache/selene-ref/openai/bin/python). See scripts/bench/openai.sh.
"""
import argparse
import re
import statistics
import subprocess
import sys
import time

from openai import OpenAI


def start_endpoint(selene, k, threads):
    cmd = [selene, "openai", "--listen", "127.0.0.1:0", "--encrypted-layers", str(k)]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"(http://\S+/v1)", line)
        if m:
            return proc, m.group(1)
    sys.exit("selene openai exited before listening")


def via_endpoint(client, prompt, max_tokens):
    t0 = time.perf_counter()
    first = last = None
    usage = None
    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True})
    text = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            now = time.perf_counter()
            first = first or now
            last = now
            text.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    n = usage.completion_tokens
    return first - t0, (last - first) / max(n - 1, 1), n, "".join(text)


def via_run(selene, prompt, max_tokens, k, threads):
    cmd = [selene, "run", "--chat", prompt, "--max-tokens", str(max_tokens),
           "--encrypted-layers", str(k)]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    m = re.search(r"prefill ([\d.]+) s; (\d+) generated, ([\d.]+) s/token decode", out.stderr)
    if not m:
        sys.exit(f"unexpected selene run output:\n{out.stderr}")
    return float(m.group(1)), float(m.group(3)), int(m.group(2)), out.stdout.rstrip("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--selene", default="target/release/selene")
    ap.add_argument("--prompt", default="Hi")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--k", type=int, default=4, help="encrypted layers (30: strict)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()

    proc, base = start_endpoint(a.selene, a.k, a.threads)
    try:
        client = OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=900)
        rows = {"endpoint": [], "run": []}
        for _ in range(a.repeats):
            rows["endpoint"].append(via_endpoint(client, a.prompt, a.max_tokens))
            rows["run"].append(via_run(a.selene, a.prompt, a.max_tokens, a.k, a.threads))
    finally:
        proc.terminate()
        proc.wait()
    texts = {r[3] for v in rows.values() for r in v}
    mode = "strict" if a.k >= 30 else f"selective K = {a.k}"
    print(f"prompt {a.prompt!r} (chat template), {a.max_tokens} tokens, {mode}, "
          f"{a.repeats} run(s) each, medians; same text in all runs: {len(texts) == 1}")
    print()
    print("| path | time to first token (s) | decode (s/token) | tokens/s |")
    print("|---|---|---|---|")
    med = {}
    for name, v in rows.items():
        ttft = statistics.median(r[0] for r in v)
        dec = statistics.median(r[1] for r in v)
        med[name] = (ttft, dec)
        print(f"| {name} | {ttft:.2f} | {dec:.3f} | {1 / dec:.2f} |")
    e, r = med["endpoint"], med["run"]
    print(f"| endpoint / run | {e[0] / r[0]:.3f} | {e[1] / r[1]:.3f} | |")


if __name__ == "__main__":
    main()
