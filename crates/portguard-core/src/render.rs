//! Renders a [`Ruleset`] in nft syntax: what `guardctl plan` prints, what
//! golden files hold and what `nft -c -f` checks. It follows the layout of
//! `nft list table` (nftables 1.0.6) so that a listing of the live table
//! compares equal after white space is folded and counter values dropped.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::intervals::as_prefix;
use crate::ruleset::{
    Element, Hook, IfMatch, Policy, Rule, Ruleset, Set, SetKey, Stmt, TABLE_NAME,
};

/// The whole table as an nft script (`table inet portguard { ... }`).
pub fn render(ruleset: &Ruleset) -> String {
    let mut out = format!("table inet {TABLE_NAME} {{\n");
    let mut blocks = Vec::new();
    for set in &ruleset.sets {
        blocks.push(render_set(set));
    }
    for chain in &ruleset.chains {
        let mut block = format!("\tchain {} {{\n", chain.name);
        if let Some(base) = &chain.base {
            let _ = writeln!(
                block,
                "\t\ttype filter hook {} priority {}; policy {};",
                hook_name(base.hook),
                priority_text(base.priority),
                policy_name(base.policy)
            );
        }
        for rule in &chain.rules {
            let _ = writeln!(block, "\t\t{}", render_rule(rule));
        }
        block.push_str("\t}\n");
        blocks.push(block);
    }
    out.push_str(&blocks.join("\n"));
    out.push_str("}\n");
    out
}

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Input => "input",
        Hook::Forward => "forward",
    }
}

fn policy_name(policy: Policy) -> &'static str {
    match policy {
        Policy::Accept => "accept",
        Policy::Drop => "drop",
    }
}

/// `filter`, `filter - 1`, `filter + 5`: how nft names priorities near
/// the standard filter priority.
pub fn priority_text(priority: i32) -> String {
    match priority {
        0 => "filter".to_string(),
        p if p < 0 => format!("filter - {}", -i64::from(p)),
        p => format!("filter + {p}"),
    }
}

fn render_set(set: &Set) -> String {
    let mut block = format!("\tset {} {{\n", set.name);
    let key = match set.key {
        SetKey::Ifname => "ifname",
        SetKey::Port | SetKey::PortInterval | SetKey::PortCounters { .. } => "inet_service",
        SetKey::Ipv4Port | SetKey::Ipv4PortInterval => "ipv4_addr . inet_service",
        SetKey::Ipv6Port | SetKey::Ipv6PortInterval => "ipv6_addr . inet_service",
    };
    let _ = writeln!(block, "\t\ttype {key}");
    if let SetKey::PortCounters { size } = set.key {
        let _ = writeln!(block, "\t\tsize {size}");
    }
    if set.key.is_interval() {
        block.push_str("\t\tflags interval\n");
    }
    if set.key.is_dynamic() {
        block.push_str("\t\tflags dynamic\n");
    }
    if !set.elements.is_empty() {
        let elements: Vec<String> = set.elements.iter().map(render_element).collect();
        let _ = writeln!(block, "\t\telements = {{ {} }}", elements.join(", "));
    }
    block.push_str("\t}\n");
    block
}

/// One element as nft writes it (`"docker0"`, `40000-40100`,
/// `203.0.113.0/24 . 8086`).
pub fn render_element(element: &Element) -> String {
    match element {
        Element::Ifname(name) => format!("\"{name}\""),
        Element::Port(range) => range.to_string(),
        Element::Ipv4Port { addrs, ports } => {
            let (first, last) = (Ipv4Addr::from(addrs.0), Ipv4Addr::from(addrs.1));
            let addr = match as_prefix(u128::from(addrs.0), u128::from(addrs.1), 32) {
                Some(32) => first.to_string(),
                Some(len) => format!("{first}/{len}"),
                None => format!("{first}-{last}"),
            };
            format!("{addr} . {ports}")
        }
        Element::Ipv6Port { addrs, ports } => {
            let (first, last) = (Ipv6Addr::from(addrs.0), Ipv6Addr::from(addrs.1));
            let addr = match as_prefix(addrs.0, addrs.1, 128) {
                Some(128) => first.to_string(),
                Some(len) => format!("{first}/{len}"),
                None => format!("{first}-{last}"),
            };
            format!("{addr} . {ports}")
        }
    }
}

fn if_match(keyword: &str, m: &IfMatch) -> String {
    match m {
        IfMatch::Exact(name) => format!("{keyword} \"{name}\""),
        IfMatch::Prefix(prefix) => format!("{keyword} \"{prefix}*\""),
        IfMatch::InSet(set) => format!("{keyword} @{set}"),
        IfMatch::NotInSet(set) => format!("{keyword} != @{set}"),
    }
}

