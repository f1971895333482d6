//! Writing certificates and keys: mode 0600, never over an existing file unless forced, never
//! half-written (each file is written to a temporary name, synced, then put in place).

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use crate::issue::IssueError;

/// Mode of every file written: keys must be private; certificates need not be, but one mode is
/// simpler to check.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Mode of a certificate directory this crate creates (it holds the CA key).
pub(crate) const DIR_MODE: u32 = 0o700;

/// Write `files` (name, contents) into `dir`, creating `dir` if needed.
///
/// Without `force`, refuses before writing anything if any of them exists, and never replaces
/// one that appears meanwhile (each is linked into place, which fails on an existing name).
pub(crate) fn write_new(
    dir: &Path,
    files: &[(&str, &str)],
    force: bool,
) -> Result<Vec<PathBuf>, IssueError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| io("create the directory", dir, e))?;
    let paths: Vec<PathBuf> = files.iter().map(|(name, _)| dir.join(name)).collect();
    if !force {
        if let Some(p) = paths.iter().find(|p| p.symlink_metadata().is_ok()) {
            return Err(IssueError::Exists { path: p.clone() });
        }
    }
    for ((name, contents), path) in files.iter().zip(&paths) {
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let placed = write_tmp(&tmp, contents).and_then(|()| place(&tmp, path, force));
        // The temporary name is gone after a rename; after a link (or a failure) remove it.
        let _ = fs::remove_file(&tmp);
        placed?;
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("sync the directory", dir, e))?;
    Ok(paths)
}

fn write_tmp(tmp: &Path, contents: &str) -> Result<(), IssueError> {
    let _ = fs::remove_file(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(tmp)
        .map_err(|e| io("create", tmp, e))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io("write", tmp, e))
}

fn place(tmp: &Path, path: &Path, force: bool) -> Result<(), IssueError> {
    if force {
        return fs::rename(tmp, path).map_err(|e| io("replace", path, e));
    }
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(IssueError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io("write", path, e)),
    }
}

pub(crate) fn io(what: &str, path: &Path, source: std::io::Error) -> IssueError {
    IssueError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn writes_0600_and_refuses_to_overwrite() -> Result<(), Box<dyn std::error::Error>> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("certs");
        let paths = write_new(&dir, &[("a.key", "A"), ("a.pem", "B")], false)?;
        for p in &paths {
            assert_eq!(
                p.metadata()?.permissions().mode() & 0o777,
                FILE_MODE,
                "{p:?}"
            );
        }
        assert_eq!(dir.metadata()?.permissions().mode() & 0o777, DIR_MODE);
        // The second file exists: nothing is written, not even the first.
        fs::remove_file(&paths[0])?;
        let e = write_new(&dir, &[("a.key", "C"), ("a.pem", "D")], false).unwrap_err();
        assert!(
            matches!(&e, IssueError::Exists { path } if path == &paths[1]),
            "{e}"
        );
        assert!(!paths[0].exists());
        assert_eq!(fs::read_to_string(&paths[1])?, "B");
        // Forced: replaced, still 0600, no temporary files left.
        fs::set_permissions(&paths[1], fs::Permissions::from_mode(0o644))?;
        write_new(&dir, &[("a.key", "C"), ("a.pem", "D")], true)?;
        assert_eq!(fs::read_to_string(&paths[1])?, "D");
        assert_eq!(paths[1].metadata()?.permissions().mode() & 0o777, FILE_MODE);
        assert_eq!(fs::read_dir(&dir)?.count(), 2);
        Ok(())
    }
}
