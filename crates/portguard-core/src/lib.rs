//! portguard's pure core: no I/O. The observed [`Snapshot`] and the
//! [`portguard_config::Config`] go in, the desired [`Ruleset`] and the
//! verdict on every published port come out.

pub mod control;
pub mod docker_api;
pub mod hostfw;
pub mod intervals;
pub mod ip6_forward;
pub mod plan;
pub mod render;
pub mod ruleset;
pub mod snapshot;
pub mod unmatched;
pub mod verdict;

pub use plan::plan;
pub use render::render;
pub use ruleset::Ruleset;
pub use snapshot::{
    BridgeFault, ContainerRef, DockerApiListener, IpFamily, Judged, L4Proto, LabelFault,
    PublishedPort, Snapshot, UntrustedClaim,
};
