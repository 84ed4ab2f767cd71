//! Docker sets the IPv6 FORWARD policy to drop when it turns IPv6
//! forwarding on, which breaks IPv6 routing that has nothing to do with
//! containers. A drop in any base chain is final, so the only fix is to
//! change that chain's policy back (the one place portguard writes outside
//! its own table). The same policy is how ufw, firewalld or an
//! administrator close routing, so only Docker's drop is undone: who set
//! it is told by the monitor, which names the committing process the
//! moment it hears the change ([`identify`]); [`DropWitness`] keeps track
//! and decides. The legacy x_tables send no notifications: their drop is
//! taken for Docker's only when it appeared while Docker was away and is
//! there when Docker comes back.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{ChainAttribute, ChainMessage, NfTablesMessage};
use portguard_core::ip6_forward::{DropSetter, Ip6Firewall, ProcessStat, classify, parse_stat};

use crate::error::NftError;
use crate::kernel_constants::{NF_ACCEPT, NF_DROP};
use crate::socket::{BatchItem, NfSocket};

/// `ip6tables-legacy` waits at most this long for the xtables lock (`-w`),
/// and is killed if it takes longer than [`LEGACY_DEADLINE`] in all: the
/// reconcile loop must never wait without a bound.
const LEGACY_LOCK_WAIT: &str = "1";
const LEGACY_DEADLINE: Duration = Duration::from_secs(3);

pub(crate) const FILTER: &str = "filter";
pub(crate) const FORWARD: &str = "FORWARD";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardPolicy {
    Accept,
    Drop,
    /// No `ip6 filter FORWARD` chain: nobody set a policy.
    NoChain,
}

/// One policy found set to drop and put back to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRestore {
    pub backend: Ip6Firewall,
    /// Who had set it.
    pub set_by: DropSetter,
}

/// A transaction that set the policy of nf_tables' `ip6 filter FORWARD`
/// (or deleted the chain), as the monitor heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardPolicySet {
    pub policy: ForwardPolicy,
    /// Who committed it, named at once; for a drop only.
    pub setter: Option<DropSetter>,
}

/// Who committed a transaction that set the policy to drop: the process
/// nf_tables names (`pid`, `name`), and its parent, from `/proc`. Called
/// the moment the change is heard: the committer (an `ip6tables` dockerd
/// started) exits right after, but until its parent reaps it, it stays a
/// zombie whose stat is readable. Needs no ptrace: `/proc/PID/stat` of
/// root's processes is readable under the unit's `ProtectProc=invisible`.
pub(crate) fn identify(pid: u32, name: &str) -> DropSetter {
    let stat = read_stat(pid);
    let parent = stat
        .as_ref()
        .filter(|s| s.ppid != 0)
        .and_then(|s| read_stat(s.ppid));
    classify(pid, name, stat.as_ref(), parent.as_ref())
}

fn read_stat(pid: u32) -> Option<ProcessStat> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(&text),
        Err(e) => {
            tracing::debug!("could not read /proc/{pid}/stat: {e}");
            None
        }
    }
}

/// Why the guard looks at the IPv6 FORWARD policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// The daemon starts: a drop found now was set before it, by whoever.
    Start,
    /// Docker (re)connected: on iptables-legacy the only sign that dockerd
    /// started, which is when it sets its drop.
    DockerBack,
    /// Any other look (a change heard, the periodic verify).
    Again {
        /// Whether Docker is connected now.
        docker_connected: bool,
    },
}

/// Who set each drop in force, as far as the guard saw; decides which
/// drops are Docker's to undo. Pure: [`Ip6Policy`] feeds it what it heard
/// and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropWitness {
    /// Who set nf_tables' drop; `None` while the policy is not drop.
    nftables: Option<DropSetter>,
    /// nf_tables' drop was set by a committer that had exited before it
    /// could be named, while Docker was away: decided when Docker is back.
    nftables_while_away: bool,
    /// Notifications were lost since the last look.
    lost: bool,
    /// Who set the legacy drop; `None` while it is not drop, or while it
    /// appeared with Docker away and Docker is not back yet.
    legacy: Option<DropSetter>,
    /// The legacy policy at the last look.
    legacy_policy: ForwardPolicy,
}

