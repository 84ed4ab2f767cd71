//! The Prometheus metrics of a real portguardd: each metric changes as it
//! should (a block, a restore, a reload, Docker stopping), counters never
//! go backwards across a restore or a restart, and promtool accepts the
//! file the daemon writes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use portguard_testkit::daemon::{Daemon, binaries, until, wait_notify, write_config};
use portguard_testkit::{BUSYBOX_IMAGE, Dockerd, docker_lab, lab, tcp_probe};

const PROBE: Duration = Duration::from_millis(700);
const BLOCKED_8081: &str = "portguard_blocked_attempts_total{port=\"8081\",proto=\"tcp\"}";
const FROM_FILES: &str = "portguard_config_source_info{source=\"files\"}";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `name{labels}` -> value, from the text format.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse().unwrap())
        })
        .collect()
}

fn metrics(daemon: &Daemon) -> BTreeMap<String, f64> {
    let out = daemon.guardctl(&["metrics"]);
    assert!(
        out.status.success(),
        "guardctl metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse(&String::from_utf8_lossy(&out.stdout))
}

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

fn promtool_check(file: &Path) {
    let text = std::fs::read(file).unwrap();
    portguard_testkit::promtool::promtool(Path::new("."), &["check", "metrics"], &text);
}

/// The `portguard_published_port` series of one TCP binding.
fn published_port(host_ip: &str, port: u16, container: &str, verdict: &str) -> String {
    format!(
        "portguard_published_port{{host_ip=\"{host_ip}\",port=\"{port}\",proto=\"tcp\",container=\"{container}\",verdict=\"{verdict}\"}}"
    )
}

/// The `portguard_docker_engine_info` series (one while Docker answers).
fn engine_info(m: &BTreeMap<String, f64>) -> Vec<&String> {
    m.keys()
        .filter(|k| k.starts_with("portguard_docker_engine_info{version=\""))
        .collect()
}

fn file_metrics(file: &Path) -> BTreeMap<String, f64> {
    parse(&std::fs::read_to_string(file).unwrap_or_default())
}

#[test]
fn metrics_count_blocks_carry_counters_across_a_restore_and_a_restart() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    let no_docker = dir.path().join("no-docker.sock");
    // The tier whose tables anybody may delete: the restore path.
    let good = "[guard]\nprotection = \"twin\"\n[[allow]]\nport = 8080\n";
    write_config(&config, good, &no_docker);
    let textfile = dir.path().join("portguard.prom");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(10));

    let m = metrics(&daemon);
    assert_eq!(value(&m, "portguard_up"), 1.0);
    assert_eq!(
        value(&m, "portguard_protection_tier_info{tier=\"twin\"}"),
        1.0
    );
    assert_eq!(value(&m, "portguard_ruleset_installed"), 1.0);
    assert_eq!(value(&m, "portguard_restores_total"), 0.0);
    assert_eq!(value(&m, "portguard_docker_connected"), 0.0);
    assert_eq!(value(&m, "portguard_config_error"), 0.0);
    assert_eq!(value(&m, FROM_FILES), 1.0);
    assert!(engine_info(&m).is_empty(), "no Docker: {m:?}");
    assert_eq!(value(&m, "portguard_published_port_series_omitted"), 0.0);
    assert_eq!(value(&m, BLOCKED_8081), 0.0);
    assert!(value(&m, "portguard_reconcile_duration_seconds_count") >= 1.0);
    assert!(value(&m, "portguard_last_verify_timestamp_seconds") > 1.7e9);

    // A block: counted per port, in the kernel.
    assert!(tcp_probe(&lab.wan, sa("10.99.0.1:8080"), PROBE));
    for _ in 0..2 {
        assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE));
    }
    // guardctl metrics reads the kernel's counters at most once a second.
    until("both attempts counted", Duration::from_secs(5), || {
        value(&metrics(&daemon), BLOCKED_8081) >= 2.0
    });
    let m = metrics(&daemon);
    let before_restore = value(&m, BLOCKED_8081);
    assert_eq!(
        value(
            &m,
            "portguard_blocked_attempts_total{port=\"8080\",proto=\"tcp\"}"
        ),
        0.0,
        "an allowed port is not counted"
    );

    // A restore: the kernel's counters start again in the new tables; the
    // exported one does not go backwards. Both copies go (whichever judged
    // first counted), in one transaction.
    lab.host
        .sh("nft 'delete table inet portguard; delete table inet portguard_standby'");
    until("restore counted", Duration::from_secs(5), || {
        value(&metrics(&daemon), "portguard_restores_total") >= 1.0
    });
    let m = metrics(&daemon);
    assert!(
        value(&m, BLOCKED_8081) >= before_restore,
        "blocked went backwards across the restore: {} < {before_restore}",
        value(&m, BLOCKED_8081)
    );
    assert_eq!(value(&m, "portguard_ruleset_installed"), 1.0);
    assert!(!tcp_probe(&lab.wan, sa("10.99.0.1:8081"), PROBE));
    // guardctl metrics reads the kernel's counters at most once a second.
    until("counted after the restore", Duration::from_secs(5), || {
        value(&metrics(&daemon), BLOCKED_8081) > before_restore
    });
    let after_restore = value(&metrics(&daemon), BLOCKED_8081);

    // The file says the same, atomically written; promtool accepts it.
    until("textfile up to date", Duration::from_secs(5), || {
        value(&file_metrics(&textfile), BLOCKED_8081) >= after_restore
    });
    promtool_check(&textfile);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A reload: a refused file is a config error, a good one clears it.
    write_config(&config, "[guard]\nmode = \"sometimes\"\n", &no_docker);
    assert!(!daemon.guardctl(&["reload"]).status.success());
    let m = metrics(&daemon);
    assert_eq!(value(&m, "portguard_config_error"), 1.0);
    // A refused reload keeps the files read before: they still guard.
    assert_eq!(value(&m, FROM_FILES), 1.0, "{m:?}");
    write_config(&config, good, &no_docker);
    assert!(daemon.guardctl(&["reload"]).status.success());
    assert_eq!(value(&metrics(&daemon), "portguard_config_error"), 0.0);

    // A clean stop says so in the file; a restart carries every counter.
    let restores = value(&metrics(&daemon), "portguard_restores_total");
    let blocked = value(&metrics(&daemon), BLOCKED_8081);
    let reconciles = value(
        &metrics(&daemon),
        "portguard_reconcile_duration_seconds_count",
    );
    daemon.signal("TERM");
    let mut daemon = daemon;
    daemon.child.wait().unwrap();
    let stopped = file_metrics(&textfile);
    assert_eq!(value(&stopped, "portguard_up"), 0.0, "{stopped:?}");
    promtool_check(&textfile);
    drop(daemon);

    // The restart finds the files broken: it guards with the last good
    // configuration, and says so.
    write_config(&config, "[guard]\nmode = \"sometimes\"\n", &no_docker);
    // A socket of its own: the first run's reloads left READY=1 behind.
    let notify_path = dir.path().join("notify2.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(10));
    let m = metrics(&daemon);
    assert_eq!(value(&m, "portguard_up"), 1.0);
    assert_eq!(value(&m, "portguard_config_error"), 1.0, "{m:?}");
    assert_eq!(
        value(&m, "portguard_config_source_info{source=\"last-good\"}"),
        1.0,
        "{m:?}"
    );
    assert_eq!(value(&m, FROM_FILES), 0.0, "{m:?}");
    assert_eq!(value(&m, "portguard_restores_total"), restores, "{m:?}");
    assert!(value(&m, BLOCKED_8081) >= blocked, "{m:?}");
    assert!(
        value(&m, "portguard_reconcile_duration_seconds_count") > reconciles,
        "{m:?}"
    );
    until(
        "textfile rewritten by the new run",
        Duration::from_secs(5),
        || value(&file_metrics(&textfile), "portguard_up") == 1.0,
    );
}

