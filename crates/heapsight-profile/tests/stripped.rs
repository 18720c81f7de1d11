//! Names on the builds services ship: this test binary copied and cut down with the real
//! `objcopy`, run as a child that writes its own heap profile, read back here and by the real
//! `go tool pprof`.
//!
//! - Debug info split off (`--only-keep-debug`, then `--strip-debug`): the child finds the
//!   debug file by `.gnu_debuglink` (beside the binary, in `.debug/` beside it) or by build ID
//!   (`ROOT/.build-id/xx/rest.debug`), and its profile has files and lines.
//! - Stripped (`--strip-all`): the child cannot name its frames, so the profile carries their
//!   addresses and the mapping's build ID with `has_functions: false`, and `go tool pprof`
//!   names them from the unstripped binary.

mod common;

use heapsight_profile::Profile;
use std::path::{Path, PathBuf};
use std::process::Command;

#[global_allocator]
static GLOBAL: heapsight::Sampler<std::alloc::System> = heapsight::Sampler::new(std::alloc::System);

/// Where the child writes its profile; set only for the child.
const OUT: &str = "HEAPSIGHT_TEST_PROFILE_OUT";

#[inline(never)]
fn held_by_the_child() -> Vec<Vec<u8>> {
    let held = (0..64).map(|i| vec![i as u8; 64 << 10]).collect();
    // Used after the call, so that the call is not a tail call that leaves no frame here.
    std::hint::black_box(held)
}

/// The child's part: a no-op unless this binary was started as a child.
#[test]
fn child_writes_its_heap_profile() {
    let Some(out) = std::env::var_os(OUT) else {
        return;
    };
    heapsight::set_sample_rate(16 << 10);
    let kept = held_by_the_child();
    let mut file = std::fs::File::create(out).unwrap();
    heapsight_profile::write_heap_profile(&mut file).unwrap();
    drop(kept);
}

fn objcopy(args: &[&str]) {
    let status = Command::new("objcopy")
        .args(args)
        .status()
        .expect("objcopy (binutils) is installed");
    assert!(status.success(), "objcopy {args:?}");
}

/// A fresh directory holding a copy of this test binary as `app`.
fn workdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(std::env::current_exe().unwrap(), dir.join("app")).unwrap();
    dir
}

/// Runs `binary` as the child and reads the profile it wrote.
fn run_child(binary: &Path, env: &[(&str, &Path)]) -> (Profile, PathBuf) {
    let out = binary.with_extension("pb.gz");
    let status = Command::new(binary)
        .args([
            "--exact",
            "child_writes_its_heap_profile",
            "--test-threads=1",
        ])
        .env(OUT, &out)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .status()
        .unwrap();
    assert!(status.success(), "{} failed", binary.display());
    let profile = Profile::from_pprof_bytes(&std::fs::read(&out).unwrap()).unwrap();
    (profile, out)
}

/// The held site's function as the profile names it, with its file and line, if it does.
fn named_site(p: &Profile) -> Option<(String, String, i64)> {
    p.locations.iter().flat_map(|l| &l.lines).find_map(|line| {
        let f = p.functions.iter().find(|f| f.id == line.function_id)?;
        f.name
            .contains("held_by_the_child")
            .then(|| (f.name.clone(), f.filename.clone(), line.line))
    })
}

fn assert_lines(what: &str, p: &Profile) {
    let (name, file, line) = named_site(p).unwrap_or_else(|| panic!("{what}: site not named"));
    assert!(
        file.ends_with("tests/stripped.rs") && line > 0,
        "{what}: {name} at {file}:{line}"
    );
}