impl Default for DropWitness {
    fn default() -> Self {
        DropWitness {
            nftables: None,
            nftables_while_away: false,
            lost: false,
            legacy: None,
            legacy_policy: ForwardPolicy::NoChain,
        }
    }
}

impl DropWitness {
    /// What the monitor heard since the last look: the transactions that
    /// set nf_tables' policy, in order, and whether notifications were
    /// lost (see [`DropWitness::heard`], [`DropWitness::lost`]).
    pub fn hear(&mut self, heard: &[ForwardPolicySet], lost: bool) {
        for set in heard {
            self.heard(set);
        }
        if lost {
            self.lost();
        }
    }

    /// A transaction set nf_tables' policy. A drop set again while one is
    /// in force keeps the setter of the first unless the newcomer is not
    /// Docker: a re-declared drop (iptables-nft-restore repeats policies)
    /// must not turn an administrator's drop into Docker's.
    pub fn heard(&mut self, set: &ForwardPolicySet) {
        match set.policy {
            ForwardPolicy::Drop => {
                let setter = set.setter.clone().unwrap_or(DropSetter::Unheard);
                let keep = self
                    .nftables
                    .as_ref()
                    .is_some_and(|old| !old.is_docker() && setter.is_docker());
                if !keep {
                    self.nftables = Some(setter);
                    self.nftables_while_away = false;
                }
            }
            ForwardPolicy::Accept | ForwardPolicy::NoChain => self.nftables = None,
        }
    }

    /// Notifications were lost: a drop found at the next look may have
    /// been set by anybody since.
    pub fn lost(&mut self) {
        self.lost = true;
    }

    /// nf_tables' policy is `policy` at `look`: whether to set it back.
    /// A drop whose committer had exited before it could be named (about
    /// one Docker start in twenty on a loaded machine: dockerd reaps its
    /// `ip6tables` first) is treated like a legacy drop: Docker's if it
    /// came while Docker was away and is there when Docker is back, left
    /// alone otherwise.
    pub fn nftables_found(&mut self, policy: ForwardPolicy, look: Look) -> bool {
        let lost = std::mem::take(&mut self.lost);
        if policy != ForwardPolicy::Drop {
            self.nftables = None;
            return false;
        }
        let known_not_docker = self.nftables.as_ref().is_some_and(|s| !s.is_docker());
        if self.nftables.is_none() || (lost && !known_not_docker) {
            self.nftables = Some(if look == Look::Start {
                DropSetter::BeforeStart
            } else {
                DropSetter::Unheard
            });
            self.nftables_while_away = false;
        }
        if let Some(DropSetter::Gone { .. }) = self.nftables {
            match look {
                Look::Again {
                    docker_connected: false,
                } => self.nftables_while_away = true,
                Look::DockerBack if self.nftables_while_away => {
                    self.nftables = Some(DropSetter::DockerStart);
                }
                _ => {}
            }
        }
        self.nftables.as_ref().is_some_and(DropSetter::is_docker)
    }

    /// The legacy policy is `policy` at `look`: whether to set it back.
    /// Only a drop that appeared while Docker was away and is there when
    /// Docker comes back is taken for Docker's, once; every other one
    /// (found at start, or while Docker was up) is left alone.
    pub fn legacy_found(&mut self, policy: ForwardPolicy, look: Look) -> bool {
        self.legacy_policy = policy;
        if policy != ForwardPolicy::Drop {
            self.legacy = None;
            return false;
        }
        match look {
            Look::Start => {
                self.legacy.get_or_insert(DropSetter::BeforeStart);
                false
            }
            Look::DockerBack => self
                .legacy
                .get_or_insert(DropSetter::DockerStart)
                .is_docker(),
            Look::Again {
                docker_connected: true,
            } => {
                self.legacy.get_or_insert(DropSetter::Unheard);
                false
            }
            // Docker may be starting: decided when it is back.
            Look::Again {
                docker_connected: false,
            } => false,
        }
    }

