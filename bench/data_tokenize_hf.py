#!/usr/bin/env python3
"""Hugging Face side of bench/data_tokenize.rs: the same JSONL files, the same tiny tokenizers.

Usage: /opt/sftctl-venv/bin/python bench/data_tokenize_hf.py DIR   (DIR from `--out DIR` of the Rust bench)
Prints samples/s for apply_chat_template(tokenize=True) one conversation at a time, with
return_assistant_tokens_mask, and for one batched call (the tokenizers backend may use threads).
"""
import json
import pathlib
import statistics
import sys
import time

import transformers
from transformers import AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIX = ROOT / "data" / "tests" / "fixtures"


def rate(fn, n, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(n / (time.perf_counter() - t))
    return statistics.median(times)


def main():
    d = pathlib.Path(sys.argv[1])
    reps = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(f"transformers {transformers.__version__}")
    print("| tokenizer | data | samples | per-sample samples/s | with assistant mask samples/s | batched samples/s |")
    print("|---|---|---|---|---|---|")
    for tok_name in ["tiny-llama3", "tiny-granite"]:
        tok = AutoTokenizer.from_pretrained(str(FIX / tok_name))
        for name in ["short", "long"]:
            convs = [json.loads(l)["messages"] for l in (d / f"{name}.jsonl").read_text().splitlines()]
            n = len(convs)
            one = rate(lambda: [tok.apply_chat_template(c, tokenize=True) for c in convs], n, reps)
            masked = rate(
                lambda: [
                    tok.apply_chat_template(c, return_dict=True, return_assistant_tokens_mask=True) for c in convs
                ],
                n,
                reps,
            )
            batched = rate(lambda: tok.apply_chat_template(convs, tokenize=True), n, reps)
            print(f"| {tok_name} | {name} | {n} | {one:.0f} | {masked:.0f} | {batched:.0f} |")


if __name__ == "__main__":
    main()
