//! `PacketSocket`: one interface's AF_PACKET TPACKET_V2 RX and TX rings.
//!
//! RX: a `SOCK_RAW`/`ETH_P_ALL` socket bound to the interface, `PACKET_VNET_HDR` on (each frame
//! is preceded by a `virtio_net_hdr` describing unfinished checksums and GSO super-packets, see
//! [`VnetInfo`]), `PACKET_IGNORE_OUTGOING` on, optionally in a `PACKET_FANOUT_HASH` group, and
//! frames large enough for a 64 KiB super-packet. TX: a second socket bound to the same
//! interface with protocol 0 (so it receives nothing), its own ring, `PACKET_LOSS` on (a frame
//! the kernel refuses, e.g. over the MTU, is skipped instead of wedging the ring), kicked with
//! one `sendto` per burst.
//!
//! Memory ordering with the kernel: a frame's `tp_status` word is the hand-over point; it is
//! read with `Acquire` before the frame is touched and written with `Release` after.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::offload::{self, VIRTIO_NET_HDR_LEN, VnetInfo};
use super::{if_index, if_mac, if_mtu, setsockopt, setsockopt_int, socket};

/// Size of `struct tpacket2_hdr`, where `struct sockaddr_ll` starts (already 16-aligned).
const V2_HDR: usize = std::mem::size_of::<libc::tpacket2_hdr>();
/// Offset of `sll_pkttype` in `struct sockaddr_ll`.
const SLL_PKTTYPE: usize = 10;
/// Where a TX frame's data starts without `PACKET_TX_HAS_OFF`: `TPACKET2_HDRLEN - sizeof(sll)`.
const TX_DATA: usize = libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
/// The smallest ring block: a power of two that is a multiple of any page size up to 64 KiB.
const MIN_BLOCK: usize = 64 * 1024;
/// Blocks grow (as powers of two, like the kernel allocates them) up to this size while they
/// would hold fewer than 8 frames, so little of each block is wasted.
const MAX_BLOCK: usize = 1024 * 1024;
/// Largest ring accepted (per ring).
const MAX_RING_BYTES: usize = 256 * 1024 * 1024;
/// Largest frame size accepted.
const MAX_FRAME_SIZE: u32 = 1024 * 1024;
/// Smallest frame size accepted (headers, vnet header and a minimum Ethernet frame).
const MIN_FRAME_SIZE: u32 = 256;

/// Ring sizes and fanout of a [`PacketSocket`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RingOpts {
    /// RX ring frames (rounded up to fill whole blocks). Default 256.
    pub(crate) rx_frames: u32,
    /// Bytes per RX frame, ring headers included; a multiple of 16. Default 65792: a 64 KiB
    /// super-packet with its Ethernet header, after the tpacket and virtio headers. Frames
    /// longer than fit are skipped and counted (`rx_truncated`).
    pub(crate) rx_frame_size: u32,
    /// TX ring frames (rounded up to fill whole blocks). Default 256.
    pub(crate) tx_frames: u32,
    /// Bytes per TX frame; a frame of up to `tx_frame_size - 32` bytes can be sent. Default
    /// 16384 (jumbo frames fit).
    pub(crate) tx_frame_size: u32,
    /// `PACKET_FANOUT_HASH` group to join: every socket of one interface that shares the id
    /// gets a share of its traffic by flow hash (the NIC's RSS hash when the driver supplies
    /// one, else the kernel's symmetric hash of addresses, protocol and ports; IP fragments
    /// hash on addresses only, so they may land on another socket than the flow's unfragmented
    /// packets, and ICMP errors hash on their outer addresses). Ids are per network namespace
    /// and a group is tied to one interface, so each interface needs its own id. `None`: no
    /// fanout.
    pub(crate) fanout_group: Option<u16>,
}

impl Default for RingOpts {
    fn default() -> Self {
        RingOpts {
            rx_frames: 256,
            rx_frame_size: 65792,
            tx_frames: 256,
            tx_frame_size: 16384,
            fanout_group: None,
        }
    }
}

/// Counters of a [`PacketSocket`] since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RingStats {
    /// Frames handed to the caller by [`PacketSocket::recv_burst`].
    pub(crate) rx: u64,
    /// Frames skipped because they did not fit in a ring frame (`tp_snaplen < tp_len`).
    pub(crate) rx_truncated: u64,
    /// Frames skipped as not for us: outgoing, or for another host (promiscuous mode).
    pub(crate) rx_ignored: u64,
    /// Frames queued for transmission by [`PacketSocket::send_frame`].
    pub(crate) tx: u64,
    /// Frames not queued (TX ring full after a flush, too large for a ring frame) or refused.
    pub(crate) tx_dropped: u64,
    /// Failed or partial `sendto` kicks (e.g. `ENOBUFS`); the frame being sent is lost.
    pub(crate) tx_errors: u64,
    /// Frames the kernel dropped because the RX ring was full (`PACKET_STATISTICS`).
    pub(crate) kernel_drops: u64,
}

/// An 802.1Q/802.1ad tag the kernel stripped from a received frame into metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Vlan {
    /// Tag protocol identifier (0x8100 or 0x88a8).
    pub(crate) tpid: u16,
    /// Tag control information (PCP, DEI, VLAN id).
    pub(crate) tci: u16,
}