    /// The policy of `backend` was set back to accept.
    pub fn restored(&mut self, backend: Ip6Firewall) {
        match backend {
            Ip6Firewall::Nftables => self.nftables = None,
            Ip6Firewall::IptablesLegacy => {
                self.legacy = None;
                self.legacy_policy = ForwardPolicy::Accept;
            }
        }
    }

    /// Who set each drop in force: nf_tables' by `nftables` (its policy
    /// now), the legacy one as at the last look.
    pub fn drops(&self, nftables: ForwardPolicy) -> Vec<(Ip6Firewall, DropSetter)> {
        let unknown = || DropSetter::Unheard;
        let mut out = Vec::new();
        if nftables == ForwardPolicy::Drop {
            let setter = self.nftables.clone().unwrap_or_else(unknown);
            out.push((Ip6Firewall::Nftables, setter));
        }
        if self.legacy_policy == ForwardPolicy::Drop {
            let setter = self.legacy.clone().unwrap_or_else(unknown);
            out.push((Ip6Firewall::IptablesLegacy, setter));
        }
        out
    }
}

/// A handle on the IPv6 FORWARD policy in one network namespace.
pub struct Ip6Policy {
    sock: NfSocket,
    netns: NetnsRef,
    witness: DropWitness,
}

impl Ip6Policy {
    /// Opens a handle in the calling thread's network namespace.
    pub fn open() -> Result<Ip6Policy, NftError> {
        Ok(Ip6Policy {
            sock: NfSocket::open()?,
            netns: NetnsRef::current()?,
            witness: DropWitness::default(),
        })
    }

    /// The policy of nf_tables' `ip6 filter FORWARD` chain.
    pub fn forward_policy(&mut self) -> Result<ForwardPolicy, NftError> {
        let reply = self.sock.request(
            NetfilterProtoFamily::IPv6,
            NfTablesMessage::GetChain(forward_chain(Vec::new())),
        )?;
        let Some(NfTablesMessage::NewChain(chain)) = reply else {
            return Ok(ForwardPolicy::NoChain);
        };
        Ok(chain
            .attributes
            .iter()
            .find_map(|a| match a {
                ChainAttribute::Policy(NF_DROP) => Some(ForwardPolicy::Drop),
                ChainAttribute::Policy(_) => Some(ForwardPolicy::Accept),
                _ => None,
            })
            .unwrap_or(ForwardPolicy::NoChain))
    }

    /// What the monitor heard since the last look (see
    /// [`DropWitness::hear`]).
    pub fn hear(&mut self, heard: &[ForwardPolicySet], lost: bool) {
        self.witness.hear(heard, lost);
    }

    /// Looks at the IPv6 FORWARD policies, in nf_tables and, where the
    /// legacy tables are in use, through `ip6tables-legacy`, and (if
    /// `restore`) sets back to accept each drop that is Docker's. Returns
    /// what it set back.
    pub fn look(&mut self, look: Look, restore: bool) -> Result<Vec<PolicyRestore>, NftError> {
        let mut restored = Vec::new();
        let policy = self.forward_policy()?;
        if look == Look::Start && policy == ForwardPolicy::Drop && self.witness.nftables.is_none() {
            // Nobody to name: the chains beside it say whether it is
            // Docker's (a guard installed on a running Docker host).
            let chains = crate::inventory::netfilter_inventory()
                .map(|inventory| inventory.chains)
                .unwrap_or_default();
            self.witness.nftables = Some(portguard_core::ip6_forward::found_at_start(&chains));
        }
        if self.witness.nftables_found(policy, look) && restore {
            let set_by = self.witness.nftables.clone();
            self.sock.send_batch(vec![BatchItem {
                family: NetfilterProtoFamily::IPv6,
                flags: 0,
                message: NfTablesMessage::NewChain(forward_chain(vec![ChainAttribute::Policy(
                    NF_ACCEPT,
                )])),
                what: "set the policy of ip6 filter FORWARD to accept".into(),
            }])?;
            self.witness.restored(Ip6Firewall::Nftables);
            restored.push(PolicyRestore {
                backend: Ip6Firewall::Nftables,
                set_by: set_by.unwrap_or(DropSetter::Unheard),
            });
        }
        let legacy = legacy_policy_in(&self.netns)?;
        if self.witness.legacy_found(legacy, look) && restore {
            let set_by = self.witness.legacy.clone();
            run_legacy(
                &self.netns,
                &["-w", LEGACY_LOCK_WAIT, "-P", FORWARD, "ACCEPT"],
            )?;
            self.witness.restored(Ip6Firewall::IptablesLegacy);
            restored.push(PolicyRestore {
                backend: Ip6Firewall::IptablesLegacy,
                set_by: set_by.unwrap_or(DropSetter::DockerStart),
            });
        }
        Ok(restored)
    }

