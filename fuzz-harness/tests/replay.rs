//! Replays every committed fuzz input — the seed corpora in `fuzz/corpus/<target>/` and the
//! crash regressions in `fuzz/regressions/<target>/` — through the same harness the fuzzers
//! run, on stable Rust, so CI checks them without nightly or cargo-fuzz.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a corpus directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let (_, run) = fuzz_harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let corpus = inputs(&fuzz.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "no seed corpus in fuzz/corpus/{target}: the replay would prove nothing"
    );
    let regressions = inputs(&fuzz.join("regressions").join(target));
    let mut failed = Vec::new();
    for file in corpus.iter().chain(&regressions) {
        let data = match fs::read(file) {
            Ok(data) => data,
            // A running fuzzer replaces inputs of its corpus with smaller ones.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("read {}: {e}", file.display()),
        };
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} inputs of `{target}` broke an invariant (panic messages above): {failed:#?}",
        failed.len(),
        corpus.len() + regressions.len()
    );
    println!(
        "{target}: {} corpus and {} regression inputs replayed",
        corpus.len(),
        regressions.len()
    );
}

#[test]
fn wire_parse_corpus_replays() {
    replay("wire_parse");
}

#[test]
fn connection_corpus_replays() {
    replay("connection");
}

#[test]
fn token_corpus_replays() {
    replay("token");
}