/// A frame in the RX ring, lent to the [`PacketSocket::recv_burst`] callback.
#[derive(Debug)]
pub(crate) struct RxFrame<'a> {
    /// The frame from its Ethernet header on, writable in place (the ring slot is the
    /// caller's until the callback returns). When [`RxFrame::vlan`] is set, its tag is not in
    /// these bytes.
    pub(crate) data: &'a mut [u8],
    /// What the kernel left unfinished: partial checksum, GSO; see [`offload::finish`].
    pub(crate) vnet: VnetInfo,
    /// `sll_pkttype`: `PACKET_HOST`, `PACKET_BROADCAST` or `PACKET_MULTICAST`.
    pub(crate) pkt_type: u8,
    /// A VLAN tag stripped by the kernel (re-insert with [`offload::insert_vlan`]).
    pub(crate) vlan: Option<Vlan>,
}

/// A shared memory mapping of a packet ring, unmapped on drop.
#[derive(Debug)]
struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned by exactly one `Mmap`; nothing in it is tied to a thread, so
// moving the owner to another thread (a worker) is sound.
unsafe impl Send for Mmap {}

impl Mmap {
    fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mmap> {
        // SAFETY: a fresh shared mapping of the socket's ring (no address hint, no existing
        // memory aliased); the result is checked for MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap at 0"))?;
        Ok(Mmap { ptr, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `new`, and no reference into it
        // outlives `self` (frames are only lent for the duration of a callback).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// How a ring is cut into blocks and frames (`struct tpacket_req`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    block_size: usize,
    block_nr: usize,
    frame_size: usize,
    frames_per_block: usize,
}

impl Geometry {
    /// Blocks are powers of two (the kernel allocates each as one `get_order` chunk, so any
    /// other size wastes the rest of the chunk) holding whole frames.
    fn new(frame_size: u32, frames: u32) -> io::Result<Geometry> {
        let bad = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&frame_size)
            || !frame_size.is_multiple_of(16)
        {
            return Err(bad(format!(
                "ring frame size {frame_size}: must be a multiple of 16 in {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE}"
            )));
        }
        if frames == 0 {
            return Err(bad("ring of 0 frames".to_owned()));
        }
        let frame_size = frame_size as usize;
        let mut block_size = frame_size.next_power_of_two().max(MIN_BLOCK);
        while block_size < MAX_BLOCK && block_size < 8 * frame_size {
            block_size *= 2;
        }
        let frames_per_block = block_size / frame_size;
        let block_nr = (frames as usize).div_ceil(frames_per_block);
        if block_nr.saturating_mul(block_size) > MAX_RING_BYTES {
            return Err(bad(format!(
                "ring of {frames} frames of {frame_size} bytes exceeds {MAX_RING_BYTES} bytes"
            )));
        }
        Ok(Geometry {
            block_size,
            block_nr,
            frame_size,
            frames_per_block,
        })
    }

    fn frame_nr(&self) -> usize {
        self.block_nr * self.frames_per_block
    }

    fn bytes(&self) -> usize {
        self.block_nr * self.block_size
    }

    /// Byte offset of frame `i` in the mapping.
    fn offset(&self, i: usize) -> usize {
        (i / self.frames_per_block) * self.block_size
            + (i % self.frames_per_block) * self.frame_size
    }
}

/// A mapped TPACKET_V2 ring and the index of the next frame to look at.
#[derive(Debug)]
struct Ring {
    map: Mmap,
    geo: Geometry,
    head: usize,
}

impl Ring {
    /// Sets up ring `opt` (`PACKET_RX_RING`/`PACKET_TX_RING`) on `fd` and maps it.
    fn new(fd: BorrowedFd<'_>, opt: libc::c_int, geo: Geometry) -> io::Result<Ring> {
        let req = libc::tpacket_req {
            tp_block_size: geo.block_size as libc::c_uint,
            tp_block_nr: geo.block_nr as libc::c_uint,
            tp_frame_size: geo.frame_size as libc::c_uint,
            tp_frame_nr: geo.frame_nr() as libc::c_uint,
        };
        setsockopt(fd, libc::SOL_PACKET, opt, &req)?;
        let map = Mmap::new(fd, geo.bytes())?;
        Ok(Ring { map, geo, head: 0 })
    }

    /// The start of frame `i` (`i < frame_nr`).
    fn frame(&self, i: usize) -> *mut u8 {
        debug_assert!(i < self.geo.frame_nr());
        // Callers pass `head`, always below `frame_nr`, so the offset lies inside the mapping.
        self.map.ptr.as_ptr().wrapping_add(self.geo.offset(i))
    }

    /// The `tp_status` word of frame `i`, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: every frame starts 16-byte aligned with a `tpacket2_hdr` whose first field
        // is the u32 `tp_status`; the kernel and we access it concurrently, which is what an
        // atomic is for, and the reference lives no longer than the mapping (`&self`).
        unsafe { AtomicU32::from_ptr(self.frame(i).cast::<u32>()) }
    }

    fn advance(&mut self) {
        self.head = (self.head + 1) % self.geo.frame_nr();
    }
}

/// One interface's packet socket pair: an RX ring (with virtio headers, fanout) and a TX ring.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    ifname: String,
    ifindex: u32,
    mac: [u8; 6],
    mtu: u32,
    vnet_hdr: bool,
    // Rings before their sockets: fields drop in order, so each ring is unmapped before its
    // socket is closed.
    rx: Ring,
    tx: Ring,
    rx_fd: OwnedFd,
    tx_fd: OwnedFd,
    /// Frames queued since the last successful kick.
    pending: usize,
    stats: RingStats,
    kernel_drops: Cell<u64>,
}