    /// Each drop in force and who set it: nf_tables' read now, the legacy
    /// one as at the last look (reading it takes a process).
    pub fn drops(&mut self) -> Result<Vec<(Ip6Firewall, DropSetter)>, NftError> {
        let policy = self.forward_policy()?;
        Ok(self.witness.drops(policy))
    }
}

fn forward_chain(extra: Vec<ChainAttribute>) -> ChainMessage {
    let mut attributes = vec![
        ChainAttribute::Table(FILTER.into()),
        ChainAttribute::Name(FORWARD.into()),
    ];
    attributes.extend(extra);
    ChainMessage { attributes }
}

/// The network namespace a handle was opened in. Legacy x_tables are
/// reached through `ip6tables-legacy`, a separate process, which must run
/// in that namespace, not in whatever namespace the calling thread is in.
#[derive(Debug)]
pub(crate) struct NetnsRef {
    file: std::fs::File,
    inode: u64,
}

impl NetnsRef {
    pub(crate) fn current() -> Result<NetnsRef, NftError> {
        use std::os::unix::fs::MetadataExt;
        let file = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(NftError::io("open own network namespace"))?;
        let inode = file
            .metadata()
            .map_err(NftError::io("stat own network namespace"))?
            .ino();
        Ok(NetnsRef { file, inode })
    }

    /// Whether the calling thread is in this namespace.
    fn is_current(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/thread-self/ns/net").is_ok_and(|m| m.ino() == self.inode)
    }

