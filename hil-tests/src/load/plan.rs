//! The plan of a run, before anything is sent: which streams go on which connection
//! (the PTY line or Unix-socket connections), each stream's phase in the 80 ms period,
//! and the capacity search's sequence of stream counts. Pure functions, no I/O.

use std::time::Duration;

use serde::Serialize;

use super::FRAME_PERIOD;

/// Which transport a group of streams used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Transport {
    /// Unix socket connections.
    Socket,
    /// The PTY line.
    Pty,
}

impl Transport {
    /// Name in reports: `socket` or `pty`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Socket => "socket",
            Transport::Pty => "pty",
        }
    }
}

/// Streams of one connection: stream ids and their global index (which sets phase and
/// audio offset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnPlan {
    /// Transport.
    pub transport: Transport,
    /// `(stream_id, global index)`.
    pub streams: Vec<(u16, usize)>,
}

/// Spreads `n` streams: up to `per_conn` on the PTY line when `pty`, the rest evenly
/// over the fewest socket connections holding at most `per_conn` each. Global indices
/// are dealt round-robin over the connections so each connection's streams spread over
/// the period.
pub fn plan_connections(n: usize, pty: bool, per_conn: usize) -> Vec<ConnPlan> {
    let per_conn = per_conn.max(1);
    let on_pty = if pty { n.min(per_conn) } else { 0 };
    let rest = n - on_pty;
    let sockets = rest.div_ceil(per_conn);
    let mut sizes = Vec::new();
    if on_pty > 0 {
        sizes.push((Transport::Pty, on_pty));
    }
    for i in 0..sockets {
        // Even split: the first `rest % sockets` connections get one more.
        let size = rest / sockets + usize::from(i < rest % sockets);
        sizes.push((Transport::Socket, size));
    }
    let mut plans: Vec<ConnPlan> = sizes
        .iter()
        .map(|&(transport, _)| ConnPlan {
            transport,
            streams: Vec::new(),
        })
        .collect();
    let mut global = 0;
    let mut round = 0u16;
    while global < n {
        for (plan, &(_, size)) in plans.iter_mut().zip(&sizes) {
            if plan.streams.len() < size && global < n {
                plan.streams.push((round + 1, global));
                global += 1;
            }
        }
        round += 1;
    }
    plans
}

/// Offset of stream `global` of `n` within the frame period (phases evenly spread).
pub fn phase(global: usize, n: usize) -> Duration {
    if n == 0 {
        return Duration::ZERO;
    }
    FRAME_PERIOD * global as u32 / n as u32
}

/// Stream counts tried to confirm a capacity `n` found by the search, in order:
/// n, n − max(1, n/8), n − n/4, n/2, n/4 (decreasing, positive, without repeats).
pub fn confirm_steps(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = Vec::new();
    for k in [n, n - (n / 8).max(1).min(n), n - n / 4, n / 2, n / 4] {
        if k > 0 && v.last().is_none_or(|&l| k < l) {
            v.push(k);
        }
    }
    v
}

/// Searches the largest stream count for which `probe` passes: doubling from
/// `start` (capped at `max`) until a failure, then bisection between the last pass
/// and the first failure. Returns the largest passing count (0 if even 1 fails) and
/// the probes made, in order.
pub fn search_capacity(
    start: usize,
    max: usize,
    mut probe: impl FnMut(usize) -> bool,
) -> (usize, Vec<(usize, bool)>) {
    let mut probes = Vec::new();
    let mut lo = 0; // largest known pass
    let mut hi = max + 1; // smallest known failure
    let mut n = start.clamp(1, max.max(1));
    loop {
        let ok = probe(n);
        probes.push((n, ok));
        if ok {
            lo = n;
            if n >= max {
                break;
            }
            n = (n * 2).min(max);
        } else {
            hi = n;
            break;
        }
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let ok = probe(mid);
        probes.push((mid, ok));
        if ok {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo, probes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_respect_per_connection_limit() {
        let p = plan_connections(1, false, 8);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].streams, vec![(1, 0)]);

        let p = plan_connections(32, false, 8);
        assert_eq!(p.len(), 4);
        assert!(p.iter().all(|c| c.streams.len() == 8));

        let p = plan_connections(20, false, 8);
        assert_eq!(
            p.iter().map(|c| c.streams.len()).collect::<Vec<_>>(),
            vec![7, 7, 6]
        );

        let p = plan_connections(32, true, 8);
        assert_eq!(p[0].transport, Transport::Pty);
        assert_eq!(p[0].streams.len(), 8);
        assert_eq!(p.len(), 4);
        assert!(p[1..].iter().all(|c| c.transport == Transport::Socket));

        let p = plan_connections(3, true, 8);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].transport, Transport::Pty);

        // Every global index exactly once; stream ids unique within a connection.
        for (n, pty) in [(37, true), (64, false), (5, false)] {
            let p = plan_connections(n, pty, 8);
            let mut g: Vec<usize> = p
                .iter()
                .flat_map(|c| c.streams.iter().map(|s| s.1))
                .collect();
            g.sort_unstable();
            assert_eq!(g, (0..n).collect::<Vec<_>>());
            for c in &p {
                let mut ids: Vec<u16> = c.streams.iter().map(|s| s.0).collect();
                ids.dedup();
                assert_eq!(ids.len(), c.streams.len());
                assert!(c.streams.len() <= 8);
            }
        }
    }

    #[test]
    fn phases_spread_over_the_period() {
        assert_eq!(phase(0, 1), Duration::ZERO);
        assert_eq!(phase(1, 4), Duration::from_millis(20));
        assert_eq!(phase(3, 4), Duration::from_millis(60));
        assert!(phase(63, 64) < FRAME_PERIOD);
    }

    #[test]
    fn capacity_search_finds_the_boundary() {
        for cap in [0, 1, 3, 4, 5, 17, 31, 32, 33, 63, 64] {
            let (found, probes) = search_capacity(4, 64, |n| n <= cap);
            assert_eq!(found, cap, "{probes:?}");
            assert!(probes.len() <= 12, "{cap}: {probes:?}");
        }
    }

    #[test]
    fn confirmation_steps_down() {
        assert_eq!(confirm_steps(36), vec![36, 32, 27, 18, 9]);
        assert_eq!(confirm_steps(4), vec![4, 3, 2, 1]);
        assert_eq!(confirm_steps(2), vec![2, 1]);
        assert_eq!(confirm_steps(1), vec![1]);
        assert!(confirm_steps(0).is_empty());
    }
}
