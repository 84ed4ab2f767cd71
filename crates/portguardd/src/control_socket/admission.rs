//! Who may hold the control socket's connections: at most [`MAX_CLIENTS`]
//! at once, of which [`ROOT_RESERVED`] only root may use, and at most
//! [`MAX_PER_UID`] for any one other user. So a member of `[control]
//! group` who opens connections in a loop holds a few of them and root's
//! `guardctl reload` (and `systemctl reload`) still gets in.
//!
//! The uid is the one the kernel recorded when the client connected
//! (SO_PEERCRED): a client cannot choose it. Pure bookkeeping; the socket
//! code holds a [`Slot`] for each client it serves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Connections served at once, root's included.
pub const MAX_CLIENTS: usize = 32;
/// Of [`MAX_CLIENTS`], how many no other user can take.
pub const ROOT_RESERVED: usize = 8;
/// Connections one user other than root may hold at once.
pub const MAX_PER_UID: usize = 8;

const ROOT: u32 = 0;

/// Why a connection was not served; its text is the client's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every connection is in use.
    Full,
    /// Every connection open to users other than root is in use.
    KeptForRoot,
    /// This user holds as many connections as one user may.
    TooManyFrom(u32),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full => write!(
                f,
                "busy: all {MAX_CLIENTS} connections are in use; try again"
            ),
            Refusal::KeptForRoot => write!(
                f,
                "busy: the {} connections open to users other than root are in use ({ROOT_RESERVED} more are kept for root); try again",
                MAX_CLIENTS - ROOT_RESERVED
            ),
            Refusal::TooManyFrom(uid) => write!(
                f,
                "busy: too many connections from uid {uid} (at most {MAX_PER_UID} at once); try again"
            ),
        }
    }
}

/// Connections in use: in all, by users other than root, and per user.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    others: usize,
    per_uid: HashMap<u32, usize>,
}

impl Counts {
    fn admit(&mut self, uid: u32) -> Result<(), Refusal> {
        let held = self.per_uid.get(&uid).copied().unwrap_or(0);
        if uid != ROOT {
            if held >= MAX_PER_UID {
                return Err(Refusal::TooManyFrom(uid));
            }
            if self.others >= MAX_CLIENTS - ROOT_RESERVED {
                return Err(Refusal::KeptForRoot);
            }
        }
        if self.total >= MAX_CLIENTS {
            return Err(Refusal::Full);
        }
        self.total += 1;
        if uid != ROOT {
            self.others += 1;
        }
        self.per_uid.insert(uid, held + 1);
        Ok(())
    }

    fn release(&mut self, uid: u32) {
        let Some(held) = self.per_uid.get_mut(&uid) else {
            return;
        };
        *held -= 1;
        if *held == 0 {
            self.per_uid.remove(&uid);
        }
        self.total -= 1;
        if uid != ROOT {
            self.others -= 1;
        }
    }
}

/// The connections in use, shared by the accept loop and the clients.
#[derive(Clone, Default)]
pub struct Admission(Arc<Mutex<Counts>>);

impl Admission {
    /// A connection for `uid`, given back when the [`Slot`] is dropped.
    pub fn admit(&self, uid: u32) -> Result<Slot, Refusal> {
        lock(&self.0).admit(uid)?;
        Ok(Slot {
            counts: Arc::clone(&self.0),
            uid,
        })
    }
}

/// One connection in use by `uid`.
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    uid: u32,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.counts).release(self.uid);
    }
}

/// The counts stay consistent whatever panicked while holding them: each
/// change is made before the lock is let go.
fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_user_is_held_to_its_share_and_told_its_uid() {
        let admission = Admission::default();
        let held: Vec<Slot> = (0..MAX_PER_UID)
            .map(|_| admission.admit(1000).unwrap())
            .collect();
        let refusal = admission.admit(1000).err().unwrap();
        assert_eq!(refusal, Refusal::TooManyFrom(1000));
        assert!(
            refusal
                .to_string()
                .starts_with("busy: too many connections from uid 1000")
        );
        // Another user and root are not affected.
        let _other = admission.admit(1001).unwrap();
        let _root = admission.admit(0).unwrap();
        drop(held);
        let _again = admission.admit(1000).unwrap();
    }

    #[test]
    fn other_users_together_never_take_roots_connections() {
        let admission = Admission::default();
        let mut others = Vec::new();
        for uid in 1000.. {
            match admission.admit(uid) {
                Ok(slot) => others.push(slot),
                Err(refusal) => {
                    assert_eq!(refusal, Refusal::KeptForRoot);
                    break;
                }
            }
        }
        assert_eq!(others.len(), MAX_CLIENTS - ROOT_RESERVED);
        let root: Vec<Slot> = (0..ROOT_RESERVED)
            .map(|_| admission.admit(0).unwrap())
            .collect();
        assert_eq!(admission.admit(0).err(), Some(Refusal::Full));
        drop(root);
        // Root may use any free connection, not only its own.
        drop(others);
        let root: Vec<Slot> = (0..MAX_CLIENTS)
            .map(|_| admission.admit(0).unwrap())
            .collect();
        assert_eq!(admission.admit(0).err(), Some(Refusal::Full));
        assert_eq!(admission.admit(1000).err(), Some(Refusal::Full));
        drop(root);
    }

    proptest! {
        /// Whatever users connect and leave, in whatever order: the limits
        /// hold, and root gets in while it holds fewer than its reserve.
        #[test]
        fn the_limits_hold_and_root_always_gets_its_reserve(
            steps in prop::collection::vec((any::<bool>(), 0u32..5), 1..400)
        ) {
            let admission = Admission::default();
            let mut held: Vec<Slot> = Vec::new();
            for (connect, user) in steps {
                // uid 0 is root; 1000-1003 are members of the group.
                let uid = if user == 0 { 0 } else { 999 + user };
                if connect {
                    let root_held = held.iter().filter(|s| s.uid == 0).count();
                    match admission.admit(uid) {
                        Ok(slot) => held.push(slot),
                        Err(refusal) => prop_assert!(
                            uid != 0 || root_held >= ROOT_RESERVED,
                            "root refused ({refusal}) holding {root_held}"
                        ),
                    }
                } else if let Some(i) = held.iter().position(|s| s.uid == uid) {
                    held.swap_remove(i);
                }
                let of = |uid: u32| held.iter().filter(|s| s.uid == uid).count();
                prop_assert!(held.len() <= MAX_CLIENTS);
                prop_assert!(held.len() - of(0) <= MAX_CLIENTS - ROOT_RESERVED);
                for uid in 1000..1004 {
                    prop_assert!(of(uid) <= MAX_PER_UID);
                }
            }
        }
    }
}
