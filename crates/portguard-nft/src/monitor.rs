//! Change notifications from nf_tables: every committed transaction ends
//! with NEWGEN, which names the process (pid and name) that made it.
//! [`Assembler`] puts the notifications of each transaction together (the
//! tables it touched, what it did to the IPv6 FORWARD policy); the
//! [`Monitor`] follows them for the daemon, and a read of the guard's
//! table follows them while it dumps (see `witness`).

use std::collections::BTreeSet;

use std::time::Instant;

use netlink_packet_core::{NlasIterator, parse_string, parse_u32_be};
use netlink_sys::Socket;
use portguard_core::ruleset::TABLE_NAME;

use crate::error::NftError;
use crate::ip6_forward::{FILTER, FORWARD, ForwardPolicy, ForwardPolicySet, identify};
use crate::kernel_constants::{
    ENOBUFS, NF_DROP, NFNL_SUBSYS_NFTABLES, NFPROTO_ARP, NFPROTO_BRIDGE, NFPROTO_INET,
    NFPROTO_IPV4, NFPROTO_IPV6, NFPROTO_NETDEV, NFT_MSG_DELCHAIN, NFT_MSG_DELTABLE,
    NFT_MSG_DESTROYCHAIN, NFT_MSG_DESTROYTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWGEN, NFT_MSG_NEWTABLE,
    NFTA_CHAIN_NAME, NFTA_CHAIN_POLICY, NFTA_GEN_ID, NFTA_GEN_PROC_NAME, NFTA_GEN_PROC_PID,
    NFTA_OBJECT_TABLE,
};
use crate::model::STANDBY_TABLE;
use crate::recreate::{Found, Recreated, Recreation};
use crate::socket::{NfSocket, is_own_thread, raw_messages};

/// One committed transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// Tables the transaction deleted and did not create again, as
    /// `family name`. A transaction that replaces a table whole (delete,
    /// then create, as the guard's adoption of an orphaned table does) is
    /// atomic: packets never see the table absent, and it is not here.
    pub deleted: BTreeSet<String>,
    /// Notifications in the transaction that could not be decoded; their
    /// table is unknown, so treat them as possibly ours.
    pub undecodable: usize,
    /// Copies of the guard's table the monitor recreated at once, before
    /// reporting this change (see [`Monitor::recreating`]).
    pub recreated: Vec<Recreated>,
    /// What the transaction did to the policy of `ip6 filter FORWARD`, if
    /// it set it (or deleted the chain); a drop comes with its setter,
    /// named by the monitor the moment it heard it.
    pub ip6_forward: Option<ForwardPolicySet>,
}

impl Change {
    /// Whether the change may concern our table.
    pub fn may_touch_our_table(&self) -> bool {
        self.may_touch_table(TABLE_NAME) || self.may_touch_table(STANDBY_TABLE)
    }

    /// Whether the change may concern table `inet NAME`: it named it, or
    /// a notification of it could not be read, or it named no table.
    pub fn may_touch_table(&self, name: &str) -> bool {
        self.undecodable > 0
            || self.tables.contains(&format!("inet {name}"))
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
    Overflow {
        /// Copies of the guard's table the monitor found missing and
        /// recreated at once (a deletion may have been among the lost).
        recreated: Vec<Recreated>,
    },
}

/// Follows nf_tables changes in the network namespace it was opened in.
pub struct Monitor {
    socket: Socket,
    assembler: Assembler,
    pending: std::collections::VecDeque<MonitorEvent>,
    /// Recreates deleted copies of the guard's table (with its own socket).
    recreation: Option<(Recreation, NfSocket)>,
}

fn family_name(family: u8) -> &'static str {
    match family {
        NFPROTO_INET => "inet",
        NFPROTO_IPV4 => "ip",
        NFPROTO_ARP => "arp",
        NFPROTO_NETDEV => "netdev",
        NFPROTO_BRIDGE => "bridge",
        NFPROTO_IPV6 => "ip6",
        _ => "unknown",
    }
}

