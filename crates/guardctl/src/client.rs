//! Talking to portguardd over its control socket, and printing answers.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use portguard_config::printable;
use portguard_core::control::{PROTOCOL_VERSION, Request, RequestBody, Response, ResponseBody};
use portguard_core::verdict::{PortReport, Verdict};

/// The daemon could not be reached at all; each case has its own exit code.
#[derive(Debug)]
pub enum Unreachable {
    /// Nothing listens at the socket (or there is no socket).
    NotRunning(String),
    /// The socket is there but this user may not use it.
    PermissionDenied(String),
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreachable::NotRunning(m) | Unreachable::PermissionDenied(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Unreachable {}

pub fn ask(socket: &Path, body: RequestBody) -> anyhow::Result<ResponseBody> {
    let stream = UnixStream::connect(socket).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Unreachable::PermissionDenied(format!(
                "permission denied: cannot connect to {} (the control socket is for root, \
                 or for members of the group set in [control] group)",
                socket.display()
            ))
        } else {
            Unreachable::NotRunning(format!(
                "portguardd is not running (cannot connect to {}: {e})",
                socket.display()
            ))
        }
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(35)))?;
    let mut line = serde_json::to_string(&Request {
        version: PROTOCOL_VERSION,
        body,
    })?;
    line.push('\n');
    // A daemon that refuses the connection (busy) answers and closes at
    // once, maybe before the request is written: the write then fails
    // (broken pipe), and the answer, which says why, is still there.
    let written = (&stream).write_all(line.as_bytes());
    let mut reply = String::new();
    let read = BufReader::new(&stream).read_line(&mut reply);
    if reply.is_empty() {
        written?;
        read?;
    }
    let response: Response = serde_json::from_str(&reply).map_err(|e| {
        anyhow::anyhow!("portguardd sent an answer this guardctl does not understand: {e}")
    })?;
    match response.body {
        ResponseBody::Error(message) => anyhow::bail!("portguardd: {message}"),
        body => Ok(body),
    }
}

pub(crate) struct Style {
    color: bool,
}

impl Style {
    pub(crate) fn stdout() -> Style {
        Style {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub(crate) fn paint(&self, text: &str, code: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    pub(crate) fn verdict(&self, verdict: Verdict) -> String {
        let code = match verdict {
            Verdict::Allowed => "32",
            Verdict::Blocked => "1",
            // Open, and not by choice: as loud as blocked, in yellow.
            Verdict::OpenInAudit => "1;33",
            Verdict::LocalOnly => "36",
            Verdict::HostNetwork => "33",
        };
        self.paint(verdict.as_str(), code)
    }
}

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

/// The table of published ports, with the ports' warnings once each as
/// footnotes under it.
pub fn render_ports(ports: &[PortReport], style: &Style) -> String {
    if ports.is_empty() {
        return "No published ports.\n".to_string();
    }
    let mut notes = Footnotes::default();
    let marks: Vec<String> = ports
        .iter()
        .map(|p| {
            p.warnings
                .iter()
                .map(|w| {
                    let at = notes.add(
                        &address(&p.host_ip, p.host_port, p.proto),
                        p.host_port,
                        p.proto,
                        w,
                    );
                    format!(" [{at}]")
                })
                .collect()
        })
        .collect();
    let rows: Vec<Vec<String>> = ports
        .iter()
        .zip(&marks)
        .map(|(p, mark)| {
            let container = match &p.compose {
                Some(compose) => format!("{} ({})", printable(&p.container), printable(compose)),
                None => match &p.service {
                    Some(service) if *service == p.container => {
                        format!("{} (service)", printable(&p.container))
                    }
                    Some(service) => {
                        format!(
                            "{} (service {})",
                            printable(&p.container),
                            printable(service)
                        )
                    }
                    None => printable(&p.container).into_owned(),
                },
            };
            vec![
                printable(&p.host_ip).into_owned(),
                p.host_port.to_string(),
                p.proto.to_string(),
                container,
                p.container_port.to_string(),
                verdict_text(p, &|v| v.as_str().to_string()) + mark,
            ]
        })
        .collect();
    let painted: Vec<String> = ports
        .iter()
        .zip(&marks)
        .map(|(p, mark)| verdict_text(p, &|v| style.verdict(v)) + mark)
        .collect();
    let mut text = table(
        &["HOST IP", "PORT", "PROTO", "CONTAINER", "CPORT", "VERDICT"],
        &rows,
        Some(&painted),
    );
    text.push_str(&notes.render());
    text
}

fn verdict_text(p: &PortReport, name: &dyn Fn(Verdict) -> String) -> String {
    match (&p.verdict, &p.allowed_by) {
        (Verdict::Allowed, Some(by)) if !p.only_from.is_empty() => format!(
            "{} only from {} by {}",
            name(p.verdict),
            printable(&p.only_from.join(", ")),
            printable(by)
        ),
        (Verdict::Allowed, Some(by)) => format!("{} by {}", name(p.verdict), printable(by)),
        (Verdict::HostNetwork, _) => format!(
            "{} (not coverable: guard it in the host's INPUT firewall)",
            name(p.verdict)
        ),
        _ => name(p.verdict),
    }
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

/// `text` made safe for a terminal line by line, its line breaks kept
/// (several configuration mistakes are one a line).
pub(crate) fn printable_lines(text: &str) -> String {
    text.lines()
        .map(|line| printable(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}
