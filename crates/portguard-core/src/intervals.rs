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

/// A rectangle of (address range, port range); addresses inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AddrPorts {
    pub addrs: (u128, u128),
    pub ports: PortRange,
}

/// Turns possibly overlapping (address range x port range) rectangles into
/// disjoint ones covering exactly the same points, merging neighbours with
/// equal port sets. A sweep over address boundaries: O(n log n + output).
pub fn disjoint_addr_ports(rects: &[AddrPorts]) -> Vec<AddrPorts> {
    // Events at address boundaries: +1 when a rectangle starts, -1 after it ends.
    let mut events: BTreeMap<u128, Vec<(PortRange, i32)>> = BTreeMap::new();
    for rect in rects {
        events
            .entry(rect.addrs.0)
            .or_default()
            .push((rect.ports, 1));
        if let Some(after) = rect.addrs.1.checked_add(1) {
            events.entry(after).or_default().push((rect.ports, -1));
        }
    }
    let mut active: BTreeMap<PortRange, i32> = BTreeMap::new();
    // (start address, port set) of the stripe being built.
    let mut stripes: Vec<(u128, Vec<PortRange>)> = Vec::new();
    for (addr, changes) in events {
        for (ports, delta) in changes {
            let count = active.entry(ports).or_insert(0);
            *count += delta;
            if *count == 0 {
                active.remove(&ports);
            }
        }
        let covered = merge_ports(active.keys().copied());
        match stripes.last() {
            Some((_, last)) if *last == covered => {}
            _ => stripes.push((addr, covered)),
        }
    }
    let mut out = Vec::new();
    for (i, (start, ports)) in stripes.iter().enumerate() {
        let end = match stripes.get(i + 1) {
            Some((next, _)) => next - 1,
            None => u128::MAX,
        };
        for range in ports {
            out.push(AddrPorts {
                addrs: (*start, end),
                ports: *range,
            });
        }
    }
    out
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
        let out = disjoint_addr_ports(&[big, small]);
        assert_eq!(
            out,
            vec![
                AddrPorts {
                    addrs: (0x0A00_0000, 0x0A00_FFFF),
                    ports: p(80, 80)
                },
                AddrPorts {
                    addrs: (0x0A01_0000, 0x0A01_FFFF),
                    ports: p(80, 80)
                },
                AddrPorts {
                    addrs: (0x0A01_0000, 0x0A01_FFFF),
                    ports: p(443, 443)
                },
                AddrPorts {
                    addrs: (0x0A02_0000, 0x0AFF_FFFF),
                    ports: p(80, 80)
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
