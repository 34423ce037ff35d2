//! Finding the workspace's real binaries (`ingress`, `worker`, `demo-inventory`, …) for
//! tests that run them as child processes.

use std::path::PathBuf;

/// `target/<profile>/<name>`, next to the running test executable. The test command
/// (`deploy/test.sh`) builds every binary before the tests run.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace --bins` (deploy/test.sh does) first",
        bin.display()
    );
    bin
}