/// What a notification did to a table as a whole.
#[derive(Debug, PartialEq, Eq)]
enum TableEvent {
    /// `NEWTABLE`: created (or its flags updated).
    Created,
    /// `DELTABLE`, `DESTROYTABLE`.
    Deleted,
    /// A chain, rule, set, element, object or flowtable of the table.
    Neither,
}

/// What a chain notification says of the chain: its name, and its
/// policy (base chains; the kernel sends the policy in force).
#[derive(Debug, PartialEq, Eq)]
struct ChainEvent {
    name: String,
    policy: Option<u32>,
    deleted: bool,
}

/// One notification, read only as far as the monitor needs: its type,
/// family, and the table it names (NEWGEN: the generation and the
/// process; a chain: its name and policy). Rules, sets and elements are
/// never decoded: a restore of the guard's table sends hundreds of
/// notifications, and decoding them all (as `netlink-packet-netfilter`
/// does) kept this thread busy for 11 ms per restore in a debug build,
/// while the next deletion waited in the socket behind them.
#[derive(Debug, PartialEq, Eq)]
enum Notification {
    /// An object of `table` changed, or the table itself.
    Object {
        family: u8,
        table: String,
        whole: TableEvent,
        /// For a chain notification.
        chain: Option<ChainEvent>,
    },
    /// The end of a transaction.
    NewGen {
        genid: u32,
        pid: u32,
        process: String,
    },
    /// Not nf_tables, or a type that names no table.
    Other,
}

/// Reads one raw notification (netlink header excluded); `None` when it
/// is malformed.
fn notification(kind: u16, body: &[u8]) -> Option<Notification> {
    if kind >> 8 != NFNL_SUBSYS_NFTABLES {
        return Some(Notification::Other);
    }
    let family = *body.first()?;
    let attributes = NlasIterator::new(body.get(4..)?);
    match kind & 0xff {
        NFT_MSG_NEWGEN => {
            let (mut genid, mut pid, mut process) = (0, 0, String::new());
            for nla in attributes {
                let nla = nla.ok()?;
                match nla.kind() {
                    NFTA_GEN_ID => genid = parse_u32_be(nla.value()).ok()?,
                    NFTA_GEN_PROC_PID => pid = parse_u32_be(nla.value()).ok()?,
                    NFTA_GEN_PROC_NAME => process = parse_string(nla.value()).ok()?,
                    _ => {}
                }
            }
            Some(Notification::NewGen {
                genid,
                pid,
                process,
            })
        }
        message => {
            let is_chain = matches!(
                message,
                NFT_MSG_NEWCHAIN | NFT_MSG_DELCHAIN | NFT_MSG_DESTROYCHAIN
            );
            let whole = match message {
                NFT_MSG_NEWTABLE => TableEvent::Created,
                NFT_MSG_DELTABLE | NFT_MSG_DESTROYTABLE => TableEvent::Deleted,
                _ => TableEvent::Neither,
            };
            let (mut table, mut name, mut policy) = (None, String::new(), None);
            for nla in attributes {
                let nla = nla.ok()?;
                match nla.kind() {
                    NFTA_OBJECT_TABLE => table = Some(parse_string(nla.value()).ok()?),
                    NFTA_CHAIN_NAME if is_chain => name = parse_string(nla.value()).ok()?,
                    NFTA_CHAIN_POLICY if is_chain => policy = Some(parse_u32_be(nla.value()).ok()?),
                    _ => {}
                }
                // Only a chain's name and policy are read past the table.
                if table.is_some() && !is_chain {
                    break;
                }
            }
            let Some(table) = table else {
                return Some(Notification::Other);
            };
            Some(Notification::Object {
                family,
                table,
                whole,
                chain: is_chain.then_some(ChainEvent {
                    name,
                    policy,
                    deleted: message != NFT_MSG_NEWCHAIN,
                }),
            })
        }
    }
}

