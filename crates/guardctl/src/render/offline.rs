//! What `guardctl` adds when the daemon is down: what the kernel still
//! enforces (see `crate::offline`).

use crate::offline::KernelGuard;

/// One sentence on the guard's tables in the kernel.
pub fn kernel_note(guard: &KernelGuard) -> String {
    match guard {
        KernelGuard::NoTable => {
            "the kernel holds no guard table: published ports are not judged by portguard".into()
        }
        KernelGuard::Tables {
            tables,
            published,
            allowed,
        } => {
            let tables: Vec<String> = tables.iter().map(|t| format!("inet {t}")).collect();
            format!(
                "the kernel still holds the guard's table ({}) and keeps judging as last applied: \
                 {} published TCP and {} UDP ports, {} TCP and {} UDP ports allowed to any source. \
                 Protection does not depend on the daemon; `portguardd --remove-rules` switches it off",
                tables.join(", "),
                published.0,
                published.1,
                allowed.0,
                allowed.1,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_names_the_tables_and_counts() {
        let note = kernel_note(&KernelGuard::Tables {
            tables: vec!["portguard", "portguard_standby"],
            published: (3, 1),
            allowed: (2, 0),
        });
        assert_eq!(
            note,
            "the kernel still holds the guard's table (inet portguard, inet portguard_standby) \
             and keeps judging as last applied: 3 published TCP and 1 UDP ports, 2 TCP and 0 \
             UDP ports allowed to any source. Protection does not depend on the daemon; \
             `portguardd --remove-rules` switches it off"
        );
        assert!(kernel_note(&KernelGuard::NoTable).starts_with("the kernel holds no guard table"));
    }
}
