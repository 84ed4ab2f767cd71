//! The one comparison between what the guard wants and what the kernel
//! holds. The desired ruleset is encoded into the very messages the kernel
//! would be sent and walked into the same canonical [`TableState`] a
//! read-back gives, so both sides are compared element for element, rule
//! for rule, flag for flag. Used after every apply and by every verify:
//! nothing counts as applied unless this finds no difference.

use netlink_packet_core::{Emitable, NLA_HEADER_SIZE};
use netlink_packet_netfilter::nftables::RuleAttribute;
use portguard_core::Ruleset;

use crate::messages;
use crate::model::{Attrs, TableSpec, TableState, canonical};
use crate::readback;
use crate::wire::WireElements;

pub use crate::model::Difference;

/// `ruleset` as table `spec` would hold it, in read-back form.
pub(crate) fn expected_state(spec: &TableSpec, ruleset: &Ruleset) -> TableState {
    let name = spec.name.as_str();
    let chains = ruleset
        .chains
        .iter()
        .map(|chain| {
            let mut state = readback::chain_state(&messages::chain_msg(name, chain));
            state.rules = chain
                .rules
                .iter()
                .map(|rule| {
                    let message = messages::rule_msg(name, &chain.name, rule);
                    let exprs = message.attributes.iter().find_map(|a| match a {
                        RuleAttribute::Expressions(list) => {
                            let mut bytes = vec![0; list.as_slice().buffer_len()];
                            list.as_slice().emit(&mut bytes);
                            readback::raw_expressions(&bytes)
                        }
                        _ => None,
                    });
                    exprs.unwrap_or_default()
                })
                .collect();
            state
        })
        .collect();
    let sets = ruleset
        .sets
        .iter()
        .enumerate()
        .map(|(id, set)| {
            let mut state = readback::set_state(&messages::set_msg(name, set, id as u32 + 1));
            state.elements = WireElements::of(set)
                .iter()
                .map(|element| {
                    // Skip the list element's own header: the dump gives
                    // each element's attributes.
                    canonical(element.get(NLA_HEADER_SIZE..).unwrap_or_default())
                        .unwrap_or_default()
                })
                .collect();
            state.elements.sort();
            state.elements_are_counts = set.key.elements_are_counts();
            state
        })
        .collect();
    TableState {
        flags: spec.ownership.flags(),
        chains,
        sets,
        undecodable: 0,
    }
}

/// Every difference between `want` and `have` (`None`: no table).
pub fn compare(want: &TableState, have: Option<&TableState>) -> Vec<Difference> {
    let Some(have) = have else {
        return vec![Difference::TableMissing];
    };
    let mut out = Vec::new();
    // Owner and persist are ours to set; dormant or any other flag is not.
    if have.flags != want.flags {
        out.push(Difference::TableFlags {
            want: want.flags,
            have: have.flags,
        });
    }
    if have.undecodable > 0 {
        out.push(Difference::Undecodable(have.undecodable));
    }
    for chain in &want.chains {
        match have.chains.iter().find(|c| c.name == chain.name) {
            None => out.push(Difference::ChainMissing(chain.name.clone())),
            Some(held) => {
                if held.base != chain.base {
                    out.push(Difference::ChainBase(chain.name.clone()));
                }
                if held.rules != chain.rules {
                    let first = chain
                        .rules
                        .iter()
                        .zip(&held.rules)
                        .position(|(a, b)| a != b)
                        .unwrap_or(chain.rules.len().min(held.rules.len()));
                    out.push(Difference::Rules {
                        chain: chain.name.clone(),
                        want: chain.rules.len(),
                        have: held.rules.len(),
                        first,
                    });
                }
            }
        }
    }
    for chain in &have.chains {
        if !want.chains.iter().any(|c| c.name == chain.name) {
            out.push(Difference::ChainForeign(chain.name.clone()));
        }
    }
    for set in &want.sets {
        match have.sets.iter().find(|s| s.name == set.name) {
            None => out.push(Difference::SetMissing(set.name.clone())),
            Some(held) if held.definition != set.definition => {
                out.push(Difference::SetDefinition(set.name.clone()))
            }
            // What the packet path adds to a counting set is counted, not
            // wanted: only its definition is the guard's. Decided by the
            // wanted state, never by flags the kernel reports.
            Some(held) if !set.elements_are_counts && held.elements != set.elements => {
                let (missing, foreign) = sorted_difference(&set.elements, &held.elements);
                out.push(Difference::Elements {
                    set: set.name.clone(),
                    missing,
                    foreign,
                });
            }
            Some(_) => {}
        }
    }
    for set in &have.sets {
        if !want.sets.iter().any(|s| s.name == set.name) {
            out.push(Difference::SetForeign(set.name.clone()));
        }
    }
    out
}

/// Elements only in `want` and only in `have`, both sorted: one merge pass.
fn sorted_difference(want: &[Attrs], have: &[Attrs]) -> (Vec<Attrs>, Vec<Attrs>) {
    let (mut missing, mut foreign) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < want.len() || j < have.len() {
        match (want.get(i), have.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                missing.push(a.clone());
                i += 1;
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                foreign.push(b.clone());
                j += 1;
            }
            (Some(a), None) => {
                missing.push(a.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    (missing, foreign)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: u8) -> Attrs {
        vec![(1, vec![key])]
    }

    fn table_with(set: crate::model::SetState) -> TableState {
        TableState {
            flags: 0,
            chains: Vec::new(),
            sets: vec![set],
            undecodable: 0,
        }
    }

    #[test]
    fn elements_of_a_counting_set_are_counts_not_differences() {
        use crate::kernel_constants::NFTA_SET_FLAGS;
        use crate::model::SetState;
        let set = |flags: u32, counts: bool, elements: Vec<Attrs>| SetState {
            name: "s".into(),
            definition: vec![(NFTA_SET_FLAGS, flags.to_be_bytes().to_vec())],
            elements,
            elements_are_counts: counts,
        };
        let dynamic = 0x20;
        let want = table_with(set(dynamic, true, vec![]));
        assert_eq!(
            compare(&want, Some(&table_with(set(dynamic, false, vec![e(1)])))),
            vec![]
        );
        // The definition still counts ...
        assert_eq!(
            compare(&want, Some(&table_with(set(0, false, vec![])))),
            vec![Difference::SetDefinition("s".into())]
        );
        // ... and a set wanted with its elements is compared element for
        // element, `flags dynamic` or not (the allowlist's hash sets are
        // dynamic for their backend): the kernel's flags decide nothing.
        for flags in [0, dynamic] {
            let plain = table_with(set(flags, false, vec![]));
            assert!(matches!(
                compare(&plain, Some(&table_with(set(flags, true, vec![e(1)])))).as_slice(),
                [Difference::Elements { .. }]
            ));
        }
    }

    #[test]
    fn element_difference_names_missing_and_foreign() {
        let (missing, foreign) = sorted_difference(&[e(1), e(3), e(5)], &[e(1), e(2), e(5), e(9)]);
        assert_eq!(missing, vec![e(3)]);
        assert_eq!(foreign, vec![e(2), e(9)]);
    }
}