    /// A command that runs in this namespace.
    fn command(&self, program: &str) -> Command {
        use std::os::fd::AsRawFd;
        if self.is_current() {
            return Command::new(program);
        }
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!(
            "--net=/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
        .arg(program);
        cmd
    }
}

/// Whether the legacy ip6 `filter` table is loaded in the calling thread's
/// network namespace (nft cannot see it; `ip6tables-legacy` can).
fn legacy_filter_in_use() -> bool {
    std::fs::read_to_string("/proc/thread-self/net/ip6_tables_names")
        .map(|names| names.lines().any(|l| l.trim() == FILTER))
        .unwrap_or(false)
}

fn legacy_filter_in_use_in(netns: &NetnsRef) -> bool {
    if netns.is_current() {
        return legacy_filter_in_use();
    }
    let mut cat = netns.command("cat");
    cat.arg("/proc/thread-self/net/ip6_tables_names");
    run_bounded(cat)
        .map(|(_, stdout, _)| stdout.lines().any(|l| l.trim() == FILTER))
        .unwrap_or(false)
}

/// The legacy FORWARD policy in `netns`; `NoChain` when the legacy table is
/// not in use there.
fn legacy_policy_in(netns: &NetnsRef) -> Result<ForwardPolicy, NftError> {
    if !legacy_filter_in_use_in(netns) {
        return Ok(ForwardPolicy::NoChain);
    }
    let listing = run_legacy(netns, &["-w", LEGACY_LOCK_WAIT, "-S", FORWARD])?;
    Ok(if listing.lines().any(|l| l.trim() == "-P FORWARD DROP") {
        ForwardPolicy::Drop
    } else {
        ForwardPolicy::Accept
    })
}

fn run_legacy(netns: &NetnsRef, args: &[&str]) -> Result<String, NftError> {
    let mut cmd = netns.command("ip6tables-legacy");
    cmd.args(args);
    let (ok, stdout, stderr) = run_bounded(cmd).map_err(|e| {
        NftError::Command(format!(
            "the legacy ip6 filter table is in use but ip6tables-legacy did not run: {e}"
        ))
    })?;
    if !ok {
        return Err(NftError::Command(format!(
            "ip6tables-legacy {} failed: {}",
            args.join(" "),
            stderr.trim()
        )));
    }
    Ok(stdout)
}

/// Runs `cmd` to completion or kills it at [`LEGACY_DEADLINE`]: success,
/// stdout and stderr. Its output is small (one chain), so it is read after
/// it exits.
fn run_bounded(mut cmd: Command) -> std::io::Result<(bool, String, String)> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + LEGACY_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("killed after {} s", LEGACY_DEADLINE.as_secs()),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr)?;
    }
    Ok((status.success(), stdout, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker() -> DropSetter {
        DropSetter::Docker {
            process: "ip6tables".into(),
            pid: 10,
        }
    }

    fn ufw() -> DropSetter {
        DropSetter::Process {
            process: "ip6tables-resto".into(),
            pid: 20,
            parent: Some("ufw-init".into()),
        }
    }

    fn set(policy: ForwardPolicy, setter: Option<DropSetter>) -> ForwardPolicySet {
        ForwardPolicySet { policy, setter }
    }

    const AGAIN: Look = Look::Again {
        docker_connected: true,
    };
    const DOCKER_AWAY: Look = Look::Again {
        docker_connected: false,
    };

    #[test]
    fn a_drop_docker_set_is_undone_and_one_anybody_else_set_is_left() {
        let mut w = DropWitness::default();
        w.heard(&set(ForwardPolicy::Drop, Some(docker())));
        assert!(w.nftables_found(ForwardPolicy::Drop, AGAIN));
        w.restored(Ip6Firewall::Nftables);
        assert_eq!(w.drops(ForwardPolicy::Accept), vec![]);

        w.heard(&set(ForwardPolicy::Drop, Some(ufw())));
        assert!(!w.nftables_found(ForwardPolicy::Drop, AGAIN));
        // Not on the periodic verify either, nor when Docker comes back.
        assert!(!w.nftables_found(ForwardPolicy::Drop, AGAIN));
        assert!(!w.nftables_found(ForwardPolicy::Drop, Look::DockerBack));
        assert_eq!(
            w.drops(ForwardPolicy::Drop),
            vec![(Ip6Firewall::Nftables, ufw())]
        );
    }

    #[test]
    fn docker_declaring_the_drop_again_does_not_make_an_administrators_drop_docker_s() {
        let mut w = DropWitness::default();
        w.heard(&set(ForwardPolicy::Drop, Some(ufw())));
        w.heard(&set(ForwardPolicy::Drop, Some(docker())));
        assert!(!w.nftables_found(ForwardPolicy::Drop, AGAIN));
        // Once it was accept in between, Docker's new drop is Docker's.
        w.heard(&set(ForwardPolicy::Accept, None));
        w.heard(&set(ForwardPolicy::Drop, Some(docker())));
        assert!(w.nftables_found(ForwardPolicy::Drop, AGAIN));
        // A drop by somebody else after Docker's takes it over.
        w.heard(&set(ForwardPolicy::Drop, Some(ufw())));
        assert!(!w.nftables_found(ForwardPolicy::Drop, AGAIN));
    }

    #[test]
    fn a_drop_found_at_start_unheard_gone_or_after_lost_notifications_is_left() {
        let mut w = DropWitness::default();
        assert!(!w.nftables_found(ForwardPolicy::Drop, Look::Start));
        assert_eq!(
            w.drops(ForwardPolicy::Drop),
            vec![(Ip6Firewall::Nftables, DropSetter::BeforeStart)]
        );
        assert!(!w.nftables_found(ForwardPolicy::Drop, Look::DockerBack));

        let mut w = DropWitness::default();
        assert!(!w.nftables_found(ForwardPolicy::Drop, AGAIN));
        assert_eq!(
            w.drops(ForwardPolicy::Drop),
            vec![(Ip6Firewall::Nftables, DropSetter::Unheard)]
        );

        let gone = DropSetter::Gone {
            process: "ip6tables".into(),
            pid: 30,
        };
        let mut w = DropWitness::default();
        w.heard(&set(ForwardPolicy::Drop, Some(gone.clone())));
        assert!(!w.nftables_found(ForwardPolicy::Drop, AGAIN));
        assert!(!w.nftables_found(ForwardPolicy::Drop, Look::DockerBack));
        assert_eq!(
            w.drops(ForwardPolicy::Drop),
            vec![(Ip6Firewall::Nftables, gone)]
        );

        // Docker's drop, then notifications lost: anybody may have set it
        // since.
        let mut w = DropWitness::default();
        w.heard(&set(ForwardPolicy::Drop, Some(docker())));
        w.lost();
        assert!(!w.nftables_found(ForwardPolicy::Drop, AGAIN));
        assert_eq!(
            w.drops(ForwardPolicy::Drop),
            vec![(Ip6Firewall::Nftables, DropSetter::Unheard)]
        );
        // ... and a known administrator's drop stays theirs.
        let mut w = DropWitness::default();
        w.heard(&set(ForwardPolicy::Drop, Some(ufw())));
        w.lost();
        assert!(!w.nftables_found(ForwardPolicy::Drop, AGAIN));
        assert_eq!(
            w.drops(ForwardPolicy::Drop),
            vec![(Ip6Firewall::Nftables, ufw())]
        );
    }

    /// dockerd reaped its `ip6tables` before the monitor could read who
    /// started it: while Docker is away, that is Docker starting.
    #[test]
    fn an_unnamed_drop_that_came_while_docker_was_away_is_docker_s_when_it_is_back() {
        let gone = DropSetter::Gone {
            process: "ip6tables".into(),
            pid: 31,
        };
        let mut w = DropWitness::default();
        assert!(!w.nftables_found(ForwardPolicy::Accept, Look::Start));
        w.heard(&set(ForwardPolicy::Drop, Some(gone.clone())));
        assert!(!w.nftables_found(ForwardPolicy::Drop, DOCKER_AWAY));
        assert!(w.nftables_found(ForwardPolicy::Drop, Look::DockerBack));
        assert_eq!(
            w.drops(ForwardPolicy::Drop),
            vec![(Ip6Firewall::Nftables, DropSetter::DockerStart)]
        );
        // One named after it takes over: ufw's stays.
        w.heard(&set(ForwardPolicy::Accept, None));
        w.heard(&set(ForwardPolicy::Drop, Some(gone)));
        assert!(!w.nftables_found(ForwardPolicy::Drop, DOCKER_AWAY));
        w.heard(&set(ForwardPolicy::Drop, Some(ufw())));
        assert!(!w.nftables_found(ForwardPolicy::Drop, Look::DockerBack));
    }

    #[test]
    fn a_legacy_drop_is_docker_s_only_if_it_appeared_while_docker_was_away() {
        // Boot: the guard starts first, Docker sets its drop while it
        // starts (a verify may look meanwhile), then connects.
        let mut w = DropWitness::default();
        assert!(!w.legacy_found(ForwardPolicy::NoChain, Look::Start));
        assert!(!w.legacy_found(ForwardPolicy::Drop, DOCKER_AWAY));
        assert!(w.legacy_found(ForwardPolicy::Drop, Look::DockerBack));
        w.restored(Ip6Firewall::IptablesLegacy);
        assert_eq!(w.drops(ForwardPolicy::NoChain), vec![]);

        // The guard restarts on a host whose legacy drop is ufw's: the
        // first connection to Docker is no Docker start.
        let mut w = DropWitness::default();
        assert!(!w.legacy_found(ForwardPolicy::Drop, Look::Start));
        assert!(!w.legacy_found(ForwardPolicy::Drop, Look::DockerBack));
        assert_eq!(
            w.drops(ForwardPolicy::NoChain),
            vec![(Ip6Firewall::IptablesLegacy, DropSetter::BeforeStart)]
        );

        // Set while Docker runs (an administrator, `ufw enable`), then
        // Docker restarts: still not Docker's, and never on a verify.
        let mut w = DropWitness::default();
        assert!(!w.legacy_found(ForwardPolicy::Accept, Look::Start));
        assert!(!w.legacy_found(ForwardPolicy::Drop, AGAIN));
        assert!(!w.legacy_found(ForwardPolicy::Drop, DOCKER_AWAY));
        assert!(!w.legacy_found(ForwardPolicy::Drop, Look::DockerBack));
    }
}
