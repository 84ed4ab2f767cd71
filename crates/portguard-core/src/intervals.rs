//! Interval arithmetic for set elements. The kernel rejects overlapping
//! elements in interval sets, so everything the planner puts in a set is
//! first made disjoint here.

use std::collections::BTreeMap;

use portguard_config::PortRange;

/// Sorted, disjoint, non-adjacent union of `ranges`.
pub fn merge_ports(ranges: impl IntoIterator<Item = PortRange>) -> Vec<PortRange> {
    let mut sorted: Vec<PortRange> = ranges.into_iter().collect();
    sorted.sort();
    let mut merged: Vec<PortRange> = Vec::with_capacity(sorted.len());
    for range in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(range.start()) <= u32::from(last.end()) + 1 => {
                if range.end() > last.end() {
                    // Both bounds are non-zero and ordered, so this cannot fail.
                    *last = PortRange::new(last.start(), range.end()).unwrap_or(*last);
                }
            }
            _ => merged.push(range),
        }
    }
    merged
}

/// Splits port ranges into single ports (for a hash set) and real ranges
/// (for an interval set), together covering exactly the ports of `ranges`:
/// the ranges merged, and the single ports that no range covers, both
/// sorted and without duplicates. Single ports are never merged into
/// ranges, even when adjacent: 10,000 consecutive allowed ports stay
/// 10,000 hash elements, so that adding or removing one of them is one
/// element change and not a split of a range.
pub fn split_singles_and_ranges(
    ranges: impl IntoIterator<Item = PortRange>,
) -> (Vec<PortRange>, Vec<PortRange>) {
    let (singles, wide): (Vec<PortRange>, Vec<PortRange>) =
        ranges.into_iter().partition(|r| r.start() == r.end());
    let wide = merge_ports(wide);
    let mut singles: Vec<PortRange> = singles
        .into_iter()
        .filter(|single| {
            // `wide` is sorted and disjoint: the only range that can hold
            // the port is the last one starting at or before it.
            let after = wide.partition_point(|r| r.start() <= single.start());
            !after
                .checked_sub(1)
                .is_some_and(|i| wide[i].contains(single.start()))
        })
        .collect();
    singles.sort();
    singles.dedup();
    (singles, wide)
}

/// A rectangle of (address range, port range); addresses inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddrPorts {
    pub addrs: (u128, u128),
    pub ports: PortRange,
}

/// Turns possibly overlapping (address range x port range) rectangles into
/// disjoint ones covering exactly the same points: a sweep along the port
/// axis, where every stripe of ports holds the merged union of the address
/// ranges active in it, and neighbouring stripes with equal unions merge.
///
/// Output size: the sum, over the stripes, of the disjoint address ranges
/// in each. Entries usually list their own ports, so stripes hold one
/// entry's sources and the output stays linear in the input (1,000 entries
/// with a /8 and a few /32s each give 1,000 elements). The earlier sweep
/// along the address axis put every port into every address stripe, a
/// cross product (the same 1,000 entries gave millions of elements).
/// Rectangles whose port ranges overlap many others still multiply; the
/// planner's tests bound the common shapes.
pub fn disjoint_addr_ports(rects: &[AddrPorts]) -> Vec<AddrPorts> {
    /// Inclusive address range.
    type Addrs = (u128, u128);
    // Events at port boundaries: +1 when a rectangle starts, -1 after it ends.
    let mut events: BTreeMap<u32, Vec<(Addrs, i32)>> = BTreeMap::new();
    for rect in rects {
        events
            .entry(u32::from(rect.ports.start()))
            .or_default()
            .push((rect.addrs, 1));
        events
            .entry(u32::from(rect.ports.end()) + 1)
            .or_default()
            .push((rect.addrs, -1));
    }
    let mut active: BTreeMap<Addrs, i32> = BTreeMap::new();
    // (first port, address union) of each stripe.
    let mut stripes: Vec<(u32, Vec<Addrs>)> = Vec::new();
    for (port, changes) in events {
        for (addrs, delta) in changes {
            let count = active.entry(addrs).or_insert(0);
            *count += delta;
            if *count == 0 {
                active.remove(&addrs);
            }
        }
        let covered = merge_addrs(active.keys().copied());
        match stripes.last() {
            Some((_, last)) if *last == covered => {}
            _ => stripes.push((port, covered)),
        }
    }
    let mut out = Vec::new();
    for (i, (start, addrs)) in stripes.iter().enumerate() {
        let end = stripes
            .get(i + 1)
            .map_or(u32::from(u16::MAX), |(next, _)| next - 1);
        let (Ok(start), Ok(end)) = (u16::try_from(*start), u16::try_from(end)) else {
            continue;
        };
        let Some(ports) = PortRange::new(start, end) else {
            continue;
        };
        out.extend(addrs.iter().map(|&addrs| AddrPorts { addrs, ports }));
    }
    out.sort();
    out
}

