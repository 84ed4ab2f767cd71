//! Docker sets the IPv6 FORWARD policy to drop, which breaks IPv6 routing
//! that has nothing to do with containers. A drop in any base chain is
//! final, so the only fix is to change that chain's policy back (the one
//! place portguard writes outside its own table).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{ChainAttribute, ChainMessage, NfTablesMessage};

use crate::error::NftError;
use crate::socket::{BatchItem, NfSocket};

/// `ip6tables-legacy` waits at most this long for the xtables lock (`-w`),
/// and is killed if it takes longer than [`LEGACY_DEADLINE`] in all: the
/// reconcile loop must never wait without a bound.
const LEGACY_LOCK_WAIT: &str = "1";
const LEGACY_DEADLINE: Duration = Duration::from_secs(3);

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const FILTER: &str = "filter";
const FORWARD: &str = "FORWARD";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardPolicy {
    Accept,
    Drop,
    /// No `ip6 filter FORWARD` chain: nobody set a policy.
    NoChain,
}

/// Which netfilter front end holds the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ip6Backend {
    /// `ip6 filter FORWARD` in nf_tables (iptables-nft, Docker's default).
    Nftables,
    /// The legacy x_tables `filter` table (hosts on iptables-legacy).
    Legacy,
}

/// One policy found set to drop and put back to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRestore {
    pub backend: Ip6Backend,
}

/// A handle on the IPv6 FORWARD policy in one network namespace.
pub struct Ip6Policy {
    sock: NfSocket,
    netns: NetnsRef,
}

impl Ip6Policy {
    /// Opens a handle in the calling thread's network namespace.
    pub fn open() -> Result<Ip6Policy, NftError> {
        Ok(Ip6Policy {
            sock: NfSocket::open()?,
            netns: NetnsRef::current()?,
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

    /// Sets every IPv6 FORWARD policy that is drop back to accept, in
    /// nf_tables and, where the legacy tables are in use, through
    /// `ip6tables-legacy`. Returns what it changed.
    pub fn restore(&mut self) -> Result<Vec<PolicyRestore>, NftError> {
        let mut restored = Vec::new();
        if self.forward_policy()? == ForwardPolicy::Drop {
            self.sock.send_batch(vec![BatchItem {
                family: NetfilterProtoFamily::IPv6,
                flags: 0,
                message: NfTablesMessage::NewChain(forward_chain(vec![ChainAttribute::Policy(
                    NF_ACCEPT,
                )])),
                what: "set the policy of ip6 filter FORWARD to accept".into(),
            }])?;
            restored.push(PolicyRestore {
                backend: Ip6Backend::Nftables,
            });
        }
        if legacy_policy_in(&self.netns)? == ForwardPolicy::Drop {
            run_legacy(
                &self.netns,
                &["-w", LEGACY_LOCK_WAIT, "-P", FORWARD, "ACCEPT"],
            )?;
            restored.push(PolicyRestore {
                backend: Ip6Backend::Legacy,
            });
        }
        Ok(restored)
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
