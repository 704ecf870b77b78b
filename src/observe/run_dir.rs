//! The run directory and the status file in it.
//!
//! `ha-vip status` and `ha-vip release` trust what they read there, and the
//! daemon writes there as root: a directory another user can write would let
//! them plant a link where root writes, or replace the status. So the
//! directory is checked at start, and every write goes to a fresh,
//! unpredictable temporary name opened with `O_CREAT|O_EXCL|O_NOFOLLOW`
//! (never an existing file or a link) and then renamed over the status file
//! (rename replaces a link itself, never its target).

use std::collections::hash_map::RandomState;
use std::fs::{self, DirBuilder, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use super::status::StatusError;

/// Temporary names tried before giving up; a clash needs someone to have
/// guessed a 64-bit random name.
const TEMP_ATTEMPTS: usize = 8;

/// Checks (creating it 0755 if missing) that `dir` is a directory owned by
/// root (or by the user the daemon runs as) that no group or other user can
/// write; the error says how to fix it.
pub fn check_run_dir(dir: &Path) -> Result<(), StatusError> {
    if !dir.exists() {
        create_dir(dir)?;
    }
    let meta = fs::metadata(dir).map_err(|source| StatusError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let euid = nix::unistd::geteuid().as_raw();
    let mode = meta.permissions().mode() & 0o7777;
    let problem = if !meta.is_dir() {
        Some("not a directory")
    } else if meta.uid() != 0 && meta.uid() != euid {
        Some("owned by another user")
    } else if mode & 0o022 != 0 {
        Some("writable by group or others")
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(problem) => Err(StatusError::UnsafeRunDir {
            path: dir.to_path_buf(),
            problem,
            uid: meta.uid(),
            mode,
        }),
    }
}

fn create_dir(dir: &Path) -> Result<(), StatusError> {
    // Readers (`ha-vip status` as any user) need 0755 whatever the umask
    // (the unit sets UMask=0077); an existing directory is left as it is.
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)))
        .map_err(|source| StatusError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `bytes` to `path` atomically: readers see the old file or the new
/// one, never a torn one, and nothing planted in the directory is followed.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StatusError> {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let names = (0..TEMP_ATTEMPTS).map(|_| temp_name(&file_name));
    write_via(path, bytes, names)
}

/// [`write_atomically`] with the temporary names to try (tests plant links
/// at them).
fn write_via(
    path: &Path,
    bytes: &[u8],
    names: impl Iterator<Item = String>,
) -> Result<(), StatusError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        create_dir(dir)?;
    }
    let mut last = None;
    for name in names {
        let tmp = dir.join(name);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(f) => f,
            // Taken (by a link or anything else): not ours, try another name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last = Some(StatusError::Write {
                    path: tmp,
                    source: e,
                });
                continue;
            }
            Err(source) => return Err(StatusError::Write { path: tmp, source }),
        };
        // The umask may have narrowed the mode; readers need 0644.
        let written = file
            .set_permissions(fs::Permissions::from_mode(0o644))
            .and_then(|()| file.write_all(bytes));
        drop(file);
        if let Err(source) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StatusError::Write { path: tmp, source });
        }
        // No fsync: the file describes a running process and lives on /run
        // (tmpfs); it must never make the daemon's single thread wait on a disk.
        return fs::rename(&tmp, path).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            StatusError::Rename {
                path: path.to_path_buf(),
                source,
            }
        });
    }
    Err(last.unwrap_or_else(|| StatusError::Write {
        path: dir.to_path_buf(),
        source: io::Error::other("no temporary name to try"),
    }))
}

/// `.status.json.<16 hex digits>.tmp`, unpredictable to other users.
fn temp_name(file_name: &str) -> String {
    // std's RandomState is seeded from the OS's random source: 64
    // unpredictable bits without a dependency for them.
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    format!(".{file_name}.{:016x}.tmp", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_link_planted_at_the_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious\n").unwrap();
        let path = dir.path().join("status.json");
        // Both a link to an existing file and a dangling one (which O_CREAT
        // without O_EXCL would create at its target).
        symlink(&victim, dir.path().join(".a")).unwrap();
        let dangling = dir.path().join("created-through-link");
        symlink(&dangling, dir.path().join(".b")).unwrap();
        let names = [".a", ".b", ".c"].map(String::from).into_iter();
        write_via(&path, b"{}\n", names).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!dangling.exists(), "a dangling link was followed");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}\n");
        assert!(
            fs::symlink_metadata(dir.path().join(".a"))
                .unwrap()
                .is_symlink()
        );
        assert!(!dir.path().join(".c").exists(), "renamed away");

        // Every name taken: an error naming the file, and nothing followed.
        let names = [".a", ".b"].map(String::from).into_iter();
        let err = write_via(&path, b"[]\n", names).unwrap_err();
        assert!(err.to_string().contains(".b"), "{err}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}\n");
    }

    #[test]
    fn temporary_names_differ() {
        let a = temp_name("status.json");
        let b = temp_name("status.json");
        assert_ne!(a, b);
        assert!(a.starts_with(".status.json.") && a.ends_with(".tmp"), "{a}");
    }

    #[test]
    fn run_dir_must_be_private_to_root() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        check_run_dir(&run).expect("a missing run_dir is created");
        let mode = fs::metadata(&run).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        for bad in [0o777, 0o775, 0o1777, 0o757] {
            fs::set_permissions(&run, fs::Permissions::from_mode(bad)).unwrap();
            let err = check_run_dir(&run).unwrap_err().to_string();
            assert!(
                err.contains("writable by group or others")
                    && err.contains(&format!("{bad:04o}"))
                    && err.contains(&format!("chmod 0755 {}", run.display())),
                "{err}"
            );
        }
        fs::set_permissions(&run, fs::Permissions::from_mode(0o700)).unwrap();
        check_run_dir(&run).expect("0700 is fine");
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let err = check_run_dir(&file).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
