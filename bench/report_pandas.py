#!/usr/bin/env python3
"""The pandas side of bench/report_bench.sh: reads the same ledger files `sftctl report` reads
(config.json, metrics.jsonl, eval/*.json of every run) into a table grouped by batch size and
learning rate: mean and std of the final MMLU accuracy and of the early mean gradient norm.

usage: report_pandas.py LEDGER_SWEEP_DIR EARLY_SAMPLES
"""

import glob
import json
import os
import sys

import pandas as pd


def main():
    sweep, early = sys.argv[1], int(sys.argv[2])
    rows = []
    for run in sorted(glob.glob(os.path.join(sweep, "runs", "*"))):
        with open(os.path.join(run, "config.json")) as f:
            train = json.load(f)["train"]
        m = pd.read_json(os.path.join(run, "metrics.jsonl"), lines=True)
        evals = []
        for p in glob.glob(os.path.join(run, "eval", "*.json")):
            with open(p) as f:
                evals.append(json.load(f))
        final = max((e for e in evals if e["name"] == "mmlu"), key=lambda e: e["step"])
        w = m[m["samples_seen"] <= early]
        rows.append({
            "batch_size": train["batch_size"],
            "lr": train["lr"],
            "acc": final["metrics"]["acc"],
            "early_grad_norm": w["grad_norm"].mean(),
            "early_loss": w["loss"].mean(),
        })
    t = pd.DataFrame(rows).groupby(["batch_size", "lr"]).agg(["mean", "std"])
    print(t.to_csv())


if __name__ == "__main__":
    main()
