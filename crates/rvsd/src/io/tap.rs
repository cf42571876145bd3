//! The exception path: a TAP device through which frames the director claimed but does not own
//! (an ICMP error about no known connection, a fragment of the host's own traffic) reach the
//! host stack, as if they had arrived on an interface.
//!
//! Why by hand rather than a TUN/TAP crate: creating the device is one `TUNSETIFF` ioctl, and
//! the crates that wrap it pull in address management, async runtimes and Windows support.
//!
//! The device is made quiet: no IPv6 link-local address (`addr_gen_mode` 1: no DAD, router or
//! MLD solicitations are sent into it), no router advertisements or autoconfiguration; IPv4
//! sends nothing to it unless routes point there. What the host does send is never read unless
//! [`Tap::drain`] is called; the kernel drops it once the device queue (`txqueuelen`) is full,
//! which costs nothing. IPv6 stays enabled, so IPv6 frames can be injected.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{if_mac, if_set_up, ifreq, socket};

/// A TAP device (`IFF_TAP | IFF_NO_PI`), up, removed when dropped (the device is not
/// persistent: closing its descriptor deletes it).
#[derive(Debug)]
pub(crate) struct Tap {
    file: File,
    name: String,
    mac: [u8; 6],
}

impl Tap {
    /// Creates TAP device `name` (at most 15 bytes) in the calling thread's network namespace,
    /// configures it (see the module docs; reverse-path filtering relaxed, see below) and brings
    /// it up. Needs `CAP_NET_ADMIN`.
    ///
    /// Reverse-path filtering would drop what arrives on the TAP from a source routed via
    /// another interface. The kernel applies the larger of `conf/all/rp_filter` and the
    /// device's value, so the device gets 0 (off) when `all` is 0, and 2 (loose) otherwise —
    /// the most permissive setting reachable without changing the host's global policy.
    pub(crate) fn open(name: &str) -> io::Result<Tap> {
        let mut ifr = ifreq(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| io::Error::new(e.kind(), format!("/dev/net/tun: {e}")))?;
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes the `struct ifreq` that `ifr` points to for the
        // duration of the call.
        let r = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                libc::TUNSETIFF,
                &mut ifr as *mut libc::ifreq,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("TUNSETIFF {name}: {e}")));
        }
        let ctl = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
        let mac = if_mac(ctl.as_fd(), name)?;
        for (key, value) in [
            ("addr_gen_mode", "1"),
            ("accept_ra", "0"),
            ("autoconf", "0"),
        ] {
            // Absent when IPv6 is disabled on this host: nothing to quieten then.
            match std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/{key}"), value) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(io::Error::new(e.kind(), format!("{name}: ipv6 {key}: {e}")));
                }
                _ => {}
            }
        }
        let all = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter")?;
        let rp = if all.trim() == "0" { "0" } else { "2" };
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), rp)
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: rp_filter: {e}")))?;
        if_set_up(ctl.as_fd(), name)
            .map_err(|e| io::Error::new(e.kind(), format!("{name}: up: {e}")))?;
        Ok(Tap {
            file,
            name: name.to_owned(),
            mac,
        })
    }

    /// The device name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The device's hardware address: frames for the host must be addressed to it.
    pub(crate) fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The device descriptor (readable when the host sent something to the TAP).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Hands `frame` (Ethernet header on, destination already [`Tap::mac`], checksums
    /// complete) to the host stack.
    pub(crate) fn write_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        let n = self.file.write(frame)?;
        if n != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("{}: short write {n} of {}", self.name, frame.len()),
            ));
        }
        Ok(())
    }

    /// Addresses `frame` to the TAP (rewrites the Ethernet destination) and hands it to the
    /// host stack. `InvalidInput` for a frame shorter than an Ethernet header.
    pub(crate) fn deliver(&mut self, frame: &mut [u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame shorter than 14 bytes",
            ));
        }
        frame[..6].copy_from_slice(&self.mac);
        self.write_frame(frame)
    }

    /// Reads and discards what the host sent to the TAP, without blocking; returns the number
    /// of frames discarded.
    pub(crate) fn drain(&mut self) -> usize {
        let mut buf = vec![0u8; 65536 + 64];
        let mut n = 0;
        while let Ok(len) = self.file.read(&mut buf) {
            if len == 0 {
                break;
            }
            n += 1;
        }
        n
    }
}
