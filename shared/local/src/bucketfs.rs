//! A bucket's directory as the object store and the bucket watcher touch it: keys resolved without
//! following a symbolic link, regular files only, and whether a file is still open for writing.
//!
//! A link in a bucket — to a file (`ln -s /proc/self/environ daily/env.csv`) or to a folder — would
//! let whoever can write into the bucket make the pipeline read, copy or delete what lies elsewhere,
//! and put those bytes in reports, logs and alerts. So a key is resolved one name at a time, each
//! opened relative to its parent's descriptor with `O_NOFOLLOW` (`openat`): a link anywhere on the
//! way is refused, and since every step holds its folder open, a folder swapped for a link half-way
//! cannot redirect the rest. The bucket's own directory, and the data directory above it, may be
//! links: the operator placed them.

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The reason a key naming, or passing through, a symbolic link is refused.
pub(crate) const LINK_REFUSED: &str = "a symbolic link: buckets hold regular files only";
/// The reason a key naming a FIFO, socket or device is refused.
pub(crate) const NOT_REGULAR: &str = "not a regular file: buckets hold regular files only";

fn refused(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, reason)
}

/// A key's folders and its name (keys are checked before they get here: no empty segment).
fn split(key: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = key.split('/').collect();
    let name = parts.pop().unwrap_or_default();
    (parts, name)
}

/// Opens `name` in `dir` with `flags` and `O_NOFOLLOW`; a link there is refused as such.
fn open_at(dir: &OwnedFd, name: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    match rustix::fs::openat(dir, name, flags | OFlags::NOFOLLOW | OFlags::CLOEXEC, mode) {
        Ok(fd) => Ok(fd),
        // A link met with O_NOFOLLOW: ELOOP, or ENOTDIR where a folder was asked for.
        Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
            let link = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
            });
            Err(if link {
                refused(LINK_REFUSED)
            } else {
                e.into()
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// The descriptors of `root` and of each of `dirs` beneath it, in order, none reached through a
/// link; missing folders are made when `create`.
fn open_dirs(root: &Path, dirs: &[&str], create: bool) -> io::Result<Vec<OwnedFd>> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
    let mut chain = vec![rustix::fs::open(
        root,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
    )?];
    for name in dirs {
        let parent = chain.last().expect("the root is first");
        let next = match open_at(parent, name, flags, Mode::empty()) {
            Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
                match rustix::fs::mkdirat(parent, *name, Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => open_at(parent, name, flags, Mode::empty())?,
                    Err(e) => return Err(e.into()),
                }
            }
            other => other?,
        };
        chain.push(next);
    }
    Ok(chain)
}

