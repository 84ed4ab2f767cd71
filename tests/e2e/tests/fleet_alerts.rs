//! Issue 21: the shipped alerting rules reach a person. Debian's own
//! `prometheus-node-exporter`, `prometheus` and `prometheus-alertmanager`
//! run in the guarded host's network namespace, wired as on a real host:
//! node_exporter's textfile collector serves the file portguardd writes,
//! Prometheus scrapes it every second and evaluates
//! packaging/prometheus/portguard.rules.yml, Alertmanager sends to a
//! webhook this test listens on. Each cause a fleet should hear about is
//! made for real (a port published that the allowlist does not admit, a
//! configuration the daemon refuses, the guard's table deleted by
//! somebody else, the daemon stopped, its metrics file gone), and the test
//! waits for the alert at the webhook, then removes the cause and waits
//! for the resolution. The time from cause to webhook is printed. On the
//! way, the fleet's inventory query (`portguard_published_port == 1`)
//! names the host, container and verdict of the port just published.
//!
//! The rules are the shipped file with only its durations scaled down (a
//! test cannot wait an hour): every `for:` becomes 2 s, the 15-minute
//! restore window 20 s, the 5-minute rate window 10 s. Expressions,
//! labels and the alerts' names are the file's own, so a rule that no
//! longer fires on its cause, or fires on a healthy host, fails here.
//! With the shipped `for:` durations, add them to the times printed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use portguard_e2e::{Env, NetNs, until};

const NODE_EXPORTER: &str = "127.0.0.1:9100";
const PROMETHEUS: &str = "127.0.0.1:9090";
const ALERTMANAGER: &str = "127.0.0.1:9093";
const WEBHOOK_PORT: u16 = 5001;
/// Longest wait for one alert to fire or resolve. The pipeline takes a few
/// seconds (textfile write, 1 s scrape, 1 s evaluation, 2 s `for:`,
/// Alertmanager's 1 s group wait); the tamper alert's resolution waits
/// out its 20 s window.
const ALERT_TIMEOUT: Duration = Duration::from_secs(60);

/// The allowlist of the guarded host: 8080 only, on the tier where a
/// deletion of the table succeeds (and is restored), so tampering can be
/// shown on a kernel that would refuse it under `auto`.
const CONFIG: &str = "[guard]\nprotection = \"twin\"\n[[allow]]\nport = 8080\n";

