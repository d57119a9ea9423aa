//! The disk the data directory lives on running out of space.
//!
//! A full disk is the operator's problem, never the tenant's: it must not
//! read as a tenant's quota (`QUOTA_EXCEEDED`) or as a bug (`INTERNAL`).
//! These helpers let each layer tell it apart, so it surfaces as
//! `STORAGE_FULL` on deploys and `DB_UNAVAILABLE` / kv `unavailable` to
//! guests, with the path in the operator's log only.

use std::error::Error;
use std::ffi::CString;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether `error`, or an error it wraps, is the OS or SQLite saying the
/// disk (or the user's filesystem quota) is full. `SQLITE_FULL` counts: on
/// a database with `max_page_count` set, it may be that limit instead.
pub fn is_full(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if matches!(io.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded) {
                return true;
            }
            // An io::Error wrapping another error gives that error's
            // source, not the error itself.
            if let Some(inner) = io.get_ref()
                && is_full(inner)
            {
                return true;
            }
        }
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) =
            error.downcast_ref::<rusqlite::Error>()
            && failure.code == rusqlite::ErrorCode::DiskFull
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// Bytes this process can still put on the filesystem holding `path`
/// (root may use the blocks reserved for it), or `None` if it cannot be
/// asked.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and outlives the call; `stat` is
    // writable memory of the right type, read only after a success.
    let done = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if done != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled in `stat`.
    let stat = unsafe { stat.assume_init() };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let blocks = if unsafe { libc::geteuid() } == 0 {
        stat.f_bfree
    } else {
        stat.f_bavail
    };
    Some(blocks.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_found_through_wrapping_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("writing an object")]
        struct Wrapper(#[source] std::io::Error);

        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_full(&full));
        assert!(is_full(&Wrapper(full)));
        let quota = std::io::Error::from_raw_os_error(libc::EDQUOT);
        assert!(is_full(&quota));
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(!is_full(&Wrapper(denied)));
        let sqlite_full = || {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                None,
            )
        };
        assert!(is_full(&std::io::Error::other(sqlite_full())));

        assert!(is_full(&sqlite_full()));
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(!is_full(&busy));
    }

    #[test]
    fn free_bytes_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|free| free > 0));
        assert_eq!(free_bytes(&dir.path().join("absent")), None);
    }
}
