//! Change notifications from nf_tables: every committed transaction ends
//! with NEWGEN, which names the process (pid and name) that made it.

use std::collections::BTreeSet;

use netlink_packet_core::NetlinkPayload;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, GenAttribute, NfTablesMessage, RuleAttribute, SetAttribute, SetElementList,
    TableAttribute,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::Socket;
use portguard_core::ruleset::TABLE_NAME;

use crate::error::NftError;
use crate::socket::{NfSocket, is_own_thread, split_messages};
use crate::table::STANDBY_TABLE;

/// One committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub genid: u32,
    /// Thread id of the process that committed it.
    pub pid: u32,
    /// Its process name (`nft`, `iptables`, `dockerd`, ...).
    pub process: String,
    /// Made by this process (one of our threads).
    pub ours: bool,
    /// Tables touched, as `family name` (`inet portguard`, `ip6 filter`).
    pub tables: BTreeSet<String>,
    /// Notifications in the transaction that could not be decoded; their
    /// table is unknown, so treat them as possibly ours.
    pub undecodable: usize,
}

impl Change {
    /// Whether the change may concern our table.
    pub fn may_touch_our_table(&self) -> bool {
        self.undecodable > 0
            || self.tables.contains(&format!("inet {TABLE_NAME}"))
            || self.tables.contains(&format!("inet {STANDBY_TABLE}"))
            || self.tables.is_empty()
    }

    /// Whether the change may concern the IPv6 FORWARD policy.
    pub fn may_touch_ip6_filter(&self) -> bool {
        self.undecodable > 0 || self.tables.contains("ip6 filter") || self.tables.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorEvent {
    Change(Change),
    /// Notifications were lost (the socket overflowed): resync everything.
    Overflow,
}

/// Follows nf_tables changes in the network namespace it was opened in.
pub struct Monitor {
    socket: Socket,
    tables: BTreeSet<String>,
    undecodable: usize,
    pending: std::collections::VecDeque<MonitorEvent>,
}

fn family_name(family: NetfilterProtoFamily) -> &'static str {
    match family {
        NetfilterProtoFamily::Inet => "inet",
        NetfilterProtoFamily::IPv4 => "ip",
        NetfilterProtoFamily::IPv6 => "ip6",
        NetfilterProtoFamily::ARP => "arp",
        NetfilterProtoFamily::Bridge => "bridge",
        NetfilterProtoFamily::NetDev => "netdev",
        _ => "unknown",
    }
}

fn table_of(message: &NfTablesMessage) -> Option<&str> {
    match message {
        NfTablesMessage::NewTable(m) | NfTablesMessage::DeleteTable(m) => {
            m.attributes.iter().find_map(|a| match a {
                TableAttribute::Name(n) => Some(n.as_str()),
                _ => None,
            })
        }
        NfTablesMessage::NewChain(m) | NfTablesMessage::DeleteChain(m) => {
            m.attributes.iter().find_map(|a| match a {
                ChainAttribute::Table(n) => Some(n.as_str()),
                _ => None,
            })
        }
        NfTablesMessage::NewRule(m) | NfTablesMessage::DeleteRule(m) => {
            m.attributes.iter().find_map(|a| match a {
                RuleAttribute::Table(n) => Some(n.as_str()),
                _ => None,
            })
        }
        NfTablesMessage::NewSet(m) | NfTablesMessage::DeleteSet(m) => {
            m.attributes.iter().find_map(|a| match a {
                SetAttribute::Table(n) => Some(n.as_str()),
                _ => None,
            })
        }
        NfTablesMessage::NewSetElement(m) | NfTablesMessage::DeleteSetElement(m) => {
            m.attributes.iter().find_map(|a| match a {
                SetElementList::Table(n) => Some(n.as_str()),
                _ => None,
            })
        }
        _ => None,
    }
}

impl Monitor {
    pub fn open() -> Result<Monitor, NftError> {
        Self::open_with(None)
    }

    /// Like [`Monitor::open`] with a socket receive buffer of `bytes`
    /// (a small one overflows sooner: for tests of the overflow path).
    pub fn with_receive_buffer(bytes: usize) -> Result<Monitor, NftError> {
        Self::open_with(Some(bytes))
    }

    fn open_with(receive_buffer: Option<usize>) -> Result<Monitor, NftError> {
        Ok(Monitor {
            socket: NfSocket::open_monitor(receive_buffer)?,
            tables: BTreeSet::new(),
            undecodable: 0,
            pending: Default::default(),
        })
    }

    /// Blocks until the next committed transaction (or an overflow).
    pub fn next_event(&mut self) -> Result<MonitorEvent, NftError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let data = match self.socket.recv_from_full() {
                Ok((data, _)) => data,
                Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => {
                    self.tables.clear();
                    self.undecodable = 0;
                    return Ok(MonitorEvent::Overflow);
                }
                Err(e) => {
                    return Err(NftError::Io {
                        what: "receive nftables notifications",
                        source: e,
                    });
                }
            };
            let (messages, bad) = split_messages(&data);
            self.undecodable += bad;
            for msg in messages {
                let NetlinkPayload::InnerMessage(NetfilterMessage {
                    header,
                    inner: NetfilterMessageInner::NfTables(inner),
                    ..
                }) = msg.payload
                else {
                    continue;
                };
                if let NfTablesMessage::NewGen(gen_msg) = &inner {
                    let mut change = Change {
                        genid: 0,
                        pid: 0,
                        process: String::new(),
                        ours: false,
                        tables: std::mem::take(&mut self.tables),
                        undecodable: std::mem::take(&mut self.undecodable),
                    };
                    for attr in &gen_msg.attributes {
                        match attr {
                            GenAttribute::Id(id) => change.genid = *id,
                            GenAttribute::ProcPid(pid) => change.pid = *pid,
                            GenAttribute::ProcName(name) => change.process = name.clone(),
                            _ => {}
                        }
                    }
                    change.ours = change.pid != 0 && is_own_thread(change.pid);
                    self.pending.push_back(MonitorEvent::Change(change));
                } else if let Some(table) = table_of(&inner) {
                    self.tables
                        .insert(format!("{} {table}", family_name(header.family)));
                }
            }
        }
    }
}