#[test]
fn shipped_alerts_reach_the_webhook_and_resolve() {
    let mut env = Env::guarded(CONFIG);
    let (stack, mut webhook) = Monitoring::start(&env);

    // A healthy guarded host pages nobody: the daemon's series are scraped
    // and every rule has been evaluated several times over them.
    until(
        "Prometheus scrapes portguard_up 1",
        Duration::from_secs(30),
        || stack.query("portguard_up").contains(r#""1"]"#),
    );
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(stack.firing(), BTreeSet::new(), "a healthy host");

    let mut report = Vec::new();

    // A container publishes a port the allowlist does not admit.
    let cause = Instant::now();
    env.web("mongo", &["27017:80"], "");
    let fired = webhook.wait(
        "PortguardUnlistedPortBlocked",
        &[
            ("port", "27017"),
            ("container", "mongo"),
            ("verdict", "blocked"),
        ],
        Status::Firing,
        cause,
    );
    // The fleet's inventory query answers with host, container and
    // verdict for every published port binding.
    let rows = stack.series("portguard_published_port");
    let mongo: Vec<_> = rows
        .iter()
        .filter(|m| m["port"] == "27017")
        .map(|m| {
            ["instance", "host_ip", "proto", "container", "verdict"]
                .map(|k| m[k].as_str().unwrap_or("-").to_string())
                .join(" ")
        })
        .collect();
    assert!(
        !mongo.is_empty()
            && mongo
                .iter()
                .all(|row| row.starts_with(NODE_EXPORTER) && row.ends_with(" tcp mongo blocked")),
        "portguard_published_port for 27017: {mongo:?} (all: {rows:?})"
    );
    let cause = Instant::now();
    env.dockerd.docker("rm -f mongo");
    let resolved = webhook.wait(
        "PortguardUnlistedPortBlocked",
        &[("port", "27017")],
        Status::Resolved,
        cause,
    );
    report.push((
        "PortguardUnlistedPortBlocked (docker run -p 27017)",
        fired,
        resolved,
    ));

    // A configuration the daemon refuses: it keeps the allowlist it runs
    // (still from the files, so `source` stays `files`) and says
    // `portguard_config_error 1`, which is the rule's second branch.
    let cause = Instant::now();
    env.write_config("[[allow]]\nport = \"eighty\"\n");
    let out = env.daemon().guardctl(&["reload"]);
    assert!(!out.status.success(), "the broken file is refused");
    let fired = webhook.wait("PortguardConfigRefused", &[], Status::Firing, cause);
    let cause = Instant::now();
    env.write_config(CONFIG);
    let out = env.daemon().guardctl(&["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resolved = webhook.wait("PortguardConfigRefused", &[], Status::Resolved, cause);
    report.push((
        "PortguardConfigRefused (a broken file reloaded)",
        fired,
        resolved,
    ));

    // Somebody deletes the guard's table; the daemon restores it.
    let cause = Instant::now();
    env.lab.host.sh("nft delete table inet portguard");
    let fired = webhook.wait("PortguardTampering", &[], Status::Firing, cause);
    assert!(
        env.status()["restores"].as_u64().unwrap_or(0) >= 1,
        "{}",
        env.status()
    );
    // The cause is over once the table is back; the alert holds for its
    // (scaled) 20 s window after the last restore.
    let resolved = webhook.wait("PortguardTampering", &[], Status::Resolved, cause);
    report.push(("PortguardTampering (nft delete table)", fired, resolved));

    // The daemon stops cleanly (it writes portguard_up 0) ...
    let cause = Instant::now();
    stop(&mut env);
    let fired = webhook.wait(
        "PortguardDown",
        &[("cause", "stopped")],
        Status::Firing,
        cause,
    );
    // ... then its metrics file disappears while node_exporter answers.
    let cause = Instant::now();
    std::fs::remove_file(env.dir.path().join("portguard.prom")).unwrap();
    let missing = webhook.wait(
        "PortguardDown",
        &[("cause", "missing")],
        Status::Firing,
        cause,
    );
    let stopped_gone = webhook.wait(
        "PortguardDown",
        &[("cause", "stopped")],
        Status::Resolved,
        cause,
    );
    report.push(("PortguardDown cause=stopped (SIGTERM)", fired, stopped_gone));
    let cause = Instant::now();
    env.start_guard(CONFIG);
    let resolved = webhook.wait(
        "PortguardDown",
        &[("cause", "missing")],
        Status::Resolved,
        cause,
    );
    report.push((
        "PortguardDown cause=missing (file deleted)",
        missing,
        resolved,
    ));

    // Back to healthy: nothing fires, and nothing fired that no cause made
    // (a restart counted as tampering, say).
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(stack.firing(), BTreeSet::new(), "healthy again");
    webhook.drain();
    let names: BTreeSet<&str> = webhook.seen.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "PortguardConfigRefused",
            "PortguardDown",
            "PortguardTampering",
            "PortguardUnlistedPortBlocked",
        ]),
        "alerts at the webhook: {:#?}",
        webhook.seen
    );
    let tampering_fired = webhook
        .seen
        .iter()
        .filter(|n| n.name == "PortguardTampering" && n.status == Status::Firing)
        .count();
    assert_eq!(
        tampering_fired, 1,
        "one tamper, one page: {:#?}",
        webhook.seen
    );

    eprintln!(
        "fleet alerts: cause -> webhook (rules' for: scaled to 2 s; 1 s scrape and evaluation)"
    );
    for (what, fired, resolved) in report {
        eprintln!(
            "  {what}: fired after {:.1} s, resolved {:.1} s after the cause was gone",
            fired.as_secs_f64(),
            resolved.as_secs_f64()
        );
    }
}

