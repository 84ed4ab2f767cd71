//! Set elements in wire form: every element a complete `NFTA_LIST_ELEM`
//! attribute, all of them back to back in one buffer.
//!
//! A full install of 10,000 allow entries built them first as the
//! library's typed attributes: three or four small allocations per
//! element, and a recursive length computation that the library repeats
//! at every level of nesting while it serializes. That took 7 of the
//! install's 25 ms (2.5 ms building, 4.8 ms serializing, measured in
//! `--bench apply_vs_nft -- full-only`). Here an element costs a few
//! bytes appended to one `Vec`; the message carries the buffer as one
//! attribute, which the library copies. `tests` proves the bytes are
//! exactly what the typed attributes serialize to, for every kind of set.

use netlink_packet_core::{NLA_ALIGNTO, NLA_F_NESTED, NLA_HEADER_SIZE, NlaBuffer};
use netlink_packet_netfilter::nftables::SetElementFlags;
use portguard_core::ruleset::{Element, Set, SetKey};

use crate::expressions::ifname_bytes;
use crate::kernel_constants::{
    NFTA_DATA_VALUE, NFTA_LIST_ELEM, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END,
};
use crate::model::Attrs;

/// Elements of one set as the kernel receives them.
#[derive(Debug, Default)]
pub(crate) struct WireElements {
    bytes: Vec<u8>,
    /// Where each element's attribute ends in `bytes`.
    ends: Vec<usize>,
}

impl WireElements {
    /// `set`'s elements, as [`for_each_element`] splits them.
    pub(crate) fn of(set: &Set) -> WireElements {
        // A port, a key and its flags: 24 to 60 bytes an element.
        let mut wire = WireElements {
            bytes: Vec::with_capacity(set.elements.len() * 32),
            ends: Vec::with_capacity(set.elements.len()),
        };
        for_each_element(set, |key, flags, key_end| wire.push(key, flags, key_end));
        wire
    }

    /// Elements as a dump returned them (attribute kind and value each),
    /// to be deleted or added back as they are.
    pub(crate) fn from_dumped(elements: &[Attrs]) -> WireElements {
        let mut wire = WireElements::default();
        for attrs in elements {
            wire.element(|bytes| {
                for (kind, value) in attrs {
                    put(bytes, *kind, value);
                }
            });
        }
        wire
    }

    fn push(&mut self, key: &[u8], flags: SetElementFlags, key_end: Option<&[u8]>) {
        self.element(|bytes| {
            let nested = begin(bytes, NFTA_SET_ELEM_KEY | NLA_F_NESTED);
            put(bytes, NFTA_DATA_VALUE, key);
            end(bytes, nested);
            if !flags.is_empty() {
                put(bytes, NFTA_SET_ELEM_FLAGS, &flags.bits().to_be_bytes());
            }
            if let Some(key_end) = key_end {
                let nested = begin(bytes, NFTA_SET_ELEM_KEY_END | NLA_F_NESTED);
                put(bytes, NFTA_DATA_VALUE, key_end);
                end(bytes, nested);
            }
        });
    }

    /// Appends one `NFTA_LIST_ELEM` whose attributes `attributes` writes,
    /// and records where it ends.
    fn element(&mut self, attributes: impl FnOnce(&mut Vec<u8>)) {
        let element = begin(&mut self.bytes, NFTA_LIST_ELEM | NLA_F_NESTED);
        attributes(&mut self.bytes);
        end(&mut self.bytes, element);
        self.ends.push(self.bytes.len());
    }

