//! `rvs-dataplane` — one packet in, one `Verdict` out: ingress, NAT egress, ICMP, and the
//! NAT/DR/TUN transmitters. No I/O, no clock. Filled by the director-core and ICMP issues; empty
//! in this version.
