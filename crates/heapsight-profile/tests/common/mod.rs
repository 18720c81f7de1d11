//! Helpers shared by the integration tests: reading sites out of profiles, and the real
//! `go tool pprof`.
#![allow(dead_code)]

use heapsight_profile::Profile;
use std::path::Path;
use std::process::Command;

/// Sums `[alloc_objects, alloc_space, inuse_objects, inuse_space]` over the samples whose stack
/// passes through a function whose name ends with `function`.
pub fn site(profile: &Profile, function: &str) -> [i64; 4] {
    let mut out = [0i64; 4];
    for s in &profile.samples {
        if profile.stack_names(s).iter().any(|n| n.ends_with(function)) {
            for (o, v) in out.iter_mut().zip(&s.values) {
                *o += v;
            }
        }
    }
    out
}

/// The function names (leaf first) of the first sample whose stack passes through a function
/// whose name ends with `function`.
pub fn stack_through<'p>(profile: &'p Profile, function: &str) -> Option<Vec<&'p str>> {
    profile
        .samples
        .iter()
        .map(|s| profile.stack_names(s))
        .find(|names| names.iter().any(|n| n.ends_with(function)))
}

/// Asserts `estimate` is within `tolerance` (a fraction) of `truth`.
pub fn assert_close(what: &str, estimate: i64, truth: i64, tolerance: f64) {
    let err = (estimate as f64 - truth as f64).abs() / truth as f64;
    assert!(
        err <= tolerance,
        "{what}: estimate {estimate} vs truth {truth}: off by {:.1}% (allowed {:.0}%)",
        err * 100.0,
        tolerance * 100.0
    );
    eprintln!(
        "{what}: estimate {estimate} vs truth {truth} ({:+.1}%)",
        (estimate as f64 / truth as f64 - 1.0) * 100.0
    );
}

/// Runs the real `go tool pprof` with `args`. Fails the test with a pointer to the install step
/// if Go is missing.
pub fn run_go_pprof(args: &[&str]) -> std::process::Output {
    Command::new("go")
        .arg("tool")
        .arg("pprof")
        .args(args)
        .env("PPROF_TMPDIR", env!("CARGO_TARGET_TMPDIR"))
        .output()
        .expect("`go` not found: the README's test command installs golang-go")
}

/// Runs `go tool pprof`, which must succeed without complaining about symbols; returns
/// (stdout, stderr).
pub fn go_pprof(args: &[&str]) -> (String, String) {
    let out = run_go_pprof(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{stderr}\n{stdout}"
    );
    assert_no_symbolization_warnings(&stderr);
    (stdout, stderr)
}

/// Runs `go tool pprof`, which must fail; returns what it printed on stderr.
pub fn go_pprof_fails(args: &[&str]) -> String {
    let out = run_go_pprof(args);
    assert!(!out.status.success(), "go tool pprof {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts pprof printed nothing about symbolization (it does when it finds unsymbolized
/// mappings and goes looking for binaries or a symbol server).
pub fn assert_no_symbolization_warnings(stderr: &str) {
    let lower = stderr.to_lowercase();
    assert!(
        !lower.contains("symboliz") && !lower.contains("warning") && !lower.contains("failed"),
        "pprof complained:\n{stderr}"
    );
}

/// Writes `bytes` to a fresh file under the target directory and returns its path.
pub fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}
