//! The ledger readers on arbitrary file contents: values or errors, never a panic. Replays the
//! seeds and findings of the `ledger_records` fuzz target and runs a property test that puts
//! random bytes (and truncations of valid records) into every file of a run directory (see
//! docs/reliability.md).

use proptest::prelude::*;
use sftctl_ledger::*;
use std::path::Path;

fn read_everything(root: &Path, data: &[u8]) {
    let l = Ledger::at(root);
    let sweep = l.sweep("s");
    let run = sweep.run("r");
    for p in [
        run.run_json(),
        run.submissions(),
        run.attempts(),
        run.metrics(),
        run.events(0),
        run.heartbeat(0),
        run.result(),
        sweep.path().join("sweep.json"),
        sweep.batch_path("b"),
        run.checkpoints().join("step-1/COMPLETE"),
        root.join("ledger.json"),
    ] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    let _ = read_run(run.path(), true);
    let _ = read_run(run.path(), false);
    let _ = sweep.read_batches();
    let _ = sweep.read_sweep();
    let _ = l.info();
    let _ = writer::latest_checkpoint(run.path());
    let _ = io::last_jsonl::<MetricRecord>(&run.metrics());
}

#[test]
fn seeds_and_findings_replay() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut n = 0;
    for d in [
        "fuzz/seeds/ledger_records",
        "ledger/tests/fuzz_regressions/ledger_records",
    ] {
        for e in std::fs::read_dir(root.join(d))
            .into_iter()
            .flatten()
            .flatten()
        {
            read_everything(dir.path(), &std::fs::read(e.path()).unwrap());
            n += 1;
        }
    }
    assert!(n >= 3, "{n} files");
}

#[test]
fn a_damaged_document_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("r");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("run.json"),
        b"{\"format_version\": 1, \"run_id\": tor",
    )
    .unwrap();
    std::fs::write(run.join("result.json"), b"\x00\x01").unwrap();
    std::fs::write(run.join("metrics.jsonl"), b"{\"step\": 1, \"lo").unwrap();
    let s = read_run(&run, true).unwrap();
    assert!(s.record.is_none() && s.result.is_none() && s.last_metric.is_none());
    assert_eq!(s.unreadable.len(), 2, "{:?}", s.unreadable);
    assert!(s.unreadable[0].contains("run.json"), "{:?}", s.unreadable);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_bytes_in_every_file(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let dir = tempfile::tempdir().unwrap();
        read_everything(dir.path(), &data);
    }

    #[test]
    fn truncated_records_in_every_file(cut in 0usize..400) {
        let rec = br#"{"step":1,"epoch":0.5,"samples_seen":8,"tokens":10,"loss_tokens":4,"loss":2.0,"grad_norm":1.0,"lr":1e-5,"step_time_s":0.1,"tokens_per_s":100.0,"mem_bytes":null,"at":"2026-01-01T00:00:00Z"}
{"at":"2026-01-01T00:00:00Z","rank":0,"kind":"error","message":"x"}
{"format_version":99,"created_at":"2026-01-01T00:00:00Z","created_by":"x"}
"#;
        let dir = tempfile::tempdir().unwrap();
        read_everything(dir.path(), &rec[..cut.min(rec.len())]);
    }
}