/// A textfile directory that does not exist is not created (it belongs to
/// prometheus-node-exporter): said once in the log, the daemon runs on,
/// `guardctl metrics` still answers, and the file appears once the
/// directory does.
#[test]
fn a_missing_textfile_directory_is_logged_once_and_not_created() {
    let lab = lab();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    write_config(&config, "", &dir.path().join("no-docker.sock"));
    let missing = dir.path().join("node-exporter");
    let file = missing.join("portguard.prom");
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let log = dir.path().join("portguardd.log");
    let socket = dir.path().join("control.sock");
    let child = Command::new("nsenter")
        .arg(format!("--net={}", lab.host.path()))
        .arg(binaries().0)
        .arg("--config")
        .arg(&config)
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--metrics-file")
        .arg(&file)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon = Daemon { child, log, socket };
    wait_notify(&notify, "READY=1", Duration::from_secs(10));
    // Each reload reconciles, which changes the text, which is written.
    for _ in 0..3 {
        assert!(daemon.guardctl(&["reload"]).status.success());
        assert_eq!(value(&metrics(&daemon), "portguard_up"), 1.0);
    }
    assert!(
        !missing.exists(),
        "the daemon created {}",
        missing.display()
    );
    let warned = "the metrics textfile directory does not exist";
    until(
        "the missing directory logged",
        Duration::from_secs(5),
        || daemon.log().contains(warned),
    );
    assert_eq!(daemon.log().matches(warned).count(), 1, "{}", daemon.log());

    std::fs::create_dir(&missing).unwrap();
    assert!(daemon.guardctl(&["reload"]).status.success());
    until("the file appears", Duration::from_secs(5), || {
        value(&file_metrics(&file), "portguard_up") == 1.0
    });
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter must be able to read it");
}