    /// Each element whole, its `NFTA_LIST_ELEM` header included.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter())
            .map(|(s, e)| &self.bytes[s..*e])
    }

    /// Runs of consecutive elements, each as one byte slice: the value of
    /// one message's `NFTA_SET_ELEM_LIST_ELEMENTS`. A run holds at most
    /// `n` elements and never more bytes than that attribute's 16-bit
    /// length can say: 512 elements somebody else added with long comments
    /// are 78 KB, and the netlink library panics on an attribute it cannot
    /// size (the daemon's loop with it, again after every restart). An
    /// element is never split; one that came from a dump fits alone, as it
    /// fitted in the dump's own element list.
    pub(crate) fn chunks(&self, n: usize) -> impl Iterator<Item = &[u8]> {
        let n = n.max(1);
        let mut first = 0;
        std::iter::from_fn(move || {
            if first >= self.ends.len() {
                return None;
            }
            let start = if first == 0 { 0 } else { self.ends[first - 1] };
            let mut last = first;
            while last + 1 < self.ends.len()
                && last + 1 - first < n
                && self.ends[last + 1] - start <= MAX_LIST_BYTES
            {
                last += 1;
            }
            first = last + 1;
            Some(&self.bytes[start..self.ends[last]])
        })
    }
}

/// The most an attribute's value can hold: its 16-bit length counts the
/// header too.
const MAX_LIST_BYTES: usize = u16::MAX as usize - NLA_HEADER_SIZE;

/// Appends an attribute header of `kind` whose length [`end`] fills in;
/// where it starts.
fn begin(bytes: &mut Vec<u8>, kind: u16) -> usize {
    let at = bytes.len();
    bytes.extend_from_slice(&[0; NLA_HEADER_SIZE]);
    let mut header = NlaBuffer::new(&mut bytes[at..]);
    // `set_kind` keeps only the type; the nested flag is set on its own.
    header.set_kind(kind);
    if kind & NLA_F_NESTED != 0 {
        header.set_nested_flag();
    }
    at
}

/// Closes the attribute [`begin`] started at `at`: its length, then
/// padding to the next attribute.
fn end(bytes: &mut Vec<u8>, at: usize) {
    let length = bytes.len() - at;
    // An element is far below 64 KiB; `u16` is the format's own limit.
    NlaBuffer::new(&mut bytes[at..]).set_length(length as u16);
    bytes.resize(bytes.len().next_multiple_of(NLA_ALIGNTO), 0);
}

fn put(bytes: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let at = begin(bytes, kind);
    bytes.extend_from_slice(value);
    end(bytes, at);
}

/// A port in a 32-bit register slot of a concatenation: big-endian, padded.
fn port_slot(port: u16) -> [u8; 4] {
    let [hi, lo] = port.to_be_bytes();
    [hi, lo, 0, 0]
}

/// Set elements as the kernel wants them, each given to `put` as its key,
/// flags and inclusive end key. Hash sets take one key per element (a
/// port range given to a port hash set becomes one key per port: what the
/// set matches never depends on the planner's split). Plain interval sets
/// (rbtree) take a start element and an end element one past the range,
/// flagged INTERVAL_END, as nft sends them (including the leading end
/// marker at 0); concatenated interval sets (pipapo) take KEY and an
/// inclusive KEY_END.
pub(crate) fn for_each_element(
    set: &Set,
    mut put: impl FnMut(&[u8], SetElementFlags, Option<&[u8]>),
) {
    let none = SetElementFlags::empty();
    let first_port_start = set.elements.iter().find_map(|e| match e {
        Element::Port(r) => Some(r.start()),
        _ => None,
    });
    if set.key == SetKey::PortInterval && first_port_start.is_some_and(|start| start > 0) {
        put(&0u16.to_be_bytes(), SetElementFlags::IntervalEnd, None);
    }
    for e in &set.elements {
        match e {
            Element::Ifname(name) => put(&ifname_bytes(name), none, None),
            Element::Port(range) if !set.key.is_interval() => {
                for port in range.start()..=range.end() {
                    put(&port.to_be_bytes(), none, None);
                }
            }
            Element::Port(range) => {
                put(&range.start().to_be_bytes(), none, None);
                if let Some(after) = range.end().checked_add(1) {
                    put(&after.to_be_bytes(), SetElementFlags::IntervalEnd, None);
                }
            }
            // Hash sets hold one address . one port per element (the
            // planner puts nothing else there); a wider element would be
            // one key per point, so it is never narrowed silently.
            Element::Ipv4Port { addrs, ports } if !set.key.is_interval() => {
                for addr in addrs.0..=addrs.1 {
                    for port in ports.start()..=ports.end() {
                        put(&concat(&addr.to_be_bytes(), port), none, None);
                    }
                }
            }
            Element::Ipv6Port { addrs, ports } if !set.key.is_interval() => {
                for addr in addrs.0..=addrs.1 {
                    for port in ports.start()..=ports.end() {
                        put(&concat(&addr.to_be_bytes(), port), none, None);
                    }
                }
            }
            Element::Ipv4Port { addrs, ports } => {
                let key = concat(&addrs.0.to_be_bytes(), ports.start());
                let end = concat(&addrs.1.to_be_bytes(), ports.end());
                put(&key, none, Some(&end));
            }
            Element::Ipv6Port { addrs, ports } => {
                let key = concat(&addrs.0.to_be_bytes(), ports.start());
                let end = concat(&addrs.1.to_be_bytes(), ports.end());
                put(&key, none, Some(&end));
            }
        }
    }
}

