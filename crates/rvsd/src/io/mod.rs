//! The daemon's packet I/O layer: AF_PACKET mmap rings on Linux interfaces ([`ring`]), the
//! software fallbacks for what the kernel left to the NIC ([`offload`]), and the TAP device that
//! hands the host stack what the director claimed but does not own ([`tap`]).
//!
//! The only module of RVS with `unsafe`: raw socket options, `mmap`ed rings and interface
//! ioctls through `libc`. Every unsafe block carries a `// SAFETY:` comment. Nothing here
//! knows about services or connections.
#![allow(unsafe_code)]
// Until `rvsd run` uses the layer.
#![allow(dead_code, unused_imports)]

pub(crate) mod offload;
pub(crate) mod ring;
pub(crate) mod tap;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};

pub(crate) use offload::{CsumPartial, GsoInfo, GsoKind, OffloadError, VnetInfo};
pub(crate) use ring::{PacketSocket, RingOpts, RingStats, RxFrame, Vlan};
pub(crate) use tap::Tap;

/// Waits until at least one of `fds` is readable or `timeout` has passed; returns whether one
/// is readable. A signal interrupting the wait counts as a timeout (the caller's loop decides).
pub(crate) fn wait_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<bool> {
    let mut polls: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    // Round up, so a sub-millisecond timeout does not turn into a busy loop.
    let ms = timeout.as_micros().div_ceil(1000);
    let t = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    match nix::poll::poll(&mut polls, t) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates a socket (`libc::socket` arguments), close-on-exec.
fn socket(domain: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming `name`, or `InvalidInput` when the name cannot be an interface name.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes.len() >= libc::IFNAMSIZ
        || bytes.iter().any(|&b| b == 0 || b == b'/')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    // SAFETY: `ifreq` is plain old data (a name array and a union of integers, sockaddrs and
    // a pointer); all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(ifr)
}

/// Runs an interface ioctl (`SIOCGIF*`/`SIOCSIF*`) on `fd` with `ifr`.
fn ioctl_ifreq(fd: BorrowedFd<'_>, req: libc::Ioctl, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request used here reads and/or writes one `struct ifreq`, which `ifr`
    // points to for the duration of the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, ifr as *mut libc::ifreq) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The index of interface `name` in the network namespace of `fd`.
fn if_index(fd: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    let mut ifr = ifreq(name)?;
    ioctl_ifreq(fd, libc::SIOCGIFINDEX, &mut ifr)?;
    // SAFETY: SIOCGIFINDEX filled the `ifru_ifindex` member.
    let idx = unsafe { ifr.ifr_ifru.ifru_ifindex };
    u32::try_from(idx).map_err(|_| io::Error::other("negative interface index"))
}

/// The hardware address of Ethernet interface `name`.
fn if_mac(fd: BorrowedFd<'_>, name: &str) -> io::Result<[u8; 6]> {
    let mut ifr = ifreq(name)?;
    ioctl_ifreq(fd, libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    if sa.sa_family != libc::ARPHRD_ETHER {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{name} is not an Ethernet interface"),
        ));
    }
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data) {
        *d = s as u8;
    }
    Ok(mac)
}

/// The MTU of interface `name`.
fn if_mtu(fd: BorrowedFd<'_>, name: &str) -> io::Result<u32> {
    let mut ifr = ifreq(name)?;
    ioctl_ifreq(fd, libc::SIOCGIFMTU, &mut ifr)?;
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::other("negative MTU"))
}

/// Sets `IFF_UP` on interface `name`.
fn if_set_up(fd: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let mut ifr = ifreq(name)?;
    ioctl_ifreq(fd, libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member, which is then updated and written.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    ioctl_ifreq(fd, libc::SIOCSIFFLAGS, &mut ifr)
}

/// Sets an integer socket option.
fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    setsockopt(fd, level, opt, &value)
}

/// Sets a socket option whose value is the plain-data `value`.
fn setsockopt<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    opt: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of `size_of::<T>()` bytes, which is what the options
    // used here (`int`, `struct tpacket_req`) expect; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod testns {
    //! Running test code inside lab hosts: threads that join a host's network namespace.

    use std::fs::File;

    use nix::sched::{CloneFlags, setns};
    use rvs_lab::{HostId, Lab, LabError, LinkOpts};

    /// Two hosts `a` and `b` joined by one veth pair, each end with an IPv4 and an IPv6
    /// address (`192.0.2.1`/`2001:db8::1` on `a`, `.2`/`::2` on `b`).
    pub(crate) struct Pair {
        pub(crate) lab: Lab,
        pub(crate) a: HostId,
        pub(crate) b: HostId,
        pub(crate) ns_a: String,
        pub(crate) ns_b: String,
        pub(crate) a_dev: String,
        pub(crate) b_dev: String,
    }

    /// A lab, or `None` after printing a loud skip notice when the test cannot run (no root,
    /// no `ip`). Under `RVS_E2E=1` a skip is a failure.
    pub(crate) fn lab_or_skip(test: &str) -> Option<Lab> {
        match Lab::new() {
            Ok(lab) => Some(lab),
            Err(e @ (LabError::NotRoot(_) | LabError::ToolMissing { .. })) => {
                if std::env::var_os("RVS_E2E").is_some_and(|v| v == "1") {
                    panic!("{test}: cannot run under RVS_E2E=1: {e}");
                }
                eprintln!("SKIPPED: {test}: {e} (needs root and iproute2)");
                None
            }
            Err(e) => panic!("{test}: lab: {e}"),
        }
    }

    /// The two-host topology of [`Pair`], or `None` (skipped, see [`lab_or_skip`]).
    pub(crate) fn pair(test: &str) -> Option<Pair> {
        let lab = lab_or_skip(test)?;
        let a = lab.host("a").expect("host a");
        let b = lab.host("b").expect("host b");
        let net = |s: &str| s.parse().expect("address");
        let link = lab
            .link(
                a,
                b,
                &LinkOpts {
                    addrs_a: vec![net("192.0.2.1/24"), net("2001:db8::1/64")],
                    addrs_b: vec![net("192.0.2.2/24"), net("2001:db8::2/64")],
                    ..LinkOpts::default()
                },
            )
            .expect("link");
        Some(Pair {
            ns_a: lab.netns_name(a).expect("netns"),
            ns_b: lab.netns_name(b).expect("netns"),
            a_dev: link.a_dev,
            b_dev: link.b_dev,
            lab,
            a,
            b,
        })
    }

    /// Moves the calling thread into network namespace `netns` (a name under `/run/netns`).
    /// Call it only on threads the test spawned.
    pub(crate) fn enter(netns: &str) {
        let ns = File::open(format!("/run/netns/{netns}")).expect("open netns");
        setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
    }

    /// Runs `f` on a thread that has joined network namespace `netns`; a panic in `f` is
    /// propagated.
    pub(crate) fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(netns);
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}
