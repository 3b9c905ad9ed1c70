//! Fuzzes the token cache reader with forged headers: the input is (sample count, token count,
//! body); magic, version and checksum are made valid, as a forger could, so the fuzzer reaches
//! the size and offset checks. Opening and reading every sample must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sftctl_data::cache::{CACHE_VERSION, TokenCache};
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let mut f = vec![0u8; 128];
    f[..8].copy_from_slice(b"SFTCTOK1");
    f[8..12].copy_from_slice(&CACHE_VERSION.to_le_bytes());
    f[16..32].copy_from_slice(&data[..16]);
    f.extend_from_slice(&data[16..]);
    let sum = Sha256::digest(&f[128..]);
    f[64..96].copy_from_slice(&sum);
    let p = std::env::temp_dir().join(format!("sftctl-fuzz-cache-{}.tok", std::process::id()));
    std::fs::write(&p, &f).unwrap();
    if let Ok(c) = TokenCache::open(&p) {
        for i in 0..c.len() {
            let ids = c.input_ids(i);
            assert_eq!(ids.len(), c.loss_mask(i).len());
            let _ = c.source_line(i);
        }
    }
});
