//! Packet-layer benchmarks: frame parse, the fast path's readers, quoted-error parse, incremental
//! checksum update.
//!
//! Run with `cargo bench -p rvs-wire`; results are recorded in BENCHMARKS.md.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use rvs_wire::{build, checksum, flow, parse, quote, rewrite};

/// Ethernet / IPv4 / TCP (ACK, 100 bytes of payload) built with etherparse.
fn tcp_frame() -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 0, 2, 1], [198, 51, 100, 10], 64)
        .tcp(40000, 80, 1, 65535)
        .ack(1);
    let mut v = Vec::new();
    b.write(&mut v, &[0x42; 100]).unwrap();
    v
}

/// ICMPv4 fragmentation-needed quoting a 1500-byte DF TCP segment (576-byte error).
fn frag_needed() -> Vec<u8> {
    let mut inner = Vec::new();
    etherparse::PacketBuilder::ipv4([198, 51, 100, 10], [192, 0, 2, 1], 64)
        .tcp(80, 40000, 1, 65535)
        .write(&mut inner, &[0x11; 1460])
        .unwrap();
    let mut out = vec![0u8; 600];
    let n = build::icmpv4_error(
        &mut out,
        Ipv4Addr::new(203, 0, 113, 1),
        Ipv4Addr::new(198, 51, 100, 10),
        build::Icmpv4Error::FragNeeded { mtu: 1280 },
        &inner,
        64,
    )
    .unwrap();
    out.truncate(n);
    out
}

fn benches(c: &mut Criterion) {
    let frame = tcp_frame();
    c.bench_function("parse_ethernet_ipv4_tcp", |b| {
        b.iter(|| parse::parse_ethernet(black_box(&frame)).unwrap())
    });
    c.bench_function("etherparse_sliced_ethernet_ipv4_tcp", |b| {
        b.iter(|| etherparse::SlicedPacket::from_ethernet(black_box(&frame)).unwrap())
    });
    c.bench_function("flow_read_ethernet_ipv4_tcp", |b| {
        b.iter(|| flow::read(black_box(&frame)).unwrap())
    });

    let err = frag_needed();
    c.bench_function("quote_read_icmpv4_error_key", |b| {
        b.iter(|| {
            let e = quote::read_icmpv4_error(black_box(&err[20..])).unwrap();
            e.quote.reversed_key().unwrap()
        })
    });
    c.bench_function("parse_frame_of_icmpv4_error_then_quote", |b| {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(&err);
        b.iter(|| {
            let p = parse::parse_ethernet(black_box(&f)).unwrap();
            let ip = p.ip().unwrap();
            let e = quote::read_icmpv4_error(&f[ip.l4_offset..ip.end()]).unwrap();
            e.quote.reversed_key().unwrap()
        })
    });
    c.bench_function("flow_read_error_of_icmpv4_error", |b| {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        f.extend_from_slice(&err);
        b.iter(|| flow::read_error(black_box(&f)).unwrap())
    });

    c.bench_function("checksum_update16", |b| {
        b.iter(|| checksum::update16(black_box(0x1c46), black_box(80), black_box(8080)))
    });
    c.bench_function("checksum_update32_addr", |b| {
        b.iter(|| {
            checksum::update32(
                black_box(0x1c46),
                black_box(0xc633_640a),
                black_box(0xcb00_7107),
            )
        })
    });
    c.bench_function("nat_rewrite_dst_v4_tcp_incremental", |b| {
        let mut f = frame.clone();
        let to = [
            Ipv4Addr::new(203, 0, 113, 7),
            Ipv4Addr::new(198, 51, 100, 10),
        ];
        let mut i = 0usize;
        b.iter(|| {
            i ^= 1;
            let (ip_part, l4_part) = f[14..].split_at_mut(20);
            let mut ip = rewrite::Ipv4Packet::new_unchecked(ip_part);
            let old = ip.set_dst_addr_update_checksum(to[i]);
            let mut l4 = rewrite::L4Packet::new_unchecked(l4_part, rewrite::L4Kind::Tcp);
            l4.update_checksum_for_addr(old.into(), to[i].into());
            l4.set_dst_port_update_checksum(if i == 0 { 8080 } else { 80 });
        })
    });
    c.bench_function("checksum_full_1500", |b| {
        let data = vec![0x5a; 1500];
        b.iter(|| checksum::checksum(black_box(&data)))
    });
}

criterion_group!(wire, benches);
criterion_main!(wire);
