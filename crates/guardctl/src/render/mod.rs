//! Everything guardctl shows a person: the daemon's answers (and what the
//! kernel holds when there is no daemon) turned into text. Pure: a value
//! in, a `String` out; asking is `crate::client`'s and `crate::offline`'s,
//! writing is `main`'s.
//!
//! Layers, each using only those above it:
//! 1. `style` (colour), `text` (plural, printable lines)
//! 2. `table` (aligned tables, addresses, footnotes)
//! 3. `ports`, `blocked`, `explain`, `offline`
//! 4. `status` (uses `blocked`'s lines)

pub mod blocked;
pub mod explain;
pub mod offline;
pub mod ports;
pub mod status;
pub mod style;
pub mod table;
pub mod text;
