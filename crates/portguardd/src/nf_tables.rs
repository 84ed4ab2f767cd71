//! Whether this kernel has nf_tables at all, asked before anything else,
//! so that a host without it gets one clear sentence at start instead of
//! an errno from the middle of the first transaction.
//!
//! What the kernel answers when it is missing (net/netfilter/nfnetlink.c):
//! - no nfnetlink (`CONFIG_NETFILTER_NETLINK` off or its module not
//!   loadable): `socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER)` fails with
//!   EPROTONOSUPPORT;
//! - nfnetlink without the nf_tables subsystem: a single request (GETGEN)
//!   is refused with EINVAL, a batch with EOPNOTSUPP.
//!
//! The kernel tries `request_module` itself first, so either means the
//! module is neither loaded nor loadable from here (e.g. in a container,
//! where only the host can load it).

use portguard_nft::{GuardTable, NftError, Ownership, TableSpec};

use nix::errno::Errno;

/// The start-up request that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Opening a `NETLINK_NETFILTER` socket.
    Socket,
    /// The first request to the nf_tables subsystem (GETGEN).
    Request,
}

/// The sentence for a start-up refusal that means the kernel has no
/// nf_tables; `None` for any other refusal (e.g. EPERM: no CAP_NET_ADMIN).
pub fn missing(step: Step, errno: i32) -> Option<String> {
    let what = match (step, Errno::from_raw(errno)) {
        (Step::Socket, Errno::EPROTONOSUPPORT) => {
            "this kernel has no nfnetlink (netlink for netfilter), which nf_tables needs"
        }
        (Step::Request, Errno::EINVAL | Errno::EOPNOTSUPP) => {
            "this kernel has no nf_tables (the nfnetlink subsystem for nftables is missing)"
        }
        _ => return None,
    };
    Some(format!(
        "{what}: load the kernel module nf_tables with `modprobe nf_tables` (it loads \
         nfnetlink too; on a container, on its host) and keep it loaded at boot with \
         `echo nf_tables > /etc/modules-load.d/portguard.conf`, or use a kernel built with \
         CONFIG_NF_TABLES; portguardd cannot guard anything without it"
    ))
}

/// Asks the kernel once; an error that means nf_tables is missing says so
/// and how to load it, any other says what failed.
pub fn require() -> anyhow::Result<()> {
    let explain = |step: Step, e: NftError| -> anyhow::Error {
        match e.errno().and_then(|errno| missing(step, errno)) {
            Some(sentence) => anyhow::anyhow!("{sentence} ({e})"),
            None => anyhow::Error::new(e)
                .context("talking to nf_tables (portguardd needs CAP_NET_ADMIN)"),
        }
    };
    // A handle on a table name nobody uses: opening it only opens the
    // socket, and GETGEN reads the ruleset generation, touching nothing.
    let mut handle = GuardTable::open(TableSpec {
        name: "portguard_probe".into(),
        ownership: Ownership::Unowned,
    })
    .map_err(|e| explain(Step::Socket, e))?;
    handle.genid().map_err(|e| explain(Step::Request, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_nfnetlink_socket_names_the_module_and_how_to_load_it() {
        let sentence = missing(Step::Socket, Errno::EPROTONOSUPPORT as i32).unwrap();
        assert!(sentence.contains("nfnetlink"), "{sentence}");
        assert!(sentence.contains("modprobe nf_tables"), "{sentence}");
        assert!(sentence.contains("/etc/modules-load.d/"), "{sentence}");
    }

    #[test]
    fn no_nf_tables_subsystem_names_the_module_for_requests_and_batches() {
        for errno in [Errno::EINVAL as i32, Errno::EOPNOTSUPP as i32] {
            let sentence = missing(Step::Request, errno).unwrap();
            assert!(sentence.contains("has no nf_tables"), "{sentence}");
            assert!(sentence.contains("modprobe nf_tables"), "{sentence}");
        }
    }

    #[test]
    fn other_refusals_are_not_blamed_on_a_missing_module() {
        let eperm = nix::errno::Errno::EPERM as i32;
        let enoent = nix::errno::Errno::ENOENT as i32;
        assert_eq!(missing(Step::Socket, eperm), None);
        assert_eq!(missing(Step::Request, eperm), None);
        assert_eq!(missing(Step::Request, enoent), None);
        // EINVAL from socket() is not the missing-protocol answer.
        assert_eq!(missing(Step::Socket, Errno::EINVAL as i32), None);
        assert_eq!(missing(Step::Request, Errno::EPROTONOSUPPORT as i32), None);
    }

    /// On this machine's kernel (nf_tables present) the check passes.
    #[test]
    fn a_kernel_with_nf_tables_passes() {
        let ns = portguard_testkit::NetNs::new("nftcheck");
        ns.enter(|| require().map_err(|e| format!("{e:#}")))
            .unwrap();
    }
}
