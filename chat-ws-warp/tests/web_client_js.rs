//! The web client's JavaScript unit tests (`assets/tests/`, `node --test`), run from
//! `cargo test` so that the README's one test command covers them too.
//!
//! They need Node.js 20 or later and nothing else (no npm packages, no browser). Without
//! Node the test prints that it skipped them and passes, except under `CI=true`, where a
//! missing Node is a failure: `.ci/run` must never skip them silently.

use std::path::Path;
use std::process::Command;

#[test]
fn web_client_unit_tests_pass_under_node() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let version = Command::new("node").arg("--version").output();
    let major = version
        .as_ref()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.trim()
                .trim_start_matches('v')
                .split('.')
                .next()?
                .parse::<u32>()
                .ok()
        });
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match major {
        Some(major) if major >= 20 => {}
        found => {
            let why = format!("Node.js >= 20 is needed for assets/tests (found: {found:?})");
            assert!(!in_ci, "{why}");
            eprintln!("SKIPPED: {why}; run `node --test chat-ws-warp/assets/tests/` with Node 20+");
            return;
        }
    }
    let output = Command::new("node")
        .arg("--test")
        .arg("tests/")
        .current_dir(&assets)
        .output()
        .expect("node ran once already");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The runner's summary: a run that found no test files passes vacuously.
    let passed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        passed >= 50,
        "only {passed} JavaScript tests passed:\n{stdout}"
    );
}
