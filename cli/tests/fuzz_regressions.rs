//! Bad sweep specs must give a plan or a `SpecError`, never a panic, a hang or a huge
//! allocation: the seeds and findings of the `spec` fuzz target (`fuzz/seeds/spec/`,
//! `cli/tests/fuzz_regressions/`) replayed, forged grids, and property tests over spec-shaped
//! text (see docs/reliability.md).

use proptest::prelude::*;
use sftctl::plan::build;
use sftctl::spec::Spec;
use std::path::Path;
use std::time::Instant;

/// Parses and plans `text`; any outcome but a panic is fine. Returns whether it planned.
fn plan(text: &str) -> bool {
    match Spec::parse(Path::new("/fuzz/sweep.toml"), text.to_owned()) {
        Ok(spec) if spec.template.is_none() => build(spec, Some("/fuzz/bin/train")).is_ok(),
        _ => false,
    }
}

#[test]
fn seeds_and_findings_replay() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut n = 0;
    for dir in ["fuzz/seeds/spec", "cli/tests/fuzz_regressions/spec"] {
        for e in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).into_owned();
            plan(&text);
            n += 1;
        }
    }
    assert!(n >= 4, "{n} files");
}

#[test]
fn a_forged_huge_grid_is_refused_at_once() {
    let axis = |k: &str| {
        let v: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
        format!("{k} = [{}]\n", v.join(", "))
    };
    let mut text = "[sweep]\nname = \"big\"\n[model]\npath = \"m\"\n[grid]\n".to_owned();
    for k in [
        "seed",
        "warmup_steps",
        "max_steps",
        "checkpoint_every",
        "eval_every",
    ] {
        text.push_str(&axis(k));
    }
    let start = Instant::now();
    let e = Spec::parse(Path::new("big.toml"), text)
        .map(|s| build(s, None).map(|_| ()))
        .unwrap()
        .unwrap_err();
    assert!(e.to_string().contains("100000 points"), "{e}");
    assert!(start.elapsed().as_secs() < 5);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_parses_or_errs(text in "\\PC{0,300}") {
        plan(&text);
    }

    #[test]
    fn spec_shaped_text_parses_or_errs(
        name in "[a-z.\\-]{0,6}",
        key in prop::sample::select(vec!["lr", "seed", "batch_size", "warmup_steps", "schedule", "epochs", "nope"]),
        vals in prop::collection::vec(prop_oneof![
            any::<i64>().prop_map(|i| i.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            "\"[a-z]{0,5}\"",
        ], 0..4),
        slurm in "[a-z_]{1,10} = (\"[ -~]{0,8}\"|-?[0-9]{1,3})",
    ) {
        let text = format!(
            "[sweep]\nname = \"{name}\"\n[model]\npath = \"m\"\n[grid]\n{key} = [{}]\n[slurm]\n{slurm}\n",
            vals.join(", ")
        );
        plan(&text);
    }
}
