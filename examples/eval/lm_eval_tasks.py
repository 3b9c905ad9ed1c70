#!/usr/bin/env python3
"""Writes examples/eval/mmlu-tiny as local lm-evaluation-harness tasks, one per subject, in the
MMLU layout (task YAML after lm_eval/tasks/mmlu/default/_default_template_yaml; the dev split
gives the 5 few-shot examples, as real MMLU has per-subject dev sets).

Usage: python3 lm_eval_tasks.py DATA_DIR OUT_DIR   -> OUT_DIR/tiny_<subject>.yaml (+ data);
prints the comma-separated task names. Used by lm-eval.sh and runtime/tests/fixtures/lm_eval_fixture.py.
"""

import json
import os
import sys

YAML = """task: {task}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    dev: {dev}
    test: {test}
test_split: test
fewshot_split: dev
fewshot_config:
  sampler: first_n
num_fewshot: 5
output_type: multiple_choice
description: "The following are multiple choice questions (with answers) about {{{{subject.replace('_', ' ')}}}}.\\n\\n"
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def read(data, name):
    with open(os.path.join(data, name)) as f:
        return [json.loads(l) for l in f if l.strip()]


def write_tasks(data, out):
    """Writes the tasks into `out`; returns (subjects in order, task names)."""
    dev, test = read(data, "dev.jsonl"), read(data, "test.jsonl")
    subjects = sorted({q["subject"] for q in test})
    for s in subjects:
        for split, rows in [("dev", dev), ("test", test)]:
            with open(os.path.join(out, f"{s}_{split}.jsonl"), "w") as f:
                for q in rows:
                    if q["subject"] == s:
                        f.write(json.dumps(q) + "\n")
        with open(os.path.join(out, f"tiny_{s}.yaml"), "w") as f:
            f.write(YAML.format(task=f"tiny_{s}", dev=os.path.join(out, f"{s}_dev.jsonl"),
                                test=os.path.join(out, f"{s}_test.jsonl")))
    return subjects, [f"tiny_{s}" for s in subjects]


if __name__ == "__main__":
    _, names = write_tasks(os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]))
    print(",".join(names))
