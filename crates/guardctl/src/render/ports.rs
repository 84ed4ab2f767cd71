//! `guardctl ports`, and the table under `guardctl status`.

use portguard_config::printable;
use portguard_core::verdict::{PortReport, Verdict};

use super::style::Style;
use super::table::{Footnotes, address, table};

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
