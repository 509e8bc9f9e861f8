//! Non-blocking file descriptors registered with mio.
//!
//! Pipes to children and the relay's own stdin/stdout are plain fds wrapped in
//! `File` (which already implements `Read` and `Write` on any fd).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<libc::c_int> {
    // SAFETY: fcntl on a caller-provided fd; errors are reported, not UB.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if new != flags && unsafe { libc::fcntl(fd, libc::F_SETFL, new) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags)
}

/// A non-blocking fd. `pollable` is false for fds epoll refuses (regular files,
/// /dev/null): those are always ready, so the loop just reads or writes them.
pub struct Fd {
    pub file: File,
    pub pollable: bool,
}

impl Fd {
    pub fn from_owned(fd: OwnedFd) -> io::Result<Fd> {
        set_nonblocking(fd.as_raw_fd(), true)?;
        Ok(Fd {
            file: File::from(fd),
            pollable: true,
        })
    }

    /// Borrows one of the process's standard fds without taking ownership of
    /// its lifetime semantics: the returned `File` is a duplicate, so closing
    /// it does not close fd 0/1 for anyone else in the process.
    pub fn dup_std(fd: RawFd) -> io::Result<Fd> {
        // SAFETY: F_DUPFD_CLOEXEC on a standard fd returns a new owned fd.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
        if new < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `new` is a fresh fd owned by nobody else.
        Fd::from_owned(unsafe { OwnedFd::from_raw_fd(new) })
    }

    pub fn raw(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Registers the fd; an fd that epoll rejects with EPERM is marked
    /// always-ready instead of failing.
    pub fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        match registry.register(&mut SourceFd(&self.raw()), token, interest) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                self.pollable = false;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub fn deregister(&self, registry: &Registry) {
        if self.pollable {
            let _ = registry.deregister(&mut SourceFd(&self.raw()));
        }
    }
}
