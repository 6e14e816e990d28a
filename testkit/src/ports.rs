//! Free loopback ports for the servers the tests start (etcd, kube-apiserver, a kubelet, the
//! operator's probes), chosen below the kernel's ephemeral range.
//!
//! A port is found free here and bound by another process a moment later. A port from
//! `bind(127.0.0.1:0)` lies in the ephemeral range, which every outgoing connection on the machine
//! draws its local port from: a client polling etcd or a build fetching a crate can take it in
//! between, and kube-apiserver then exits with "address already in use" (seen in CI on
//! 2026-12-07). No outgoing connection takes a port below the range, so only another listener
//! can, and the check here finds that one.

use std::{
    net::TcpListener,
    sync::atomic::{AtomicU32, Ordering},
};

/// The ports handed out: from here up to the ephemeral range (or `CEILING`), never above 29999,
/// so a node's NodePorts (30000-32767) stay clear too.
const FLOOR: u16 = 20000;
const CEILING: u16 = 30000;

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after), below the
/// ephemeral range when the machine leaves room there, and never the same twice in one process.
pub fn free_port() -> u16 {
    let (low, high) = span(ephemeral_low());
    if low >= high {
        return ephemeral_port();
    }
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(high - low);
    // Processes start at different places, so two test binaries rarely try the same ports.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = low + u16::try_from(offset).expect("an offset within a u16 span");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    ephemeral_port()
}

/// The ports to choose from, `[low, high)`, given where the ephemeral range begins.
fn span(ephemeral_low: Option<u16>) -> (u16, u16) {
    let high = ephemeral_low.map_or(CEILING, |low| low.min(CEILING));
    (FLOOR, high)
}

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn ephemeral_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_lie_below_the_ephemeral_range_and_are_not_repeated() {
        let low = ephemeral_low().expect("this machine reports its ephemeral range");
        assert!(
            low > FLOOR,
            "the ephemeral range starts at {low}, leaving no room"
        );
        let ports: Vec<u16> = (0..64).map(|_| free_port()).collect();
        for port in &ports {
            assert!(
                (FLOOR..low.min(CEILING)).contains(port),
                "port {port} is not in {FLOOR}..{}",
                low.min(CEILING)
            );
        }
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
    }

    #[test]
    fn a_port_someone_listens_on_is_skipped() {
        let port = free_port();
        let _taken = TcpListener::bind(("127.0.0.1", port)).expect("the port was free");
        // Every port in the span is tried once before one repeats; the taken one must not be.
        let (low, high) = span(ephemeral_low());
        for _ in low..high {
            assert_ne!(free_port(), port);
        }
    }

    #[test]
    fn a_low_ephemeral_range_narrows_the_span_and_none_left_means_none() {
        assert_eq!(span(Some(32768)), (FLOOR, CEILING));
        assert_eq!(span(Some(25000)), (FLOOR, 25000));
        assert_eq!(span(None), (FLOOR, CEILING));
        let (low, high) = span(Some(1024));
        assert!(low >= high);
    }
}