/// What `key` names beneath `root`, the name itself not followed: `None` when nothing is there.
/// Only regular files are objects; a link (or a link on the way) is an error.
pub(crate) fn lstat(root: &Path, key: &str) -> io::Result<Option<fs::Metadata>> {
    let (dirs, name) = split(key);
    let chain = match open_dirs(root, &dirs, false) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    let parent = chain.last().expect("the root is first");
    // O_PATH with O_NOFOLLOW opens the name itself, whatever it is, without acting on it.
    match rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let md = fs::File::from(fd).metadata()?;
            if md.is_symlink() {
                Err(refused(LINK_REFUSED))
            } else {
                Ok(Some(md))
            }
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Opens the regular file `key` beneath `root` for reading. A link, a FIFO (whose open would block)
/// or a device (whose open may act) is refused before it is opened.
pub(crate) fn open_file(root: &Path, key: &str) -> io::Result<fs::File> {
    let (dirs, name) = split(key);
    let chain = open_dirs(root, &dirs, false)?;
    let parent = chain.last().expect("the root is first");
    let looked = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)?;
    match rustix::fs::FileType::from_raw_mode(looked.st_mode) {
        rustix::fs::FileType::RegularFile => {}
        rustix::fs::FileType::Symlink => return Err(refused(LINK_REFUSED)),
        rustix::fs::FileType::Directory => return Err(Errno::ISDIR.into()),
        _ => return Err(refused(NOT_REGULAR)),
    }
    let fd = open_at(
        parent,
        name,
        OFlags::RDONLY | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    let file = fs::File::from(fd);
    let md = file.metadata()?;
    // The name may have been swapped between the look and the open.
    if !md.is_file() || md.ino() != looked.st_ino || md.dev() != looked.st_dev {
        return Err(refused(NOT_REGULAR));
    }
    Ok(file)
}

/// Moves the file at `from` (on the same file system) to `key` beneath `root`, making the key's
/// folders as needed, none through a link. The name itself is replaced, never followed.
pub(crate) fn rename_into(root: &Path, key: &str, from: &Path) -> io::Result<()> {
    let (dirs, name) = split(key);
    let chain = open_dirs(root, &dirs, true)?;
    let parent = chain.last().expect("the root is first");
    rustix::fs::renameat(rustix::fs::CWD, from, parent, name)?;
    Ok(())
}

/// Copies `from` beside `key` (a hidden name), then renames it over `key`: for a bucket on another
/// file system than the temporary files. Synced first when `sync`.
pub(crate) fn copy_into(root: &Path, key: &str, from: &Path, sync: bool) -> io::Result<()> {
    let (dirs, name) = split(key);
    let chain = open_dirs(root, &dirs, true)?;
    let parent = chain.last().expect("the root is first");
    let near = format!(".choreo-tmp-{}", uuid::Uuid::new_v4().simple());
    let fd = open_at(
        parent,
        &near,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        Mode::from_raw_mode(0o666),
    )?;
    let mut out = fs::File::from(fd);
    let written = io::copy(&mut fs::File::open(from)?, &mut out)
        .and_then(|_| if sync { out.sync_all() } else { Ok(()) })
        .and_then(|()| Ok(rustix::fs::renameat(parent, &near, parent, name)?));
    if written.is_err() {
        let _ = rustix::fs::unlinkat(parent, &near, AtFlags::empty());
    }
    written
}

/// Hard-links the file `key` beneath `root` (the name itself: a link there is linked as a link,
/// never followed) to `to`.
pub(crate) fn link_to(root: &Path, key: &str, to: &Path) -> io::Result<()> {
    let (dirs, name) = split(key);
    let chain = open_dirs(root, &dirs, false)?;
    let parent = chain.last().expect("the root is first");
    rustix::fs::linkat(parent, name, rustix::fs::CWD, to, AtFlags::empty())?;
    Ok(())
}

/// Syncs the folder holding `key` (a rename into it is durable once its folder is).
pub(crate) fn sync_parent(root: &Path, key: &str) -> io::Result<()> {
    let (dirs, _) = split(key);
    let mut chain = open_dirs(root, &dirs, false)?;
    fs::File::from(chain.pop().expect("the root is first")).sync_all()
}

/// Removes `key` beneath `root` (the name itself: a link is removed, never followed), then the
/// folders it leaves empty, up to the bucket's. A key already gone is not an error.
pub(crate) fn remove(root: &Path, key: &str) -> io::Result<()> {
    let (dirs, name) = split(key);
    let chain = match open_dirs(root, &dirs, false) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    match rustix::fs::unlinkat(
        chain.last().expect("the root is first"),
        name,
        AtFlags::empty(),
    ) {
        Ok(()) => {}
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    // S3 has no folders to leave behind. A folder that is not empty (or is gone) ends the climb.
    for (parent, dir) in chain.iter().zip(&dirs).rev() {
        if rustix::fs::unlinkat(parent, *dir, AtFlags::REMOVEDIR).is_err() {
            break;
        }
    }
    Ok(())
}

/// Whether some process holds `file` open for writing: `Some(true)` when a read lease on it is
/// refused with `EAGAIN`, which the kernel answers exactly when the file is open for writing
/// anywhere. `None` where the kernel cannot tell: a file of another user (leases need its owner or
/// `CAP_LEASE`), a file system without leases, a system other than Linux.
pub(crate) fn open_for_writing(file: &fs::File) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // <fcntl.h>'s F_SETSIG (10 on every Linux architecture); the libc crate has it for few targets.
        const F_SETSIG: libc::c_int = 10;
        let fd = file.as_raw_fd();
        // A lease taken is released at once. Should a writer open the file in between, the kernel
        // signals the lease's holder — SIGIO by default, which would end the process — so the
        // signal is set to SIGURG first, which a process ignores unless it asks for it.
        // SAFETY: fcntl with integer arguments on a descriptor `file` owns for the whole call.
        unsafe {
            if libc::fcntl(fd, F_SETSIG, libc::SIGURG) == -1 {
                return None;
            }
            if libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) == 0 {
                libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK);
                return Some(false);
            }
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) => Some(true),
            _ => None,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_are_refused_wherever_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("bucket"), dir.path().join("outside"));
        fs::create_dir_all(root.join("daily")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret.csv"), "secret").unwrap();
        fs::write(root.join("daily/plain.csv"), "plain").unwrap();
        symlink(outside.join("secret.csv"), root.join("daily/file-link.csv")).unwrap();
        symlink(&outside, root.join("daily/dir-link")).unwrap();

        let plain = open_file(&root, "daily/plain.csv").unwrap();
        assert_eq!(io::read_to_string(plain).unwrap(), "plain");
        assert!(lstat(&root, "daily/plain.csv").unwrap().unwrap().is_file());
        for key in ["daily/file-link.csv", "daily/dir-link/secret.csv"] {
            let e = open_file(&root, key).unwrap_err();
            assert_eq!(e.to_string(), LINK_REFUSED, "{key}");
            assert_eq!(lstat(&root, key).unwrap_err().to_string(), LINK_REFUSED);
        }
        // Writing through a linked folder is refused too, and nothing lands outside.
        let tmp = dir.path().join("tmp-file");
        fs::write(&tmp, "x").unwrap();
        let e = rename_into(&root, "daily/dir-link/new.csv", &tmp).unwrap_err();
        assert_eq!(e.to_string(), LINK_REFUSED);
        assert!(!outside.join("new.csv").exists());
        // Removing a link removes the link, never what it points at.
        remove(&root, "daily/file-link.csv").unwrap();
        assert_eq!(
            fs::read_to_string(outside.join("secret.csv")).unwrap(),
            "secret"
        );
        assert!(remove(&root, "daily/dir-link/secret.csv").is_err());
        assert!(outside.join("secret.csv").exists());
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.csv");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = open_file(dir.path(), "pipe.csv").unwrap_err();
        assert_eq!(e.to_string(), NOT_REGULAR);
    }

    #[test]
    fn a_file_open_for_writing_is_told_from_a_closed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        let mut writer = fs::File::create(&path).unwrap();
        writer.write_all(b"a,b\n1,").unwrap();
        let reader = open_file(dir.path(), "f.csv").unwrap();
        assert_eq!(open_for_writing(&reader), Some(true));
        drop(writer);
        assert_eq!(open_for_writing(&reader), Some(false));
        // Read-only openers are not writers.
        let _other_reader = fs::File::open(&path).unwrap();
        assert_eq!(open_for_writing(&reader), Some(false));
    }
}
