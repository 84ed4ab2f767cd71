use crate::kernel_constants::{EBUSY, EEXIST, EINVAL, ENOBUFS, ENOENT, EOPNOTSUPP, EPERM};

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
    #[error("{0}")]
    Command(String),
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
