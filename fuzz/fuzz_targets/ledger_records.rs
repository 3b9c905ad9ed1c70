//! Fuzzes the ledger readers: the input becomes every file of a run directory (documents and
//! JSON-lines logs alike) and of a sweep's batches; `read_run`, the tail reader and the batch
//! reader must return values or errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftctl_ledger::io::{last_jsonl, read_json, read_jsonl};
use sftctl_ledger::*;
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let root = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("sftctl-fuzz-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    });
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
    let _ = last_jsonl::<MetricRecord>(&run.metrics());
    let _ = read_jsonl::<Event>(&run.events(0));
    let _ = read_json::<CheckpointMarker>(&run.checkpoints().join("step-1/COMPLETE"));
    let _ = read_json::<LocalJob>(&run.result());
});
