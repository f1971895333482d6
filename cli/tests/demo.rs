//! `nines demo` runs to completion and leaves nothing behind: no process started from its
//! temporary directory, no temporary directory.

use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_nines");

/// Processes whose environment mentions `needle` (components carry their agent's socket path).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let hit = |b: &[u8]| b.windows(needle.len()).any(|w| w == needle.as_bytes());
        if hit(&env) || hit(&cmd) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn the_demo_completes_and_cleans_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .arg("demo")
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run nines demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phrase in ["drill 1", "drill 2", "summary", "confirmed active"] {
        assert!(stdout.contains(phrase), "missing '{phrase}' in:\n{stdout}");
    }
    // Components exit when their agent's session closes; give them a moment (bounded).
    let needle = tmp.path().display().to_string();
    let mut left = processes_mentioning(&needle);
    for _ in 0..100 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = processes_mentioning(&needle);
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let entries: Vec<_> = std::fs::read_dir(tmp.path()).expect("tmp").collect();
    assert!(
        entries.is_empty(),
        "temporary files left behind: {entries:?}"
    );
}
