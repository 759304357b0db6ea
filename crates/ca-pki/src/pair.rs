//! A key file and its certificate file, replaced together: a crash never leaves a new certificate
//! beside the old key (or the reverse).
//!
//! Saving writes `<key>.new`, then `<cert>.new` (each through a fsynced temporary file and a
//! rename), then renames the key into place, fsyncs the directory, and renames the certificate.
//! `<cert>.new` appearing is the commit point: once it exists, the new pair wins. Loading first
//! finishes a committed replacement (the same two renames, skipping a file already moved); a
//! `<key>.new` without `<cert>.new` is a save that stopped before its commit point, so the old
//! pair is still whole and the stray file is left for the next save to overwrite.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::ca::CERT_MODE;
use crate::keys::{self, KeyError, UnlockKey};

/// The names of a key and certificate pair in one directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairFiles<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) cert: &'a str,
    pub(crate) key: &'a str,
}

/// Writing or finishing the replacement of a pair failed.
#[derive(Debug)]
pub(crate) enum PairError {
    /// A file or directory could not be written, renamed or synced.
    Io { path: PathBuf, source: std::io::Error },
    /// The key file could not be written.
    Key(KeyError),
}

impl PairFiles<'_> {
    pub(crate) fn cert_path(&self) -> PathBuf {
        self.dir.join(self.cert)
    }

    pub(crate) fn key_path(&self) -> PathBuf {
        self.dir.join(self.key)
    }

    fn pending(&self, file: &str) -> PathBuf {
        let mut name = OsString::from(file);
        name.push(".new");
        self.dir.join(name)
    }

    /// Replaces the pair with `cert_pem` and `key_pem` (mode 0600, encrypted when `kek` is set).
    pub(crate) fn save(&self, cert_pem: &str, key_pem: &[u8], kek: Option<&UnlockKey>) -> Result<(), PairError> {
        // A replacement committed before a crash must reach its place before `<key>.new` is
        // written again, or the committed certificate would lose its key.
        self.finish()?;
        keys::write_key_file(&self.pending(self.key), key_pem, kek).map_err(PairError::Key)?;
        let cert_new = self.pending(self.cert);
        keys::write_atomic(&cert_new, cert_pem.as_bytes(), CERT_MODE)
            .map_err(|source| PairError::Io { path: cert_new, source })?;
        self.finish()
    }

    /// Finishes a replacement committed before a crash, if there is one; see the module docs.
    pub(crate) fn finish(&self) -> Result<(), PairError> {
        let cert_new = self.pending(self.cert);
        match cert_new.try_exists() {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(source) => return Err(PairError::Io { path: cert_new, source }),
        }
        rename_if_present(&self.pending(self.key), &self.key_path())?;
        // The key must be in place on disk before the commit point disappears with `<cert>.new`.
        sync_dir(self.dir)?;
        rename_if_present(&cert_new, &self.cert_path())?;
        sync_dir(self.dir)
    }
}

/// Renames `from` to `to`; a missing `from` was already moved (by an earlier, interrupted finish).
fn rename_if_present(from: &Path, to: &Path) -> Result<(), PairError> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PairError::Io { path: to.to_owned(), source }),
    }
}

/// Makes renames in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), PairError> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| PairError::Io { path: dir.to_owned(), source })
}

#[cfg(test)]
mod tests;
