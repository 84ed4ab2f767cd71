//! portguard's pure core: no I/O. The observed [`Snapshot`] and the
//! [`portguard_config::Config`] go in, the desired [`Ruleset`] and the
//! verdict on every published port come out.
//!
//! Layers: a module uses (`use crate::...`) only modules of layers above
//! its own, so that no two import each other (`tests/layers.rs` checks):
//!
//! 1. `text` (timestamps; `printable`, defined in portguard-config),
//!    `wire` (serde helpers for one-string status fields), `intervals`,
//!    `snapshot` (what was observed)
//! 2. `ruleset` (the guard's table names and typed rules), `unmatched`
//! 3. `hostfw` (the host's firewall beside the guard), `render` (nft text)
//! 4. `ip6_forward`, `plan` (config + snapshot -> ruleset; the set and
//!    chain names)
//! 5. `docker_api` (status on dockerd's listeners)
//! 6. `verdict` (`ports` and `explain`, the Docker API's too)
//! 7. `control` (the protocol: requests, responses, the status they carry)

pub mod control;
pub mod docker_api;
pub mod hostfw;
pub mod intervals;
pub mod ip6_forward;
pub mod plan;
pub mod render;
pub mod ruleset;
pub mod snapshot;
pub mod text;
pub mod unmatched;
pub mod verdict;
pub mod wire;

pub use plan::plan;
pub use render::render;
pub use ruleset::Ruleset;
pub use snapshot::{
    BridgeFault, ContainerRef, DockerApiListener, IpFamily, Judged, L4Proto, LabelFault,
    PublishedPort, Snapshot, UntrustedClaim,
};