impl PacketSocket {
    /// Opens the RX and TX rings on interface `ifname` (in the calling thread's network
    /// namespace). Needs `CAP_NET_RAW`. Fails with `InvalidInput` for bad [`RingOpts`].
    pub(crate) fn open(ifname: &str, opts: &RingOpts) -> io::Result<PacketSocket> {
        let rx_geo = Geometry::new(opts.rx_frame_size, opts.rx_frames)?;
        let tx_geo = Geometry::new(opts.tx_frame_size, opts.tx_frames)?;
        let ctx =
            |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{ifname}: {what}: {e}"));

        // Protocol 0 until the ring is ready: the socket receives nothing before `bind`.
        let rx_fd =
            socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(|e| ctx("packet socket", e))?;
        let fd = rx_fd.as_fd();
        let ifindex = if_index(fd, ifname).map_err(|e| ctx("interface index", e))?;
        let mac = if_mac(fd, ifname).map_err(|e| ctx("hardware address", e))?;
        let mtu = if_mtu(fd, ifname).map_err(|e| ctx("MTU", e))?;
        let v2 = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_VERSION, v2)
            .map_err(|e| ctx("PACKET_VERSION", e))?;
        // Without virtio headers GSO super-packets could not be segmented (no gso_size): only
        // a kernel that refuses the option gets the tp_status fallback (checksums only).
        let vnet_hdr = match setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1) {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => false,
            Err(e) => return Err(ctx("PACKET_VNET_HDR", e)),
        };
        setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
            .map_err(|e| ctx("PACKET_IGNORE_OUTGOING", e))?;
        let rx = Ring::new(fd, libc::PACKET_RX_RING, rx_geo).map_err(|e| ctx("RX ring", e))?;
        if let Some(group) = opts.fanout_group {
            // Until the socket has joined its group it would receive every frame on its own,
            // duplicating the other members' share: drop everything meanwhile.
            attach_drop_all(fd).map_err(|e| ctx("SO_ATTACH_FILTER", e))?;
            bind(fd, libc::ETH_P_ALL as u16, ifindex).map_err(|e| ctx("bind", e))?;
            let arg = libc::c_int::from(group) | ((libc::PACKET_FANOUT_HASH as libc::c_int) << 16);
            setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, arg)
                .map_err(|e| ctx("PACKET_FANOUT", e))?;
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, 0)
                .map_err(|e| ctx("SO_DETACH_FILTER", e))?;
        } else {
            bind(fd, libc::ETH_P_ALL as u16, ifindex).map_err(|e| ctx("bind", e))?;
        }

        let tx_fd =
            socket(libc::AF_PACKET, libc::SOCK_RAW, 0).map_err(|e| ctx("packet socket", e))?;
        let fd = tx_fd.as_fd();
        setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_VERSION, v2)
            .map_err(|e| ctx("PACKET_VERSION", e))?;
        setsockopt_int(fd, libc::SOL_PACKET, libc::PACKET_LOSS, 1)
            .map_err(|e| ctx("PACKET_LOSS", e))?;
        let tx = Ring::new(fd, libc::PACKET_TX_RING, tx_geo).map_err(|e| ctx("TX ring", e))?;
        // Protocol 0: bound to the interface for sending, never receives.
        bind(fd, 0, ifindex).map_err(|e| ctx("bind", e))?;

        Ok(PacketSocket {
            ifname: ifname.to_owned(),
            ifindex,
            mac,
            mtu,
            vnet_hdr,
            rx,
            tx,
            rx_fd,
            tx_fd,
            pending: 0,
            stats: RingStats::default(),
            kernel_drops: Cell::new(0),
        })
    }

    /// The interface index.
    pub(crate) fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface name.
    pub(crate) fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface's hardware address (when the socket was opened).
    pub(crate) fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The interface's current MTU (asked from the kernel; the MTU at open if that fails).
    pub(crate) fn mtu(&self) -> u32 {
        if_mtu(self.rx_fd.as_fd(), &self.ifname).unwrap_or(self.mtu)
    }

    /// True when frames come with virtio headers (always on kernels that support them; if
    /// not, [`RxFrame::vnet`] has checksum information only and super-packets cannot be
    /// segmented).
    pub(crate) fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Frames in the RX and TX rings (the requested numbers rounded up to whole blocks).
    pub(crate) fn ring_frames(&self) -> (usize, usize) {
        (self.rx.geo.frame_nr(), self.tx.geo.frame_nr())
    }

    /// The RX socket, readable when a frame waits in the ring (for `poll`, see
    /// [`super::wait_readable`]).
    pub(crate) fn rx_fd(&self) -> BorrowedFd<'_> {
        self.rx_fd.as_fd()
    }

    /// Hands up to `max` received frames to `f`, in arrival order, returning their count;
    /// returns at once when the ring is empty. Frames that are outgoing or for another host,
    /// or that did not fit a ring frame, are skipped and counted (they do not count towards
    /// `max`).
    pub(crate) fn recv_burst(&mut self, max: usize, mut f: impl FnMut(RxFrame<'_>)) -> usize {
        let mut handed = 0;
        for _ in 0..self.rx.geo.frame_nr() {
            if handed >= max {
                break;
            }
            let i = self.rx.head;
            let status = self.rx.status(i).load(Ordering::Acquire);
            if status & libc::TP_STATUS_USER == 0 {
                break;
            }
            let base = self.rx.frame(i);
            // SAFETY: the kernel handed frame `i` to us (TP_STATUS_USER, read with Acquire
            // above, so its writes are visible); it starts with a `tpacket2_hdr` followed by a
            // `sockaddr_ll`, both inside the frame.
            let (hdr, pkt_type) = unsafe {
                (
                    base.cast::<libc::tpacket2_hdr>().read(),
                    base.add(V2_HDR + SLL_PKTTYPE).read(),
                )
            };
            match self.classify(&hdr, pkt_type) {
                Rx::Deliver => {
                    let mac = usize::from(hdr.tp_mac);
                    let len = hdr.tp_snaplen as usize;
                    let vnet = if self.vnet_hdr {
                        let mut v = [0u8; VIRTIO_NET_HDR_LEN];
                        // SAFETY: `classify` checked that the virtio header (right before the
                        // frame data) and the data lie inside this ring frame.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                base.add(mac - VIRTIO_NET_HDR_LEN),
                                v.as_mut_ptr(),
                                v.len(),
                            )
                        };
                        VnetInfo::from_virtio_net_hdr(&v)
                    } else {
                        VnetInfo::default()
                    };
                    // SAFETY: as above, `mac..mac + len` lies inside frame `i`, which stays
                    // ours (and nobody else's: no other slice into it exists) until its status
                    // is handed back below, after `f` returned and the borrow ended.
                    let data = unsafe { std::slice::from_raw_parts_mut(base.add(mac), len) };
                    let vnet = if self.vnet_hdr {
                        vnet
                    } else {
                        status_vnet(status, data)
                    };
                    let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then_some(Vlan {
                        tpid: if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                            hdr.tp_vlan_tpid
                        } else {
                            0x8100
                        },
                        tci: hdr.tp_vlan_tci,
                    });
                    f(RxFrame {
                        data,
                        vnet,
                        pkt_type,
                        vlan,
                    });
                    handed += 1;
                    self.stats.rx += 1;
                }
                Rx::Ignored => self.stats.rx_ignored += 1,
                Rx::Truncated => self.stats.rx_truncated += 1,
            }
            self.rx
                .status(i)
                .store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.rx.advance();
        }
        handed
    }

    fn classify(&self, hdr: &libc::tpacket2_hdr, pkt_type: u8) -> Rx {
        if pkt_type == libc::PACKET_OUTGOING || pkt_type == libc::PACKET_OTHERHOST {
            return Rx::Ignored;
        }
        let mac = usize::from(hdr.tp_mac);
        let len = hdr.tp_snaplen as usize;
        let vnet = if self.vnet_hdr { VIRTIO_NET_HDR_LEN } else { 0 };
        let fits = mac >= libc::TPACKET2_HDRLEN + vnet && mac + len <= self.rx.geo.frame_size;
        if hdr.tp_snaplen < hdr.tp_len || !fits {
            return Rx::Truncated;
        }
        Rx::Deliver
    }

    /// Queues `frame` (Ethernet header on) in the TX ring; it leaves with the next
    /// [`PacketSocket::flush`]. A full ring is flushed once and retried. Every error means
    /// the frame was dropped and counted in `tx_dropped` (`WouldBlock`: ring still full;
    /// `InvalidInput`: larger than a ring frame or shorter than an Ethernet header), so callers
    /// need not log per frame. Frames over the interface MTU are dropped by the kernel.
    pub(crate) fn send_frame(&mut self, frame: &[u8]) -> io::Result<()> {
        if frame.len() > self.tx.geo.frame_size - TX_DATA || frame.len() < 14 {
            self.stats.tx_dropped += 1;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: frame of {} bytes", self.ifname, frame.len()),
            ));
        }
        let i = self.tx.head;
        if !self.tx_slot_free(i) {
            // A failed kick is counted in `flush`; the slot check below decides.
            let _ = self.flush();
            if !self.tx_slot_free(i) {
                self.stats.tx_dropped += 1;
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let base = self.tx.frame(i);
        // SAFETY: slot `i` is ours (status AVAILABLE read with Acquire); the data area starts
        // at TX_DATA and `frame.len() <= frame_size - TX_DATA` was checked, so the copy stays
        // inside the frame; the length fields are inside its `tpacket2_hdr`.
        unsafe {
            std::ptr::copy_nonoverlapping(frame.as_ptr(), base.add(TX_DATA), frame.len());
            let hdr = base.cast::<libc::tpacket2_hdr>();
            std::ptr::addr_of_mut!((*hdr).tp_len).write(frame.len() as u32);
            std::ptr::addr_of_mut!((*hdr).tp_snaplen).write(frame.len() as u32);
        }
        self.tx
            .status(i)
            .store(libc::TP_STATUS_SEND_REQUEST, Ordering::Release);
        self.tx.advance();
        self.pending += 1;
        self.stats.tx += 1;
        Ok(())
    }

    /// True when TX slot `i` can be filled (reclaiming a slot the kernel refused).
    fn tx_slot_free(&mut self, i: usize) -> bool {
        let st = self.tx.status(i);
        match st.load(Ordering::Acquire) {
            libc::TP_STATUS_AVAILABLE => true,
            // Not expected with PACKET_LOSS; reclaim rather than wedge the ring.
            libc::TP_STATUS_WRONG_FORMAT => {
                self.stats.tx_dropped += 1;
                st.store(libc::TP_STATUS_AVAILABLE, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Sends the queued frames: one `sendto(NULL)` for the burst, not waiting for completion.
    /// Transient kernel refusals (`ENOBUFS`, `EAGAIN`, `EINTR`) are counted in `tx_errors` and
    /// return `Ok` (the frames not yet sent stay queued for the next flush); other errors
    /// (`ENETDOWN`, `ENXIO`...) are returned.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        // SAFETY: sendto(2) with no buffer and no address: the kernel sends the TX ring's
        // SEND_REQUEST frames; nothing of ours is read or written through pointers.
        let r = unsafe {
            libc::sendto(
                self.tx_fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r >= 0 {
            self.pending = 0;
            return Ok(());
        }
        let e = io::Error::last_os_error();
        self.stats.tx_errors += 1;
        match e.raw_os_error() {
            Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => Ok(()),
            _ => Err(io::Error::new(
                e.kind(),
                format!("{}: sendto: {e}", self.ifname),
            )),
        }
    }

    /// The counters; also collects the kernel's drop count (`PACKET_STATISTICS`, which the
    /// kernel resets on every read).
    pub(crate) fn stats(&self) -> RingStats {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` is a `tpacket_stats` and `len` its size; the kernel writes at most
        // `len` bytes into it and updates `len`.
        let r = unsafe {
            libc::getsockopt(
                self.rx_fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            self.kernel_drops
                .set(self.kernel_drops.get() + u64::from(st.tp_drops));
        }
        RingStats {
            kernel_drops: self.kernel_drops.get(),
            ..self.stats
        }
    }
}

/// What to do with a received ring frame.
enum Rx {
    Deliver,
    Ignored,
    Truncated,
}

/// Checksum metadata from `tp_status` alone, for kernels without `PACKET_VNET_HDR`.
fn status_vnet(status: u32, frame: &[u8]) -> VnetInfo {
    VnetInfo {
        csum: if status & libc::TP_STATUS_CSUMNOTREADY != 0 {
            offload::partial_from_headers(frame)
        } else {
            None
        },
        csum_valid: status & libc::TP_STATUS_CSUM_VALID != 0,
        gso: None,
    }
}

/// Binds packet socket `fd` to interface `ifindex` for `protocol` (host order; 0: send only).
fn bind(fd: BorrowedFd<'_>, protocol: u16, ifindex: u32) -> io::Result<()> {
    // SAFETY: `sockaddr_ll` is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = i32::try_from(ifindex).map_err(|_| io::Error::other("interface index"))?;
    // SAFETY: `sll` is a live `sockaddr_ll` and the length passed is its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches a classic BPF filter that drops every frame (`ret #0`).
fn attach_drop_all(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut ret0 = [libc::sock_filter {
        code: 0x06, // BPF_RET | BPF_K
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: ret0.as_mut_ptr(),
    };
    // The kernel copies the program during the call; `ret0` outlives it.
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::offload::tests::check_wire;
    use crate::io::testns::{Pair, enter, in_netns, pair};
    use crate::io::wait_readable;
    use std::collections::{BTreeMap, HashSet};
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::sync::{Barrier, Mutex};
    use std::time::{Duration, Instant};

    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    /// Hang guard for the root tests (not a performance threshold).
    const DEADLINE: Duration = Duration::from_secs(60);

    /// (is TCP, source port, destination port) of an untagged TCP/UDP frame.
    fn ports(f: &[u8]) -> Option<(bool, u16, u16)> {
        let p = SlicedPacket::from_ethernet(f).ok()?;
        match p.transport? {
            TransportSlice::Tcp(t) => Some((true, t.source_port(), t.destination_port())),
            TransportSlice::Udp(u) => Some((false, u.source_port(), u.destination_port())),
            _ => None,
        }
    }

    fn addr(v6: bool, host: u8, port: u16) -> SocketAddr {
        if v6 {
            SocketAddr::new(format!("2001:db8::{host}").parse().unwrap(), port)
        } else {
            SocketAddr::new(format!("192.0.2.{host}").parse().unwrap(), port)
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// What the RX side of a TCP transfer saw.
    #[derive(Default)]
    struct Seen {
        isn: Option<u32>,
        chunks: BTreeMap<u32, Vec<u8>>,
        gso_frames: usize,
        partial_frames: usize,
        segments: usize,
    }

    /// A real TCP transfer from `a` to `b` (1 MiB, TSO on veth): the ring on `b` must show
    /// super-packets and partial checksums, whose finished frames are valid, MTU-sized, and
    /// carry exactly the bytes sent.
    fn tcp_transfer(p: &Pair, v6: bool) {
        let port = if v6 { 5006 } else { 5004 };
        let data = pattern(1 << 20);
        let ready = Barrier::new(2);
        let (seen, stats) = std::thread::scope(|s| {
            let receiver = s.spawn(|| {
                enter(&p.ns_b);
                let mut ps = PacketSocket::open(&p.b_dev, &RingOpts::default()).unwrap();
                assert!(
                    ps.has_vnet_hdr(),
                    "PACKET_VNET_HDR with TPACKET_V2 on this kernel"
                );
                let listener = TcpListener::bind(addr(v6, 2, port)).unwrap();
                listener.set_nonblocking(true).unwrap();
                ready.wait();
                let mut stream: Option<TcpStream> = None;
                let mut received = 0usize;
                let mut eof = false;
                let mut seen = Seen::default();
                let mut scratch = Vec::new();
                let start = Instant::now();
                loop {
                    assert!(
                        start.elapsed() < DEADLINE,
                        "transfer stuck: {received} bytes read"
                    );
                    let n = ps.recv_burst(64, |f| {
                        let Some((true, _, dport)) = ports(f.data) else {
                            return;
                        };
                        if dport != port {
                            return;
                        }
                        if f.vnet.gso.is_some() {
                            seen.gso_frames += 1;
                            assert!(f.vnet.csum.is_some(), "super-packets come with NEEDS_CSUM");
                        }
                        if f.vnet.csum.is_some() {
                            seen.partial_frames += 1;
                        }
                        let gso_size = f.vnet.gso.map(|g| usize::from(g.size));
                        super::offload::finish(f.data, &f.vnet, &mut scratch, |seg| {
                            assert!(seg.len() <= 1514, "segment of {} bytes", seg.len());
                            let w = check_wire(seg);
                            if let Some(mss) = gso_size {
                                assert!(w.payload.len() <= mss);
                            }
                            seen.segments += 1;
                            if w.flags & 0x02 != 0 {
                                seen.isn = Some(w.seq);
                            }
                            if !w.payload.is_empty() {
                                seen.chunks.entry(w.seq).or_insert(w.payload);
                            }
                        })
                        .unwrap();
                    });
                    if eof && n == 0 {
                        break;
                    }
                    if stream.is_none()
                        && let Ok((st, _)) = listener.accept()
                    {
                        st.set_nonblocking(true).unwrap();
                        stream = Some(st);
                    }
                    if let Some(st) = stream.as_mut() {
                        let mut buf = vec![0u8; 1 << 16];
                        loop {
                            match st.read(&mut buf) {
                                Ok(0) => {
                                    eof = true;
                                    break;
                                }
                                Ok(k) => received += k,
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                                Err(e) => panic!("read: {e}"),
                            }
                        }
                    }
                    if n == 0 && !eof {
                        wait_readable(&[ps.rx_fd()], Duration::from_millis(5)).unwrap();
                    }
                }
                assert_eq!(received, 1 << 20);
                (seen, ps.stats())
            });
            let sender = s.spawn(|| {
                enter(&p.ns_a);
                ready.wait();
                let mut c = TcpStream::connect_timeout(&addr(v6, 2, port), DEADLINE).unwrap();
                c.set_write_timeout(Some(DEADLINE)).unwrap();
                c.write_all(&data).unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
                // Keep the socket until the receiver is done, so no RST races the FIN.
                c
            });
            let r = receiver
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e));
            drop(sender.join());
            r
        });
        assert_eq!(stats.kernel_drops, 0, "{stats:?}");
        assert_eq!(stats.rx_truncated, 0, "{stats:?}");
        assert!(seen.gso_frames > 0, "no super-packets seen (TSO on veth)");
        assert!(seen.partial_frames > 0, "no partial checksums seen");
        let isn = seen.isn.expect("SYN seen");
        let mut got = Vec::new();
        for (seq, bytes) in &seen.chunks {
            let off = seq.wrapping_sub(isn.wrapping_add(1)) as usize;
            assert!(off <= got.len(), "gap before offset {off}");
            let overlap = (got.len() - off).min(bytes.len());
            assert_eq!(
                &got[off..off + overlap],
                &bytes[..overlap],
                "retransmission differs"
            );
            got.extend_from_slice(&bytes[overlap..]);
        }
        assert!(
            got == data,
            "reassembled {} bytes differ from the {} sent",
            got.len(),
            data.len()
        );
        eprintln!(
            "tcp v6={v6}: {} super-packets, {} partial-checksum frames, {} segments",
            seen.gso_frames, seen.partial_frames, seen.segments
        );
    }

    #[test]
    fn rx_tcp_super_packets_segment_into_the_sent_stream() {
        let Some(p) = pair("rx_tcp_super_packets_segment_into_the_sent_stream") else {
            return;
        };
        tcp_transfer(&p, false);
        tcp_transfer(&p, true);
    }

    /// UDP from `a` to `b`: one plain datagram (partial checksum, completed in place) and one
    /// UDP_SEGMENT send (a USO super-packet, segmented into datagrams).
    #[test]
    fn rx_udp_partial_checksum_and_uso() {
        let Some(p) = pair("rx_udp_partial_checksum_and_uso") else {
            return;
        };
        for v6 in [false, true] {
            let ready = Barrier::new(2);
            std::thread::scope(|s| {
                let rx = s.spawn(|| {
                    enter(&p.ns_b);
                    let mut ps = PacketSocket::open(&p.b_dev, &RingOpts::default()).unwrap();
                    ready.wait();
                    let mut scratch = Vec::new();
                    let (mut plain, mut uso, mut datagrams) = (None, None, Vec::new());
                    let start = Instant::now();
                    while plain.is_none() || uso.is_none() {
                        assert!(start.elapsed() < DEADLINE, "datagrams not seen");
                        wait_readable(&[ps.rx_fd()], Duration::from_millis(50)).unwrap();
                        ps.recv_burst(16, |f| {
                            let Some((false, _, dport)) = ports(f.data) else {
                                return;
                            };
                            let vnet = f.vnet;
                            let mut outs = Vec::new();
                            super::offload::finish(f.data, &vnet, &mut scratch, |seg| {
                                outs.push(check_wire(seg).payload);
                            })
                            .unwrap();
                            match dport {
                                6000 => plain = Some((vnet, outs)),
                                6001 => {
                                    uso = Some(vnet);
                                    datagrams = outs;
                                }
                                _ => {}
                            }
                        });
                    }
                    (plain.unwrap(), uso.unwrap(), datagrams)
                });
                let tx = s.spawn(|| {
                    enter(&p.ns_a);
                    ready.wait();
                    let u = UdpSocket::bind(addr(v6, 1, 0)).unwrap();
                    u.send_to(&pattern(999), addr(v6, 2, 6000)).unwrap();
                    super::super::setsockopt_int(u.as_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, 1000)
                        .unwrap();
                    u.send_to(&pattern(10_500), addr(v6, 2, 6001)).unwrap();
                });
                tx.join().unwrap();
                let ((vnet, outs), uso, datagrams) = rx.join().unwrap();
                assert!(vnet.csum.is_some() && vnet.gso.is_none(), "{vnet:?}");
                assert_eq!(outs, vec![pattern(999)]);
                let g = uso.gso.expect("USO super-packet");
                assert_eq!(
                    (g.kind, g.size),
                    (super::offload::GsoKind::UdpL4, 1000),
                    "{uso:?}"
                );
                assert_eq!(datagrams.len(), 11);
                assert!(datagrams[..10].iter().all(|d| d.len() == 1000));
                assert_eq!(datagrams.concat(), pattern(10_500));
            });
        }
    }

    /// Frames queued on `b`'s TX ring reach a UDP socket on `a`; a ring of 8 frames is
    /// flushed when full, a frame over the MTU does not wedge it, and every frame is either
    /// delivered or counted as dropped.
    #[test]
    fn tx_frames_reach_a_kernel_socket() {
        let Some(p) = pair("tx_frames_reach_a_kernel_socket") else {
            return;
        };
        let a_mac = in_netns(&p.ns_a, || {
            let ctl = super::super::socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
            super::super::if_mac(ctl.as_fd(), &p.a_dev).unwrap()
        });
        for v6 in [false, true] {
            let ready = Barrier::new(2);
            let done = Mutex::new(None::<u64>);
            std::thread::scope(|s| {
                let sink = s.spawn(|| {
                    enter(&p.ns_a);
                    let u = UdpSocket::bind(addr(v6, 1, 7000)).unwrap();
                    u.set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    ready.wait();
                    let mut got = HashSet::new();
                    let mut expected = None;
                    let start = Instant::now();
                    let mut buf = [0u8; 2048];
                    loop {
                        assert!(start.elapsed() < DEADLINE, "frames missing: {}", got.len());
                        if let Some(n) = *done.lock().unwrap() {
                            expected = Some(n);
                        }
                        if expected.is_some_and(|n| got.len() as u64 >= n) {
                            break;
                        }
                        if let Ok((n, from)) = u.recv_from(&mut buf) {
                            assert_eq!(from, addr(v6, 2, 4242));
                            assert!(got.insert(buf[..n].to_vec()), "duplicate datagram");
                        }
                    }
                    // Nothing beyond what was counted as sent.
                    assert!(
                        u.recv_from(&mut buf).is_err(),
                        "more datagrams than counted"
                    );
                    got.len() as u64
                });
                let sender = s.spawn(|| {
                    enter(&p.ns_b);
                    ready.wait();
                    let opts = RingOpts {
                        rx_frames: 16,
                        tx_frames: 8,
                        ..RingOpts::default()
                    };
                    let mut ps = PacketSocket::open(&p.b_dev, &opts).unwrap();
                    assert_eq!(ps.ring_frames().1, 8);
                    let b_mac = ps.mac();
                    let frame = |payload: &[u8]| {
                        let b = PacketBuilder::ethernet2(b_mac, a_mac);
                        let b = if v6 {
                            let ip = |h: u8| match addr(true, h, 0).ip() {
                                std::net::IpAddr::V6(a) => a.octets(),
                                std::net::IpAddr::V4(_) => unreachable!(),
                            };
                            b.ipv6(ip(2), ip(1), 64)
                        } else {
                            b.ipv4([192, 0, 2, 2], [192, 0, 2, 1], 64)
                        };
                        let mut f = Vec::new();
                        b.udp(4242, 7000).write(&mut f, payload).unwrap();
                        f
                    };
                    // Over the 1500 MTU: the kernel skips it (PACKET_LOSS), the ring goes on.
                    ps.send_frame(&frame(&[0xa5; 1600])).unwrap();
                    for i in 0..99u32 {
                        let _ = ps.send_frame(&frame(format!("frame {i}").as_bytes()));
                    }
                    ps.flush().unwrap();
                    let st = ps.stats();
                    eprintln!("tx v6={v6}: {st:?}");
                    assert_eq!(st.tx + st.tx_dropped, 100, "{st:?}");
                    // What reaches the sink: everything queued but the oversized frame.
                    let delivered = st.tx - 1;
                    assert_eq!(st.tx_errors, 0, "{st:?}");
                    assert!(st.tx > 8, "the full ring was flushed and reused: {st:?}");
                    // Our own transmissions are not received (PACKET_IGNORE_OUTGOING).
                    let mut own = 0;
                    ps.recv_burst(usize::MAX, |f| {
                        if ports(f.data).is_some_and(|(_, sp, _)| sp == 4242) {
                            own += 1;
                        }
                    });
                    assert_eq!(own, 0);
                    *done.lock().unwrap() = Some(delivered);
                    delivered
                });
                let sent = sender
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e));
                let got = sink.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                assert_eq!(got, sent);
            });
        }
    }

    /// Two sockets in one fanout group on `b` each get a share of 64 flows, together all of
    /// them, none twice.
    #[test]
    fn fanout_shares_flows() {
        let Some(p) = pair("fanout_shares_flows") else {
            return;
        };
        let ready = Barrier::new(2);
        std::thread::scope(|s| {
            let rx = s.spawn(|| {
                enter(&p.ns_b);
                let opts = RingOpts {
                    rx_frames: 128,
                    rx_frame_size: 2048,
                    tx_frames: 8,
                    fanout_group: Some(7),
                    ..RingOpts::default()
                };
                let mut socks = [
                    PacketSocket::open(&p.b_dev, &opts).unwrap(),
                    PacketSocket::open(&p.b_dev, &opts).unwrap(),
                ];
                ready.wait();
                let mut seen: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
                let start = Instant::now();
                while seen[0].len() + seen[1].len() < 64 {
                    assert!(
                        start.elapsed() < DEADLINE,
                        "seen {} + {}",
                        seen[0].len(),
                        seen[1].len()
                    );
                    let fds = [socks[0].rx_fd(), socks[1].rx_fd()];
                    wait_readable(&fds, Duration::from_millis(50)).unwrap();
                    for (ps, seen) in socks.iter_mut().zip(seen.iter_mut()) {
                        ps.recv_burst(64, |f| {
                            if ports(f.data).is_some_and(|(tcp, _, dp)| !tcp && dp == 6500) {
                                let last = f.data.len() - 1;
                                seen.push(f.data[last]);
                            }
                        });
                    }
                }
                seen
            });
            let tx = s.spawn(|| {
                enter(&p.ns_a);
                ready.wait();
                for i in 0..64u8 {
                    // A fresh socket per datagram: 64 source ports, 64 flows.
                    let u = UdpSocket::bind(addr(false, 1, 0)).unwrap();
                    u.send_to(&[i], addr(false, 2, 6500)).unwrap();
                }
            });
            tx.join().unwrap();
            let seen = rx.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            assert!(!seen[0].is_empty() && !seen[1].is_empty(), "{seen:?}");
            let mut all: Vec<u8> = seen.concat();
            all.sort_unstable();
            assert_eq!(
                all,
                (0..64).collect::<Vec<u8>>(),
                "each datagram exactly once"
            );
        });
    }

    #[test]
    fn geometry_packs_frames_into_power_of_two_blocks() {
        let g = Geometry::new(65792, 256).unwrap();
        assert_eq!(g.block_size, 1 << 20);
        assert_eq!(g.frames_per_block, 15);
        assert_eq!(g.frame_nr(), 270);
        assert!(g.bytes() <= 32 << 20, "default RX ring within 32 MiB");
        let t = Geometry::new(16384, 256).unwrap();
        assert_eq!(
            (t.block_size, t.frames_per_block, t.frame_nr()),
            (128 << 10, 8, 256)
        );
        assert_eq!(t.offset(9), (128 << 10) + 16384);
        let small = Geometry::new(2048, 1).unwrap();
        assert_eq!((small.block_size, small.frame_nr()), (64 << 10, 32));
        for (size, n) in [
            (0, 1),
            (255, 1),
            (2050, 1),
            (4096, 0),
            (2 << 20, 1),
            (65792, 1 << 20),
        ] {
            assert!(Geometry::new(size, n).is_err(), "{size} x {n}");
        }
        assert!(
            RingOpts::default().rx_frame_size as usize
                >= libc::TPACKET2_HDRLEN + 16 + VIRTIO_NET_HDR_LEN + 65550
        );
    }
}