/// SIGTERM and wait: the daemon's own clean stop, as systemd does it.
fn stop(env: &mut Env) {
    let mut daemon = env.daemon.take().expect("running");
    daemon.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while daemon.child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "portguardd did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The shipped rules with their durations scaled down; each rewrite must
/// find what it rewrites, so a changed rules file fails here, not silently.
fn scaled_rules() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging/prometheus/portguard.rules.yml");
    let shipped = std::fs::read_to_string(&path).unwrap();
    let mut fors = 0;
    let mut text: String = shipped
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("for: ") {
                fors += 1;
                format!("{}for: 2s\n", &line[..line.len() - trimmed.len()])
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert!(fors >= 5, "for: lines in {}", path.display());
    for (from, to) in [("[15m]", "[20s]"), ("[5m]", "[10s]")] {
        assert!(text.contains(from), "{from} in {}", path.display());
        text = text.replace(from, to);
    }
    text
}

/// node_exporter, Prometheus and Alertmanager in the host's namespace;
/// killed (by pid) on drop.
struct Monitoring {
    children: Vec<Child>,
    ns_path: String,
}

impl Monitoring {
    /// The three, and the webhook Alertmanager sends to.
    fn start(env: &Env) -> (Monitoring, Webhook) {
        let dir = env.dir.path();
        let ns = &env.lab.host;
        let webhook = Webhook::listen(ns);
        std::fs::write(dir.join("portguard.rules.yml"), scaled_rules()).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: ['{}']\n\
                 alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{ALERTMANAGER}']\n\
                 scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['{NODE_EXPORTER}']\n",
                dir.join("portguard.rules.yml").display()
            ),
        )
        .unwrap();
        // Grouped per alert and host (and cause, port): each cause is its
        // own notification, sent a second after it arrives.
        std::fs::write(
            dir.join("alertmanager.yml"),
            format!(
                "route:\n  receiver: webhook\n  group_by: [alertname, instance, cause, port]\n\
                 \x20 group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: webhook\n    webhook_configs:\n\
                 \x20     - url: 'http://127.0.0.1:{WEBHOOK_PORT}/'\n        send_resolved: true\n"
            ),
        )
        .unwrap();
        let spawn = |program: &str, args: Vec<String>| -> Child {
            let log = std::fs::File::create(dir.join(format!("{program}.log"))).unwrap();
            Command::new("nsenter")
                .arg(format!("--net={}", ns.path()))
                .arg(program)
                .args(args)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{program} (scripts/install-deps installs it): {e}"))
        };
        let children = vec![
            spawn(
                "prometheus-node-exporter",
                vec![
                    format!("--web.listen-address={NODE_EXPORTER}"),
                    "--collector.disable-defaults".into(),
                    "--collector.textfile".into(),
                    format!("--collector.textfile.directory={}", dir.display()),
                ],
            ),
            spawn(
                "prometheus-alertmanager",
                vec![
                    format!("--config.file={}", dir.join("alertmanager.yml").display()),
                    format!("--storage.path={}", dir.join("alertmanager").display()),
                    format!("--web.listen-address={ALERTMANAGER}"),
                    "--cluster.listen-address=".into(),
                ],
            ),
            spawn(
                "prometheus",
                vec![
                    format!("--config.file={}", dir.join("prometheus.yml").display()),
                    format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
                    format!("--web.listen-address={PROMETHEUS}"),
                ],
            ),
        ];
        let monitoring = Monitoring {
            children,
            ns_path: ns.path(),
        };
        (monitoring, webhook)
    }

    /// Prometheus' instant query API (`expr` needs no URL escaping).
    fn query(&self, expr: &str) -> String {
        http_get(
            &self.ns_path,
            PROMETHEUS,
            &format!("/api/v1/query?query={expr}"),
        )
    }

    /// The label sets of the series `expr` selects now.
    fn series(&self, expr: &str) -> Vec<serde_json::Value> {
        let json: serde_json::Value = serde_json::from_str(&self.query(expr)).unwrap_or_default();
        json["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["metric"].clone())
            .collect()
    }

    /// Names of the alerts Prometheus holds as firing now.
    fn firing(&self) -> BTreeSet<String> {
        let body = http_get(&self.ns_path, PROMETHEUS, "/api/v1/alerts");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        json["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["state"] == "firing")
            .map(|a| a["labels"]["alertname"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

impl Drop for Monitoring {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A GET over plain HTTP/1.0 from inside the namespace at `ns_path`;
/// returns the body, or an empty string if the server does not answer
/// yet.
fn http_get(ns_path: &str, addr: &'static str, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    portguard_testkit::spawn_in_netns(ns_path, move || {
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return String::new();
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut response = String::new();
        if stream.write_all(request.as_bytes()).is_err()
            || stream.read_to_string(&mut response).is_err()
        {
            return String::new();
        }
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())
            .unwrap_or_default()
    })
    .join()
    .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Firing,
    Resolved,
}

/// One alert as Alertmanager reported it.
#[derive(Debug)]
struct Notified {
    at: Instant,
    name: String,
    status: Status,
    labels: serde_json::Value,
}

/// The receiving end of Alertmanager's webhook: every alert of every
/// notification, in arrival order.
struct Webhook {
    rx: Receiver<Notified>,
    seen: Vec<Notified>,
}

impl Webhook {
    fn listen(ns: &NetNs) -> Webhook {
        let (tx, rx) = channel();
        let (ready_tx, ready_rx) = channel();
        ns.spawn(move || {
            let listener = TcpListener::bind(("127.0.0.1", WEBHOOK_PORT)).expect("bind webhook");
            ready_tx.send(()).ok();
            for stream in listener.incoming().flatten() {
                let Some(body) = read_post(&stream) else {
                    continue;
                };
                let at = Instant::now();
                let _ = (&stream).write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                for alert in json["alerts"].as_array().into_iter().flatten() {
                    let status = match alert["status"].as_str() {
                        Some("resolved") => Status::Resolved,
                        _ => Status::Firing,
                    };
                    let notified = Notified {
                        at,
                        name: alert["labels"]["alertname"]
                            .as_str()
                            .unwrap_or("?")
                            .to_string(),
                        status,
                        labels: alert["labels"].clone(),
                    };
                    if tx.send(notified).is_err() {
                        return;
                    }
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("webhook listening");
        Webhook {
            rx,
            seen: Vec::new(),
        }
    }

    /// Everything received so far, into `seen`.
    fn drain(&mut self) {
        while let Ok(n) = self.rx.try_recv() {
            self.seen.push(n);
        }
    }

    /// Waits until Alertmanager reports `name` with `labels` in `status`
    /// (received after `cause`); returns the time from `cause`.
    fn wait(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        status: Status,
        cause: Instant,
    ) -> Duration {
        let hit = |n: &Notified| {
            n.name == name
                && n.status == status
                && n.at >= cause
                && labels.iter().all(|(k, v)| n.labels[*k] == *v)
        };
        let deadline = cause + ALERT_TIMEOUT;
        // Notifications arrive in any order (one may already have come
        // while the test waited for another).
        let mut found = self.seen.iter().find(|n| hit(n)).map(|n| n.at);
        while found.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(n) = self.rx.recv_timeout(left) else {
                panic!(
                    "{name} {labels:?} not {status:?} at the webhook within {ALERT_TIMEOUT:?}; received: {:#?}",
                    self.seen
                );
            };
            if hit(&n) {
                found = Some(n.at);
            }
            self.seen.push(n);
        }
        let after = found.unwrap_or(cause) - cause;
        eprintln!(
            "fleet alerts: {name} {labels:?} {status:?} at the webhook after {:.1} s",
            after.as_secs_f64()
        );
        after
    }
}

/// The body of one HTTP POST (Content-Length framed, as Alertmanager
/// sends it).
fn read_post(stream: &TcpStream) -> Option<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((key, value)) = line.split_once(':')
            && key.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}
