//! Owner-only files: the data directory is 0700 and every file in it 0600 from the moment it
//! exists. The database file is created here, before SQLite opens it, because SQLite's unix VFS
//! gives the `-wal` and `-shm` files the permissions of the database file: so they are private
//! from their first byte too, whatever the process umask.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Creates `dir` (and missing parents) with mode 0700. An existing directory that others may
/// read or enter is tightened to 0700, with a warning; if that is not allowed (not ours), it is
/// left as it is with a warning.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    b.mode(0o700);
    b.create(dir)?;
    #[cfg(unix)]
    {
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
                Ok(()) => tracing::warn!(
                    dir = %dir.display(),
                    was = format!("{mode:o}"),
                    "the data directory was open to other users; tightened it to 0700"
                ),
                Err(e) => tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{mode:o}"),
                    error = %e,
                    "the data directory is open to other users and cannot be tightened; make it 0700"
                ),
            }
        }
    }
    Ok(())
}

/// Opens (creating if needed) `path` for writing with mode 0600 at creation; an existing file
/// that others may read (written by an older version) is tightened to 0600.
pub fn open_private_file(path: &Path) -> io::Result<std::fs::File> {
    let mut opts = OpenOptions::new();
    opts.create(true).truncate(false).write(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let f = opts.open(path)?;
    tighten_or_warn(path);
    Ok(f)
}

/// Creates `path` empty with mode 0600 unless it exists; an existing file is tightened.
pub fn create_private_file(path: &Path) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            tighten_or_warn(path);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// `tighten`, warning instead of failing (a file we may not chmod is still usable).
pub(crate) fn tighten_or_warn(path: &Path) {
    if let Err(e) = tighten(path) {
        tracing::warn!(file = %path.display(), error = %e, "cannot make the file owner-only (0600)");
    }
}

/// Makes an existing file owner-only (no-op if it is already, or absent).
fn tighten(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(())
}
