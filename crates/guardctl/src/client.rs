//! Talking to portguardd over its control socket, and printing answers.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use portguard_core::control::{
    PROTOCOL_VERSION, Request, RequestBody, Response, ResponseBody, Status, printable,
};
use portguard_core::verdict::{Explanation, PortReport, Verdict};

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

    fn verdict(&self, verdict: Verdict) -> String {
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

pub fn print_ports(ports: &[PortReport]) {
    if ports.is_empty() {
        println!("No published ports.");
        return;
    }
    let style = Style::stdout();
    let rows: Vec<Vec<String>> = ports
        .iter()
        .map(|p| {
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
                verdict_text(p, &|v| v.as_str().to_string()),
            ]
        })
        .collect();
    let painted: Vec<String> = ports
        .iter()
        .map(|p| verdict_text(p, &|v| style.verdict(v)))
        .collect();
    print!(
        "{}",
        table(
            &["HOST IP", "PORT", "PROTO", "CONTAINER", "CPORT", "VERDICT"],
            &rows,
            Some(&painted)
        )
    );
    print_port_warnings(ports);
}

fn verdict_text(p: &PortReport, name: &dyn Fn(Verdict) -> String) -> String {
    match (&p.verdict, &p.allowed_by) {
        (Verdict::Allowed, Some(by)) => format!("{} by {}", name(p.verdict), printable(by)),
        (Verdict::HostNetwork, _) => format!(
            "{} (not coverable: guard it in the host's INPUT firewall)",
            name(p.verdict)
        ),
        _ => name(p.verdict),
    }
}

/// The ports' warnings, after the table: one line per port and warning.
fn print_port_warnings(ports: &[PortReport]) {
    for p in ports {
        for warning in &p.warnings {
            println!(
                "warning: {}:{}/{}: {}",
                printable(&p.host_ip),
                p.host_port,
                p.proto,
                printable(warning)
            );
        }
    }
}

pub fn print_status(status: &Status) {
    print!(
        "{}",
        crate::status_text::render_status(status, &Style::stdout())
    );
    println!();
    print_ports(&status.published);
}

pub fn print_explanation(target: &str, e: &Explanation) {
    println!("{}: {}", printable(target), e.answer.as_str());
    for reason in &e.reasons {
        println!("  - {}", printable(reason));
    }
    for warning in &e.warnings {
        println!("  ! warning: {}", printable(warning));
    }
}
