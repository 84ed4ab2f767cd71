use crate::kernel_constants::{EBUSY, EEXIST, EINVAL, ENOBUFS, ENOENT, EOPNOTSUPP, EPERM};
use crate::model::Ownership;

/// What went wrong talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel refused {what}: {} (errno {errno})", describe_errno(*errno))]
    Kernel { what: String, errno: i32 },
    #[error("netlink protocol error: {0}")]
    Protocol(String),
    /// A failure callers only report: the iptables-legacy fallback's
    /// (see `ip6_forward`). Cases a caller decides on have variants of
    /// their own, below.
    #[error("{0}")]
    Command(String),
    /// The table belongs to a running portguardd's socket
    /// (`NFT_TABLE_F_OWNER`): only that process may delete it.
    #[error("table inet {table} is owned by a running portguardd; stop it first")]
    OwnedByRunningDaemon { table: String },
    /// Another process's socket owns the table: the guard cannot change it.
    #[error(
        "table inet {table} is owned by another process (another portguardd?); the guard \
         cannot change it"
    )]
    OwnedByAnother { table: String },
    /// The kernel cannot hold a table with this ownership (too old for
    /// the flag): a weaker protection tier is needed.
    #[error(
        "this kernel cannot create table inet {table} {ownership:?}: choose a weaker \
         [guard] protection"
    )]
    OwnershipUnsupported { table: String, ownership: Ownership },
    /// After applying, the kernel still differs from the desired ruleset
    /// (somebody kept changing it).
    #[error("the kernel does not hold the desired ruleset: {}", .0.join("; "))]
    NotApplied(Vec<String>),
    /// The ruleset changed while the kernel was dumping it: read again.
    #[error("the ruleset changed during a dump")]
    Interrupted,
}

impl NftError {
    pub(crate) fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> NftError {
        move |source| NftError::Io { what, source }
    }

    /// The errno of a kernel refusal.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NftError::Kernel { errno, .. } => Some(*errno),
            NftError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A human sentence for the errors nf_tables actually returns.
fn describe_errno(errno: i32) -> String {
    let hint = match errno {
        EPERM => "operation not permitted: portguardd needs CAP_NET_ADMIN (run as root)",
        ENOENT => "no such table, chain or set",
        EBUSY => "object is in use (another rule refers to it)",
        EEXIST => "object exists, or set elements overlap",
        EINVAL => "invalid argument: the kernel does not understand this expression or value",
        EOPNOTSUPP => "not supported by this kernel (missing nf_tables module?)",
        ENOBUFS => "no buffer space: the batch is too large for the socket",
        _ => "",
    };
    let system = nix::errno::Errno::from_raw(errno).desc();
    if hint.is_empty() {
        system.to_string()
    } else {
        format!("{system}; {hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs and tests read these sentences: typing the refusals must not
    /// have changed a word of them.
    #[test]
    fn typed_refusals_read_as_the_sentences_they_replaced() {
        let table = || "portguard".to_string();
        assert_eq!(
            NftError::OwnedByRunningDaemon { table: table() }.to_string(),
            "table inet portguard is owned by a running portguardd; stop it first"
        );
        assert_eq!(
            NftError::OwnedByAnother { table: table() }.to_string(),
            "table inet portguard is owned by another process (another portguardd?); the guard \
             cannot change it"
        );
        assert_eq!(
            NftError::OwnershipUnsupported {
                table: table(),
                ownership: Ownership::OwnedPersistent
            }
            .to_string(),
            "this kernel cannot create table inet portguard OwnedPersistent: choose a weaker \
             [guard] protection"
        );
    }
}
