//! Aligned tables, addresses in them, and the footnotes under them.

use portguard_config::printable;

/// An aligned table; the last column is free text.
pub(crate) fn table(
    headers: &[&str],
    rows: &[Vec<String>],
    painted_last: Option<&[String]>,
) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String], last: Option<&String>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(last.unwrap_or(cell));
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    out.push_str(&line(
        &headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        None,
    ));
    for (i, row) in rows.iter().enumerate() {
        out.push_str(&line(row, painted_last.and_then(|p| p.get(i))));
    }
    out
}

/// `0.0.0.0:8080/tcp`, `[::]:8080/tcp`, `*:8080/tcp`.
pub(crate) fn address(host_ip: &str, port: u16, proto: impl std::fmt::Display) -> String {
    let ip = printable(host_ip);
    if host_ip.contains(':') {
        format!("[{ip}]:{port}/{proto}")
    } else {
        format!("{ip}:{port}/{proto}")
    }
}

/// Warnings under a table or an explanation, each said once: ports whose
/// warnings differ only in naming the port share one footnote. (The
/// daemon writes the IPv6 INPUT warning, some 300 characters, for every
/// allowed port bound on IPv6.)
#[derive(Default)]
pub(crate) struct Footnotes {
    /// (the warning with its port written `PORT/PROTO`, the places it is
    /// about, the warning as first given)
    notes: Vec<(String, Vec<String>, String)>,
}

impl Footnotes {
    /// Notes `warning` about `place` (`[::]:8080/tcp`, of `port`/`proto`);
    /// returns the footnote's number.
    pub(crate) fn add(
        &mut self,
        place: &str,
        port: u16,
        proto: impl std::fmt::Display,
        warning: &str,
    ) -> usize {
        let general = warning.replace(&format!("{port}/{proto}"), "PORT/PROTO");
        let at = match self.notes.iter().position(|(g, _, _)| *g == general) {
            Some(at) => at,
            None => {
                self.notes.push((general, Vec::new(), warning.to_string()));
                self.notes.len() - 1
            }
        };
        let places = &mut self.notes[at].1;
        if !places.iter().any(|p| p == place) {
            places.push(place.to_string());
        }
        at + 1
    }

    /// `[1] [::]:8080/tcp: warning`, one line per footnote, after a blank
    /// line; nothing when there are none.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        for (i, (general, places, first)) in self.notes.iter().enumerate() {
            if i == 0 {
                text.push('\n');
            }
            let warning = if places.len() == 1 {
                first.clone()
            } else {
                general.replace("this port", "these ports")
            };
            text.push_str(&format!(
                "[{}] warning, {}: {}\n",
                i + 1,
                places.join(", "),
                printable(&warning)
            ));
        }
        text
    }
}