/// Puts the notifications of each committed transaction together.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    /// What the transaction being received has touched so far.
    building: Change,
    /// The policy it left on `ip6 filter FORWARD`, if it set it.
    ip6_forward: Option<ForwardPolicy>,
}

impl Assembler {
    /// The transactions the notifications in `data` (one datagram)
    /// complete, in order. Their `ours` and `recreated` are left to the
    /// caller; a drop of the IPv6 FORWARD policy comes without its setter.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Vec<Change> {
        let mut done = Vec::new();
        let Ok(messages) = raw_messages(data) else {
            self.building.undecodable += 1;
            return done;
        };
        for raw in messages {
            match notification(raw.kind, &raw.body) {
                None => self.building.undecodable += 1,
                Some(Notification::Other) => {}
                Some(Notification::Object {
                    family,
                    table,
                    whole,
                    chain,
                }) => self.object(family, table, whole, chain),
                Some(Notification::NewGen {
                    genid,
                    pid,
                    process,
                }) => {
                    let mut change = std::mem::take(&mut self.building);
                    change.genid = genid;
                    change.pid = pid;
                    change.process = process;
                    change.ip6_forward = self.ip6_forward.take().map(|policy| ForwardPolicySet {
                        policy,
                        setter: None,
                    });
                    done.push(change);
                }
            }
        }
        done
    }

    /// Forgets a transaction half received (notifications were lost).
    pub(crate) fn reset(&mut self) {
        *self = Assembler::default();
    }

    fn object(&mut self, family: u8, table: String, whole: TableEvent, chain: Option<ChainEvent>) {
        let is_ip6_filter = family == NFPROTO_IPV6 && table == FILTER;
        let table = format!("{} {table}", family_name(family));
        match whole {
            TableEvent::Deleted => {
                if is_ip6_filter {
                    self.ip6_forward = Some(ForwardPolicy::NoChain);
                }
                self.building.deleted.insert(table.clone());
            }
            TableEvent::Created => {
                self.building.deleted.remove(&table);
            }
            TableEvent::Neither => {}
        }
        if let Some(chain) = chain.filter(|c| is_ip6_filter && c.name == FORWARD) {
            self.ip6_forward = match (chain.deleted, chain.policy) {
                (true, _) => Some(ForwardPolicy::NoChain),
                (false, Some(NF_DROP)) => Some(ForwardPolicy::Drop),
                (false, Some(_)) => Some(ForwardPolicy::Accept),
                (false, None) => self.ip6_forward,
            };
        }
        self.building.tables.insert(table);
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
            assembler: Assembler::default(),
            pending: Default::default(),
            recreation: None,
        })
    }

    /// Makes the monitor recreate a copy of the guard's table that
    /// somebody else deleted, from the ruleset `recreation` keeps ready,
    /// before it reports the deletion (see [`Recreation`]). Opens a
    /// socket in the calling thread's network namespace.
    pub fn recreating(mut self, recreation: Recreation) -> Result<Monitor, NftError> {
        self.recreation = Some((recreation, NfSocket::open()?));
        Ok(self)
    }

    /// Blocks until the next committed transaction (or an overflow).
    pub fn next_event(&mut self) -> Result<MonitorEvent, NftError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let data = match self.socket.recv_from_full() {
                Ok((data, _)) => data,
                Err(e) if e.raw_os_error() == Some(ENOBUFS) => {
                    self.assembler.reset();
                    let recreated = self.recreate_missing(Instant::now());
                    return Ok(MonitorEvent::Overflow { recreated });
                }
                Err(e) => {
                    return Err(NftError::Io {
                        what: "receive nftables notifications",
                        source: e,
                    });
                }
            };
            let heard = Instant::now();
            for mut change in self.assembler.feed(&data) {
                change.ours = change.pid != 0 && is_own_thread(change.pid);
                if change.ours {
                    self.pending.push_back(MonitorEvent::Change(change));
                    continue;
                }
                // Named first: the committer (an `ip6tables` that
                // dockerd started) exits right after its commit.
                if let Some(set) = change
                    .ip6_forward
                    .as_mut()
                    .filter(|set| set.policy == ForwardPolicy::Drop)
                {
                    set.setter = Some(identify(change.pid, &change.process));
                }
                self.recreate(&mut change, heard);
                self.pending.push_back(MonitorEvent::Change(change));
            }
        }
    }

    /// After an overflow: a deletion may have been among the lost
    /// notifications, so every kept copy is put back if missing (the
    /// create-only transaction changes nothing where the copy exists).
    /// Without this a flood of other changes, such as the notifications
    /// of our own restores, would leave the host on one copy until the
    /// loop's slower restore.
    fn recreate_missing(&mut self, heard: Instant) -> Vec<Recreated> {
        let Some((recreation, sock)) = &mut self.recreation else {
            return Vec::new();
        };
        let kept = recreation.tables();
        let copies = kept.iter().map(|t| (t.as_str(), Found::Missing));
        recreation.recreate_all(sock, copies, heard)
    }

    /// Puts back the copies of the guard's table `change` touched, if
    /// ready to.
    fn recreate(&mut self, change: &mut Change, heard: Instant) {
        let Some((recreation, sock)) = &mut self.recreation else {
            return;
        };
        // Every kept copy the transaction touched: one it left deleted is
        // created, one it changed any other way (flushed, made dormant,
        // given a foreign rule or element) replaced whole.
        let touched = change.tables.iter().filter_map(|t| {
            let found = if change.deleted.contains(t) {
                Found::Missing
            } else {
                Found::Changed
            };
            t.strip_prefix("inet ").map(|name| (name, found))
        });
        change.recreated = recreation.recreate_all(sock, touched, heard);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::kernel_constants::NF_ACCEPT;
    use crate::model::{Ownership, TableSpec};

    /// The batch the guard sends to create its table, as the monitor
    /// would receive it: each message serialized alone.
    fn serialized(items: Vec<crate::socket::BatchItem>) -> Vec<(u16, Vec<u8>)> {
        items
            .into_iter()
            .map(|item| {
                let buf = wire(item);
                let kind = u16::from_ne_bytes([buf[4], buf[5]]);
                (kind, buf[16..].to_vec())
            })
            .collect()
    }

    /// One message as netlink puts it on the wire, header included.
    fn wire(item: crate::socket::BatchItem) -> Vec<u8> {
        let message = netlink_packet_netfilter::NetfilterMessage::new(
            netlink_packet_netfilter::NetfilterHeader::new(item.family, 0, 0),
            item.message,
        );
        let mut msg = netlink_packet_core::NetlinkMessage::new(
            Default::default(),
            netlink_packet_core::NetlinkPayload::InnerMessage(message),
        );
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn every_message_of_a_table_creation_names_the_table_and_only_the_deletion_deletes() {
        let config = portguard_core::Snapshot::default();
        let ruleset = portguard_core::plan(&Default::default(), &config);
        let spec = TableSpec {
            name: STANDBY_TABLE.into(),
            ownership: Ownership::Unowned,
        };
        let creation = serialized(crate::batch::create_table(&spec, &ruleset));
        assert!(creation.len() > 20, "a whole table: {}", creation.len());
        for (i, (kind, body)) in creation.iter().enumerate() {
            let Some(Notification::Object {
                family,
                table,
                whole,
                ..
            }) = notification(*kind, body)
            else {
                panic!("type {kind:#x} not read as an object of the table");
            };
            assert_eq!(
                (family_name(family), table.as_str()),
                ("inet", STANDBY_TABLE)
            );
            let expected = if i == 0 {
                TableEvent::Created
            } else {
                TableEvent::Neither
            };
            assert_eq!(whole, expected, "type {kind:#x}");
        }
        // The batch's last message deletes (an adoption may precede it).
        let deletion = serialized(crate::batch::delete_table(STANDBY_TABLE, 0));
        let (kind, body) = deletion.last().unwrap();
        assert_eq!(
            notification(*kind, body),
            Some(Notification::Object {
                family: 1,
                table: STANDBY_TABLE.into(),
                whole: TableEvent::Deleted,
                chain: None,
            })
        );
    }

    /// Messages as one datagram, the way notifications arrive, each
    /// transaction closed by a NEWGEN naming `pid` and `process`.
    fn datagram(transactions: Vec<(Vec<crate::socket::BatchItem>, u32, &str)>) -> Vec<u8> {
        use netlink_packet_netfilter::nftables::{GenAttribute, GenMessage, NfTablesMessage};
        let mut out = Vec::new();
        for (items, pid, process) in transactions {
            let newgen = crate::socket::BatchItem {
                family: netlink_packet_netfilter::NetfilterProtoFamily::Unspec,
                flags: 0,
                message: NfTablesMessage::NewGen(GenMessage {
                    attributes: vec![
                        GenAttribute::Id(7),
                        GenAttribute::ProcPid(pid),
                        GenAttribute::ProcName(process.into()),
                    ],
                }),
                what: String::new(),
            };
            for item in items.into_iter().chain([newgen]) {
                out.extend(wire(item));
                // Messages are 4-byte aligned.
                out.resize(out.len().next_multiple_of(4), 0);
            }
        }
        out
    }

    /// `ip6 filter FORWARD` with `policy` (`None`: the chain deleted).
    fn forward_chain(policy: Option<u32>) -> crate::socket::BatchItem {
        use netlink_packet_netfilter::nftables::{ChainAttribute, ChainMessage, NfTablesMessage};
        let mut attributes = vec![
            ChainAttribute::Table("filter".into()),
            ChainAttribute::Name("FORWARD".into()),
        ];
        attributes.extend(policy.map(ChainAttribute::Policy));
        let message = ChainMessage { attributes };
        crate::socket::BatchItem {
            family: netlink_packet_netfilter::NetfilterProtoFamily::IPv6,
            flags: 0,
            message: match policy {
                Some(_) => NfTablesMessage::NewChain(message),
                None => NfTablesMessage::DeleteChain(message),
            },
            what: String::new(),
        }
    }

    #[test]
    fn transactions_say_what_they_did_to_the_ip6_forward_policy_and_nothing_else_does() {
        let mut assembler = Assembler::default();
        let other = crate::batch::delete_table(STANDBY_TABLE, 0);
        let changes = assembler.feed(&datagram(vec![
            (vec![forward_chain(Some(NF_DROP))], 40, "ip6tables"),
            (other, 41, "nft"),
            (vec![forward_chain(Some(NF_ACCEPT))], 42, "ip6tables"),
            (
                vec![forward_chain(Some(NF_DROP)), forward_chain(None)],
                43,
                "nft",
            ),
        ]));
        let policies: Vec<_> = changes
            .iter()
            .map(|c| (c.pid, c.ip6_forward.as_ref().map(|s| s.policy)))
            .collect();
        assert_eq!(
            policies,
            vec![
                (40, Some(ForwardPolicy::Drop)),
                (41, None),
                (42, Some(ForwardPolicy::Accept)),
                (43, Some(ForwardPolicy::NoChain)),
            ]
        );
        assert!(changes[0].tables.contains("ip6 filter"));
        assert_eq!(changes[0].process, "ip6tables");
        assert!(changes[1].may_touch_table(STANDBY_TABLE));
        assert!(!changes[0].may_touch_table(STANDBY_TABLE));
    }

    #[test]
    fn malformed_notifications_are_counted_not_guessed() {
        // nf_tables type NEWRULE, family inet, an attribute longer than
        // the message.
        let body = [1, 0, 0, 0, 200, 0, 1, 0, b'x', 0, 0, 0];
        assert_eq!(notification((NFNL_SUBSYS_NFTABLES << 8) | 6, &body), None);
        assert_eq!(notification((NFNL_SUBSYS_NFTABLES << 8) | 6, &[]), None);
        // Another subsystem's message is not nf_tables' business.
        assert_eq!(notification(1 << 8, &body), Some(Notification::Other));
    }
}
