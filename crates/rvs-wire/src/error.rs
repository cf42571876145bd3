//! Typed errors of the packet layer: every malformed input maps to one of these, never to a panic.

use thiserror::Error;

/// Why a byte sequence could not be read as the packet it claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum WireError {
    /// Fewer bytes were captured than the header being read needs.
    #[error("truncated: {layer} needs {needed} bytes, {available} captured")]
    Truncated {
        /// The layer that ran out of bytes.
        layer: Layer,
        /// Bytes the layer needs.
        needed: usize,
        /// Bytes actually present.
        available: usize,
    },
    /// A header-length field is smaller than its minimum or points past the data (IPv4 IHL, TCP data offset, extension header length).
    #[error("bad header length in {layer}: {value}")]
    BadHeaderLen {
        /// The layer whose header-length field is wrong.
        layer: Layer,
        /// The value found (in bytes).
        value: usize,
    },
    /// A total-length field (IPv4 total length, IPv6 payload length, UDP length) is inconsistent with the header.
    #[error("bad total length in {layer}: {value}")]
    BadTotalLen {
        /// The layer whose total-length field is wrong.
        layer: Layer,
        /// The value found (in bytes).
        value: usize,
    },
    /// The IP version nibble does not match what the link layer announced.
    #[error("bad IP version {0}")]
    BadVersion(u8),
    /// An ICMP message that is not an error was given where an error was expected.
    #[error("ICMP type {0} is not an error message")]
    NotAnError(u8),
    /// The quoted datagram is a non-first fragment: it carries no transport header, so no ports.
    #[error("quoted datagram is a non-first fragment (offset {offset} bytes)")]
    NonFirstFragment {
        /// Fragment offset in bytes.
        offset: u16,
    },
    /// An IP extension header is malformed (Hop-by-Hop not first, an Authentication Header with zero length).
    #[error("malformed IP extension header")]
    BadExtHeader,
    /// The IPv6 extension-header chain is longer than the reader is willing to walk.
    #[error("IPv6 extension header chain too long")]
    ExtChainTooLong,
    /// A capture's link type that the reader does not decode.
    #[error("unsupported link type {0}")]
    UnsupportedLinkType(u32),
    /// A link-layer protocol (EtherType, BSD address family, PPP protocol) that carries neither IPv4 nor IPv6 nor anything else we decode.
    #[error("unsupported link-layer protocol {0:#06x}")]
    UnsupportedLinkProtocol(u32),
    /// An output buffer too small for what a builder was asked to write.
    #[error("output buffer too small: need {needed}, have {available}")]
    BufferTooSmall {
        /// Bytes the builder needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// A builder was asked to build something the RFCs forbid (for example an ICMP error about an ICMP error).
    #[error("refusing to build: {0}")]
    Refused(&'static str),
}

/// The protocol layer an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Ethernet II header (with any 802.1Q tags).
    Ethernet,
    /// A capture's link-layer header other than Ethernet (SLL, SLL2, NULL, PPP).
    Link,
    /// ARP packet.
    Arp,
    /// IPv4 header.
    Ipv4,
    /// IPv6 header.
    Ipv6,
    /// IPv6 extension header.
    Ipv6Ext,
    /// TCP header.
    Tcp,
    /// UDP header.
    Udp,
    /// ICMPv4 message.
    Icmpv4,
    /// ICMPv6 message.
    Icmpv6,
    /// The datagram quoted inside an ICMP error.
    Quote,
}

impl core::fmt::Display for Layer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let name = match self {
            Layer::Ethernet => "ethernet",
            Layer::Link => "link",
            Layer::Arp => "arp",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Ipv6Ext => "ipv6-ext",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
            Layer::Icmpv4 => "icmpv4",
            Layer::Icmpv6 => "icmpv6",
            Layer::Quote => "quote",
        };
        f.write_str(name)
    }
}

impl WireError {
    /// A stable snake_case name for this error, used as a metrics label and in summaries.
    pub fn name(&self) -> &'static str {
        match self {
            WireError::Truncated { .. } => "truncated",
            WireError::BadHeaderLen { .. } => "bad_header_len",
            WireError::BadTotalLen { .. } => "bad_total_len",
            WireError::BadVersion(_) => "bad_version",
            WireError::NotAnError(_) => "not_an_error",
            WireError::NonFirstFragment { .. } => "non_first_fragment",
            WireError::BadExtHeader => "bad_ext_header",
            WireError::ExtChainTooLong => "ext_chain_too_long",
            WireError::UnsupportedLinkType(_) => "unsupported_link_type",
            WireError::UnsupportedLinkProtocol(_) => "unsupported_link_protocol",
            WireError::BufferTooSmall { .. } => "buffer_too_small",
            WireError::Refused(_) => "refused",
        }
    }

    /// Shorthand for a [`WireError::Truncated`].
    pub(crate) const fn truncated(layer: Layer, needed: usize, available: usize) -> Self {
        WireError::Truncated {
            layer,
            needed,
            available,
        }
    }
}
