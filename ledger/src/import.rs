//! Scores computed elsewhere, turned into evaluation results: an lm-evaluation-harness results
//! JSON (`{"results": {task: {"acc,none": …}}, "group_subtasks": …}`) or any JSON object of named
//! numbers (nested objects flatten to `a/b`). Pure: `sftctl import` and the runtime's evaluation
//! jobs write them through the ledger.

use std::collections::BTreeMap;

/// Scores of one evaluation name.
pub type Scores = BTreeMap<String, BTreeMap<String, f64>>;

/// What a file held.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// `lm-eval` or `scores`.
    pub kind: &'static str,
    /// Evaluation name -> metric -> value.
    pub scores: Scores,
}

/// Numeric fields of an lm-eval task result that are not scores.
const LM_EVAL_NOT_METRICS: &[&str] = &["sample_len", "sample_count"];

/// Reads `text` (from `path`, for messages). lm-eval output is recognised by its `results`
/// object; each task becomes an evaluation named after the task, metrics keep their name with a
/// `,none` filter dropped (another filter stays as `metric/filter`), standard errors are kept as
/// `<metric>_stderr`. Subtasks of a group are left out unless `all_tasks`. Any other object
/// becomes one evaluation called `name`.
pub fn parse(text: &str, path: &str, name: &str, all_tasks: bool) -> Result<Imported, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("`{path}` is not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| format!("`{path}`: expected a JSON object of scores"))?;
    if let Some(results) = obj.get("results").and_then(|r| r.as_object()) {
        let mut sub = std::collections::BTreeSet::new();
        if let Some(g) = obj.get("group_subtasks").and_then(|g| g.as_object()) {
            for list in g.values().filter_map(|l| l.as_array()) {
                sub.extend(list.iter().filter_map(|s| s.as_str().map(String::from)));
            }
        }
        let mut scores = Scores::new();
        for (task, m) in results {
            if !all_tasks && sub.contains(task) {
                continue;
            }
            let Some(m) = m.as_object() else { continue };
            let mut metrics = BTreeMap::new();
            for (k, val) in m {
                let Some(x) = val.as_f64() else { continue };
                // lm-eval's bookkeeping next to the metrics (the task's document count).
                if LM_EVAL_NOT_METRICS.contains(&k.as_str()) {
                    continue;
                }
                let (metric, filter) = k.split_once(',').unwrap_or((k.as_str(), "none"));
                let key = if filter == "none" {
                    metric.to_owned()
                } else {
                    format!("{metric}/{filter}")
                };
                metrics.insert(key, x);
            }
            if !metrics.is_empty() {
                scores.insert(task.clone(), metrics);
            }
        }
        if scores.is_empty() {
            return Err(format!("`{path}`: `results` holds no numeric scores"));
        }
        return Ok(Imported {
            kind: "lm-eval",
            scores,
        });
    }
    let mut metrics = BTreeMap::new();
    flatten("", &v, &mut metrics);
    if metrics.is_empty() {
        return Err(format!("`{path}`: no numeric scores in it"));
    }
    Ok(Imported {
        kind: "scores",
        scores: Scores::from([(name.to_owned(), metrics)]),
    })
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, f64>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_owned(), x);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}/{k}")
                };
                flatten(&p, x, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lm_eval_results_keep_groups_and_drop_subtasks() {
        let text = r#"{"results": {
            "mmlu": {"acc,none": 0.61, "acc_stderr,none": 0.004, "alias": "mmlu", "sample_len": 14042},
            "mmlu_anatomy": {"acc,none": 0.5, "alias": " - anatomy"},
            "gsm8k": {"exact_match,strict-match": 0.3, "exact_match,flexible-extract": 0.35}},
          "group_subtasks": {"mmlu": ["mmlu_anatomy"], "gsm8k": []},
          "config": {"model": "hf"}}"#;
        let i = parse(text, "r.json", "x", false).unwrap();
        assert_eq!(i.kind, "lm-eval");
        assert_eq!(i.scores.keys().collect::<Vec<_>>(), ["gsm8k", "mmlu"]);
        assert_eq!(i.scores["mmlu"]["acc"], 0.61);
        assert_eq!(i.scores["mmlu"]["acc_stderr"], 0.004);
        assert_eq!(i.scores["mmlu"].len(), 2, "sample_len is no score");
        assert_eq!(i.scores["gsm8k"]["exact_match/strict-match"], 0.3);
        let all = parse(text, "r.json", "x", true).unwrap();
        assert_eq!(all.scores["mmlu_anatomy"]["acc"], 0.5);
    }

    #[test]
    fn named_scores_flatten_and_bad_files_are_named() {
        let i = parse(
            r#"{"score": 7.2, "turn": {"1": 7.5, "2": 6.9}, "judge": "gpt"}"#,
            "m.json",
            "mt_bench",
            false,
        )
        .unwrap();
        assert_eq!(i.kind, "scores");
        assert_eq!(i.scores["mt_bench"]["turn/2"], 6.9);
        assert_eq!(i.scores["mt_bench"].len(), 3);
        let e = parse("[1]", "m.json", "x", false).unwrap_err();
        assert!(e.contains("`m.json`"), "{e}");
        let e = parse(r#"{"a": "b"}"#, "m.json", "x", false).unwrap_err();
        assert!(e.contains("no numeric"), "{e}");
    }
}