/// An address . port key: the address, then the port in its register slot.
fn concat(addr: &[u8], port: u16) -> Vec<u8> {
    [addr, &port_slot(port)].concat()
}

#[cfg(test)]
pub(crate) mod tests {
    use netlink_packet_core::{DefaultNla, Emitable};
    use netlink_packet_netfilter::nftables::{DataAttribute, ListAttribute, SetElementAttribute};
    use portguard_config::PortRange;

    use super::*;

    /// `set`'s elements as the library's typed attributes.
    pub(crate) fn typed_elements(set: &Set) -> Vec<ListAttribute<SetElementAttribute>> {
        let mut elements = Vec::new();
        for_each_element(set, |key, flags, key_end| {
            let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(key.to_vec()))];
            if !flags.is_empty() {
                attrs.push(SetElementAttribute::Flags(flags));
            }
            if let Some(end) = key_end {
                attrs.push(SetElementAttribute::KeyEnd(vec![DefaultNla::new(
                    NFTA_DATA_VALUE,
                    end.to_vec(),
                )]));
            }
            elements.push(ListAttribute::Element(attrs));
        });
        elements
    }

    /// The same elements serialized through the library's typed attributes.
    fn typed(set: &Set) -> Vec<u8> {
        let elements = typed_elements(set);
        let mut bytes = vec![0; elements.as_slice().buffer_len()];
        elements.as_slice().emit(&mut bytes);
        bytes
    }

    pub(crate) fn set(key: SetKey, elements: Vec<Element>) -> Set {
        Set {
            name: "s".into(),
            key,
            elements,
        }
    }

    pub(crate) fn ports(a: u16, b: u16) -> PortRange {
        PortRange::new(a, b).unwrap()
    }

    pub(crate) fn every_kind_of_set() -> Vec<Set> {
        let v6_net = (0xfd00_u128 << 112, (0xfd00_u128 << 112) | 0xffff);
        let v4 = |key, addrs, ports| set(key, vec![Element::Ipv4Port { addrs, ports }]);
        let v6 = |key, addrs, ports| set(key, vec![Element::Ipv6Port { addrs, ports }]);
        vec![
            set(
                SetKey::Ifname,
                vec![
                    Element::Ifname("docker0".into()),
                    Element::Ifname("br-0123456789ab".into()),
                ],
            ),
            set(
                SetKey::Port,
                vec![
                    Element::Port(ports(22, 22)),
                    Element::Port(ports(8080, 8082)),
                ],
            ),
            set(
                SetKey::PortInterval,
                vec![
                    Element::Port(ports(1000, 2000)),
                    Element::Port(ports(65000, 65535)),
                ],
            ),
            set(SetKey::PortInterval, vec![Element::Port(ports(1, 10))]),
            v4(
                SetKey::Ipv4Port,
                (0x0a00_0001, 0x0a00_0002),
                ports(443, 444),
            ),
            v4(
                SetKey::Ipv4PortInterval,
                (0x0a00_0000, 0x0a00_00ff),
                ports(80, 90),
            ),
            v6(SetKey::Ipv6Port, (1, 1), ports(53, 53)),
            v6(SetKey::Ipv6PortInterval, v6_net, ports(8080, 8080)),
        ]
    }

    #[test]
    fn wire_elements_are_byte_for_byte_what_the_typed_attributes_serialize_to() {
        for set in every_kind_of_set() {
            let wire = WireElements::of(&set);
            assert_eq!(wire.bytes, typed(&set), "{:?}", set.key);
            assert!(wire.iter().count() >= set.elements.len(), "{:?}", set.key);
        }
    }

    #[test]
    fn chunks_and_iter_cover_every_element_once_in_order() {
        let set = set(SetKey::Port, vec![Element::Port(ports(1000, 1999))]);
        let wire = WireElements::of(&set);
        assert_eq!(wire.iter().count(), 1000);
        for n in [1, 7, 512, 1000, 5000] {
            let joined: Vec<u8> = wire.chunks(n).flatten().copied().collect();
            assert_eq!(joined, wire.bytes, "chunks of {n}");
            assert_eq!(
                wire.chunks(n).count(),
                1000usize.div_ceil(n),
                "chunks of {n}"
            );
        }
        let joined: Vec<u8> = wire.iter().flatten().copied().collect();
        assert_eq!(joined, wire.bytes);
        assert_eq!(wire.iter().count(), 1000);
    }

    #[test]
    fn dumped_elements_go_back_as_they_came() {
        let set = every_kind_of_set().swap_remove(5);
        let wire = WireElements::of(&set);
        let dumped = |wire: &WireElements| -> Vec<Attrs> {
            wire.iter()
                .map(|e| crate::model::canonical(&e[NLA_HEADER_SIZE..]).unwrap())
                .collect()
        };
        let again = WireElements::from_dumped(&dumped(&wire));
        assert_eq!(again.iter().count(), wire.iter().count());
        assert_eq!(dumped(&again), dumped(&wire));
    }

    /// From the dump's attributes (kind masked, as `canonical` keeps
    /// them), values of odd lengths: the same bytes the old
    /// `SetElementAttribute::Other(DefaultNla)` path wrote.
    #[test]
    fn from_dumped_is_the_typed_raw_attribute_path_byte_for_byte() {
        let dumped: Vec<Attrs> = vec![
            vec![
                (1, vec![4, 0, 1, 0, 0x27, 0x0f, 0, 0]),
                (6, vec![1, 2, b'x', 0]),
            ],
            vec![(1, vec![5, 0, 1, 0, 0x23, 0x28, 0, 0]), (6, vec![1, 1, 0])],
            vec![
                (1, vec![6, 0, 1, 0, 1, 0, 0, 0]),
                (3, vec![0, 0, 0, 1]),
                (9, vec![7]),
            ],
        ];
        let old: Vec<ListAttribute<SetElementAttribute>> = dumped
            .iter()
            .map(|attrs| {
                ListAttribute::Element(
                    attrs
                        .iter()
                        .map(|(kind, value)| {
                            SetElementAttribute::Other(DefaultNla::new(*kind, value.clone()))
                        })
                        .collect(),
                )
            })
            .collect();
        let mut bytes = vec![0; old.as_slice().buffer_len()];
        old.as_slice().emit(&mut bytes);
        assert_eq!(WireElements::from_dumped(&dumped).bytes, bytes);
    }
}
