//! The data dir: a format marker and the Raft store. An unknown format is refused, not guessed.

use std::path::{Path, PathBuf};

use nines_core::DATA_FORMAT_VERSION;

/// The file that records the data dir's format version.
const FORMAT_FILE: &str = "FORMAT";

/// Check (or, when the dir is new, write) the format marker. Returns the Raft store's path.
pub(crate) fn prepare(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
    let marker = dir.join(FORMAT_FILE);
    let want = format!("nines-data {DATA_FORMAT_VERSION}\n");
    match std::fs::read_to_string(&marker) {
        Ok(text) if text == want => {}
        Ok(text) => {
            return Err(format!(
                "data dir {} has format '{}' but this build reads '{}'; use a matching nines \
                 version or a fresh data dir",
                dir.display(),
                text.trim(),
                want.trim()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let nonempty = std::fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false);
            if nonempty {
                return Err(format!(
                    "data dir {} is not empty and has no {FORMAT_FILE} file: it is not a nines \
                     data dir; choose an empty or nines-owned directory",
                    dir.display()
                ));
            }
            std::fs::write(&marker, &want)
                .and_then(|_| std::fs::File::open(&marker)?.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
        }
        Err(e) => return Err(format!("cannot read {}: {e}", marker.display())),
    }
    Ok(dir.join("raft"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_new_dirs_and_refuses_foreign_ones() {
        let t = tempfile::tempdir().expect("tempdir");
        let d = t.path().join("n1");
        prepare(&d).expect("new dir is marked");
        prepare(&d).expect("own dir reopens");
        std::fs::write(d.join(FORMAT_FILE), "nines-data 99\n").expect("write");
        assert!(prepare(&d).unwrap_err().contains("format 'nines-data 99'"));
        let foreign = t.path().join("other");
        std::fs::create_dir_all(&foreign).expect("mkdir");
        std::fs::write(foreign.join("x"), "x").expect("write");
        assert!(prepare(&foreign)
            .unwrap_err()
            .contains("not a nines data dir"));
    }
}
