//! Fuzzes the sweep-spec parser and the plan built from it (grid expansion, identities, the
//! default template): any text must give a plan or a `SpecError`, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A custom template would be read from disk: keep the target hermetic.
    if text.contains("template") {
        return;
    }
    if let Ok(spec) = sftctl::spec::Spec::parse(Path::new("/fuzz/sweep.toml"), text.to_owned()) {
        let _ = sftctl::plan::build(spec, Some("/fuzz/bin/sftctl-train"));
    }
});