/// One rule on one line.
pub fn render_rule(rule: &Rule) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut stmts = rule.stmts.iter().peekable();
    while let Some(stmt) = stmts.next() {
        let text = match stmt {
            // nft folds `meta l4proto tcp th dport` into `tcp dport`.
            Stmt::L4Proto(proto) => match stmts.peek() {
                Some(Stmt::DportInSet(set)) => {
                    stmts.next();
                    format!("{proto} dport @{set}")
                }
                _ => format!("meta l4proto {proto}"),
            },
            Stmt::CtState(states) => {
                let mut names = Vec::new();
                if states.established {
                    names.push("established");
                }
                if states.related {
                    names.push("related");
                }
                if states.new {
                    names.push("new");
                }
                format!("ct state {}", names.join(","))
            }
            Stmt::CtStatusDnat => "ct status dnat".into(),
            Stmt::Iifname(m) => if_match("iifname", m),
            Stmt::Oifname(m) => if_match("oifname", m),
            Stmt::FibDaddrLocal => "fib daddr type local".into(),
            Stmt::DportInSet(set) => format!("th dport @{set}"),
            Stmt::CtOriginalDportInSet(set) => format!("ct original proto-dst @{set}"),
            Stmt::Ipv4SaddrCtOriginalDportInSet(set) => {
                format!("ip saddr . ct original proto-dst @{set}")
            }
            Stmt::Ipv6SaddrCtOriginalDportInSet(set) => {
                format!("ip6 saddr . ct original proto-dst @{set}")
            }
            Stmt::LimitPerMinute(rate) => format!("limit rate {rate}/minute"),
            Stmt::Log { prefix } => format!("log prefix \"{prefix}\" level info"),
            // nft leaves out the default burst (5 packets) when it lists.
            Stmt::LimitPerSecond { rate, burst: 5 } => format!("limit rate {rate}/second"),
            Stmt::LimitPerSecond { rate, burst } => {
                format!("limit rate {rate}/second burst {burst} packets")
            }
            Stmt::DportSetCtOriginal(proto) => {
                format!("{proto} dport set ct original proto-dst")
            }
            Stmt::Nflog {
                prefix,
                group,
                snaplen,
            } => format!("log prefix \"{prefix}\" group {group} snaplen {snaplen}"),
            Stmt::CtMarkOr(bits) => format!("ct mark set ct mark | {bits:#010x}"),
            Stmt::Counter => "counter".into(),
            Stmt::CountCtOriginalDport(set) => {
                format!("update @{set} {{ ct original proto-dst counter }}")
            }
            Stmt::Accept => "accept".into(),
            Stmt::Drop => "drop".into(),
            Stmt::Jump(chain) => format!("jump {chain}"),
        };
        words.push(text);
    }
    words.join(" ")
}

/// Folds white space, drops counter values and sorts set elements (hash
/// sets list in hash order), so that a rendering and an `nft list table`
/// of the same ruleset compare equal.
pub fn normalize_listing(text: &str) -> String {
    let folded = fold_listing(text);
    let mut out = String::with_capacity(folded.len());
    let mut rest = folded.as_str();
    while let Some(start) = rest.find("elements = { ") {
        let body_start = start + "elements = { ".len();
        let Some(len) = rest[body_start..].find(" }") else {
            break;
        };
        let mut items: Vec<&str> = rest[body_start..body_start + len].split(", ").collect();
        items.sort_unstable();
        out.push_str(&rest[..body_start]);
        out.push_str(&items.join(", "));
        rest = &rest[body_start + len..];
    }
    out.push_str(rest);
    out
}

fn fold_listing(text: &str) -> String {
    let mut words: Vec<&str> = Vec::new();
    let mut tokens = text.split_whitespace().peekable();
    while let Some(token) = tokens.next() {
        words.push(token);
        if token == "counter" && tokens.peek() == Some(&"packets") {
            // counter packets N bytes N
            for _ in 0..4 {
                tokens.next();
            }
        }
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities() {
        assert_eq!(priority_text(-1), "filter - 1");
        assert_eq!(priority_text(0), "filter");
        assert_eq!(priority_text(10), "filter + 10");
    }

    #[test]
    fn normalizing_drops_counter_values_and_wrapping() {
        assert_eq!(
            normalize_listing(
                "a {\n\tct state new counter packets 3 bytes 180 drop\n\telements = { 1,\n\t\t 2 }\n}"
            ),
            "a { ct state new counter drop elements = { 1, 2 } }"
        );
        assert_eq!(
            normalize_listing("elements = { \"b\", \"a\" } x elements = { 2 }"),
            "elements = { \"a\", \"b\" } x elements = { 2 }"
        );
    }
}