/// With a real Docker Engine: a blocked attempt to a published container
/// port is counted under its host port, a reload moves ports between
/// verdicts, and Docker stopping shows as disconnected.
#[test]
fn metrics_follow_docker_a_reload_and_docker_stopping() {
    let lab = docker_lab();
    let mut dockerd = Dockerd::start(&lab.host);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portguard.toml");
    write_config(
        &config,
        "[[allow]]\ncontainer = \"web\"\n",
        &dockerd.socket(),
    );
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let daemon = Daemon::start(&lab.host, &config, Some(&notify_path), &[]);
    wait_notify(&notify, "READY=1", Duration::from_secs(10));
    until("docker connected", Duration::from_secs(10), || {
        value(&metrics(&daemon), "portguard_docker_connected") == 1.0
    });
    for (name, ports) in [("web", "8080:80"), ("db", "8081:80")] {
        dockerd.docker(&format!(
            "run -d --name {name} -p {ports} {BUSYBOX_IMAGE} /bin/httpd -f -p 80 -h /www"
        ));
    }
    let allowed = "portguard_published_ports{verdict=\"allowed\"}";
    let blocked = "portguard_published_ports{verdict=\"blocked\"}";
    until("both containers counted", Duration::from_secs(10), || {
        let m = metrics(&daemon);
        value(&m, allowed) >= 1.0 && value(&m, blocked) >= 1.0
    });
    let m = metrics(&daemon);
    // Docker publishes each port on 0.0.0.0 and ::, one row each.
    let (allowed_before, blocked_before) = (value(&m, allowed), value(&m, blocked));
    // The fleet inventory: each row of guardctl ports is a series of its
    // own, labelled as guardctl prints it.
    let web = published_port("0.0.0.0", 8080, "web", "allowed");
    let db = published_port("0.0.0.0", 8081, "db", "blocked");
    assert_eq!(value(&m, &web), 1.0, "{m:?}");
    assert_eq!(value(&m, &db), 1.0, "{m:?}");
    let series = m
        .keys()
        .filter(|k| k.starts_with("portguard_published_port{"))
        .count();
    assert_eq!(series as f64, allowed_before + blocked_before, "{m:?}");
    assert_eq!(value(&m, "portguard_published_port_series_omitted"), 0.0);
    assert_eq!(value(&m, FROM_FILES), 1.0);
    assert_eq!(engine_info(&m).len(), 1, "{m:?}");
    // The file the daemon writes with them is valid for promtool.
    let textfile = dir.path().join("portguard.prom");
    until("textfile has the inventory", Duration::from_secs(5), || {
        value(&file_metrics(&textfile), &db) == 1.0
    });
    promtool_check(&textfile);

    assert!(tcp_probe(&lab.wan, sa("10.77.0.1:8080"), PROBE));
    assert!(!tcp_probe(&lab.wan, sa("10.77.0.1:8081"), PROBE));
    // guardctl metrics reads the kernel's counters at most once a second.
    until("the attempt counted", Duration::from_secs(5), || {
        value(&metrics(&daemon), BLOCKED_8081) >= 1.0
    });
    let scraped = daemon.guardctl(&["metrics"]);
    println!(
        "guardctl metrics after one blocked attempt:\n{}",
        String::from_utf8_lossy(&scraped.stdout)
    );
    let m = metrics(&daemon);
    assert!(value(&m, BLOCKED_8081) >= 1.0, "{m:?}");
    assert_eq!(
        value(
            &m,
            "portguard_blocked_attempts_total{port=\"80\",proto=\"tcp\"}"
        ),
        0.0,
        "counted under the host port, not the container port"
    );

    write_config(
        &config,
        "[[allow]]\ncontainer = \"web\"\n[[allow]]\ncontainer = \"db\"\n",
        &dockerd.socket(),
    );
    assert!(daemon.guardctl(&["reload"]).status.success());
    let m = metrics(&daemon);
    assert_eq!(value(&m, blocked), 0.0, "{m:?}");
    assert_eq!(value(&m, allowed), allowed_before + blocked_before, "{m:?}");
    assert_eq!(value(&m, &db), 0.0, "{m:?}");
    assert_eq!(
        value(&m, &published_port("0.0.0.0", 8081, "db", "allowed")),
        1.0,
        "{m:?}"
    );

    dockerd.stop();
    until("docker disconnected", Duration::from_secs(10), || {
        value(&metrics(&daemon), "portguard_docker_connected") == 0.0
    });
    let m = metrics(&daemon);
    assert!(engine_info(&m).is_empty(), "{m:?}");
    promtool_check(&textfile);
}