/// Sorted, disjoint, non-adjacent union of inclusive address ranges given
/// in ascending order of their start.
fn merge_addrs(sorted: impl IntoIterator<Item = (u128, u128)>) -> Vec<(u128, u128)> {
    let mut merged: Vec<(u128, u128)> = Vec::new();
    for (first, last) in sorted {
        match merged.last_mut() {
            Some(prev) if prev.1 == u128::MAX || first <= prev.1 + 1 => prev.1 = prev.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

/// Whether `(first, last)` is exactly one CIDR block within `width` bits;
/// returns its prefix length.
pub fn as_prefix(first: u128, last: u128, width: u32) -> Option<u32> {
    let span = last.checked_sub(first)?;
    if span == u128::MAX {
        return (width == 128).then_some(0);
    }
    let size = span + 1;
    if !size.is_power_of_two() || !first.is_multiple_of(size) {
        return None;
    }
    let host_bits = size.trailing_zeros();
    (host_bits <= width).then(|| width - host_bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).unwrap()
    }

    #[test]
    fn merging_ports_joins_overlaps_and_neighbours() {
        assert_eq!(
            merge_ports([p(10, 20), p(21, 25), p(5, 6), p(15, 16), p(30, 30)]),
            vec![p(5, 6), p(10, 25), p(30, 30)]
        );
        assert_eq!(
            merge_ports([p(65535, 65535), p(1, 65534)]),
            vec![p(1, 65535)]
        );
    }

    #[test]
    fn single_ports_go_apart_from_ranges_and_never_merge() {
        let (singles, ranges) = split_singles_and_ranges([
            p(8080, 8080),
            p(8081, 8081),
            p(40000, 40100),
            p(40050, 40200),
            p(40100, 40100),
            p(40201, 40201),
            p(8080, 8080),
            p(1, 1),
            p(65535, 65535),
        ]);
        // Adjacent single ports stay single; a single port inside a range
        // is covered by the range; one next to it stays single.
        assert_eq!(
            singles,
            vec![
                p(1, 1),
                p(8080, 8080),
                p(8081, 8081),
                p(40201, 40201),
                p(65535, 65535)
            ]
        );
        assert_eq!(ranges, vec![p(40000, 40200)]);
        let (singles, ranges) = split_singles_and_ranges([p(1, 65535), p(7, 7)]);
        assert_eq!((singles, ranges), (vec![], vec![p(1, 65535)]));
    }

    #[test]
    fn nested_networks_become_disjoint_stripes() {
        // 10.0.0.0/8 port 80, and 10.1.0.0/16 port 443.
        let big = AddrPorts {
            addrs: (0x0A00_0000, 0x0AFF_FFFF),
            ports: p(80, 80),
        };
        let small = AddrPorts {
            addrs: (0x0A01_0000, 0x0A01_FFFF),
            ports: p(443, 443),
        };
        // Each port keeps its own network: no stripes of the big network.
        assert_eq!(disjoint_addr_ports(&[big, small]), vec![big, small]);
        // Overlapping ports: the overlap holds the union of both networks.
        let wide = AddrPorts {
            ports: p(80, 443),
            ..small
        };
        assert_eq!(
            disjoint_addr_ports(&[big, wide]),
            vec![
                AddrPorts {
                    addrs: (0x0A00_0000, 0x0AFF_FFFF),
                    ports: p(80, 80)
                },
                AddrPorts {
                    addrs: (0x0A01_0000, 0x0A01_FFFF),
                    ports: p(81, 443)
                },
            ]
        );
        // Same port: the smaller network disappears into the bigger one.
        let same = AddrPorts {
            ports: p(80, 80),
            ..small
        };
        assert_eq!(disjoint_addr_ports(&[big, same]), vec![big]);
    }

    #[test]
    fn distinct_ports_from_one_wide_network_stay_linear() {
        // The shape that gave a 36 MB ruleset: every entry its own port,
        // from 10.0.0.0/8 and a few /32s of its own (outside the /8, so
        // that neighbouring ports cannot merge).
        let mut rects = Vec::new();
        for i in 0..1000u16 {
            for k in 0..4u128 {
                rects.push(AddrPorts {
                    addrs: if k == 0 {
                        (0x0A00_0000, 0x0AFF_FFFF)
                    } else {
                        let a = 0xC0A8_0000 + u128::from(i) * 16 + k * 2;
                        (a, a)
                    },
                    ports: p(1000 + i, 1000 + i),
                });
            }
        }
        // One element per (entry, source): 4,000, not 1,000 x 3,001 stripes.
        assert_eq!(disjoint_addr_ports(&rects).len(), 4000);
    }

    #[test]
    fn whole_address_space_does_not_overflow() {
        let all = AddrPorts {
            addrs: (0, u128::MAX),
            ports: p(1, 2),
        };
        assert_eq!(disjoint_addr_ports(&[all, all]), vec![all]);
    }

    #[test]
    fn prefixes() {
        assert_eq!(as_prefix(0xCB00_7100, 0xCB00_71FF, 32), Some(24));
        assert_eq!(as_prefix(5, 5, 32), Some(32));
        assert_eq!(as_prefix(0, 5, 32), None);
        assert_eq!(as_prefix(0, u128::MAX, 128), Some(0));
        assert_eq!(as_prefix(0, u32::MAX as u128, 32), Some(0));
    }
}