#[test]
fn split_debug_info_is_found_by_debuglink_and_by_build_id() {
    let dir = workdir("split");
    let app = dir.join("app");
    let debug = dir.join("app.debug");
    objcopy(&[
        "--only-keep-debug",
        app.to_str().unwrap(),
        debug.to_str().unwrap(),
    ]);

    // Beside the binary, named by the link.
    let linked = dir.join("linked");
    objcopy(&[
        "--strip-debug",
        &format!("--add-gnu-debuglink={}", debug.display()),
        app.to_str().unwrap(),
        linked.to_str().unwrap(),
    ]);
    let none = dir.join("no-debug-dirs");
    let (p, file) = run_child(&linked, &[("HEAPSIGHT_DEBUG_FILE_DIRECTORY", &none)]);
    assert_lines("debuglink beside the binary", &p);
    // The real go tool pprof reads the names and lines the child found in the debug file.
    let (list, _) = common::go_pprof(&["-list", "held_by_the_child", file.to_str().unwrap()]);
    assert!(
        list.contains("tests/stripped.rs") && list.contains("held_by_the_child"),
        "{list}"
    );

    // In `.debug/` beside it.
    let sub = dir.join("sub");
    std::fs::create_dir_all(sub.join(".debug")).unwrap();
    std::fs::copy(&linked, sub.join("linked")).unwrap();
    std::fs::rename(&debug, sub.join(".debug/app.debug")).unwrap();
    let (p, _) = run_child(
        &sub.join("linked"),
        &[("HEAPSIGHT_DEBUG_FILE_DIRECTORY", &none)],
    );
    assert_lines("debuglink in .debug/", &p);

    // A debug file whose CRC does not match the link is not used.
    std::fs::write(dir.join("app.debug"), b"not the debug file").unwrap();
    let (p, _) = run_child(&linked, &[("HEAPSIGHT_DEBUG_FILE_DIRECTORY", &none)]);
    let named = named_site(&p);
    assert!(
        named.as_ref().is_none_or(|(_, _, line)| *line == 0),
        "lines from a file that is not the debug file: {named:?}"
    );

    // By build ID under a debug root, with no link at all.
    let bare = dir.join("bare");
    objcopy(&[
        "--strip-debug",
        app.to_str().unwrap(),
        bare.to_str().unwrap(),
    ]);
    let id = p.mappings[0].build_id.clone();
    assert!(id.len() > 2, "the binary has a build ID");
    let root = dir.join("root");
    let by_id = root.join(".build-id").join(&id[..2]);
    std::fs::create_dir_all(&by_id).unwrap();
    std::fs::copy(
        sub.join(".debug/app.debug"),
        by_id.join(format!("{}.debug", &id[2..])),
    )
    .unwrap();
    let (p, _) = run_child(&bare, &[("HEAPSIGHT_DEBUG_FILE_DIRECTORY", &root)]);
    assert_lines("build ID under the debug root", &p);
}

#[test]
fn a_stripped_binary_profile_is_named_by_go_tool_pprof_from_the_binary() {
    let dir = workdir("stripped");
    let app = dir.join("app");
    let stripped = dir.join("stripped");
    objcopy(&[
        "--strip-all",
        app.to_str().unwrap(),
        stripped.to_str().unwrap(),
    ]);
    let none = dir.join("no-debug-dirs");
    let (p, file) = run_child(&stripped, &[("HEAPSIGHT_DEBUG_FILE_DIRECTORY", &none)]);
    assert!(named_site(&p).is_none(), "a stripped binary names nothing");
    let main = &p.mappings[0];
    assert!(
        main.filename.ends_with("/stripped") && !main.build_id.is_empty() && !main.has_functions,
        "{main:?}"
    );
    assert!(
        p.locations
            .iter()
            .any(|l| l.mapping_id == main.id && l.lines.is_empty()),
        "addresses in the main mapping, for the reader to name"
    );
    let traces = |args: &[&str]| {
        let out = common::run_go_pprof(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Alone, pprof can only name the binary.
    let alone = traces(&["-traces", file.to_str().unwrap()]);
    assert!(alone.contains("[stripped]"), "{alone}");
    // Given the unstripped binary before the profile, as pprof's docs say for a binary built
    // elsewhere, it names the frames from its symbols. (Go 1.19's pprof keeps one name per
    // address, and shortens Rust paths to their last part.)
    let named = traces(&["-traces", app.to_str().unwrap(), file.to_str().unwrap()]);
    for frame in ["held_by_the_child", "from_iter", "thread_start"] {
        assert!(named.contains(frame), "{frame}:\n{named}");
    }
}
