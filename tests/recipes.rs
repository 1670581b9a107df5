//! The deployment recipes and the Grafana dashboard in examples/, checked as far as these
//! machines allow: every recipe runs exactly the jobs of examples/backup.toml at the same
//! times (computed by the tool's own cron parser, systemd's calendar and the crontab
//! lines), the systemd units pass `systemd-analyze verify`, the Kubernetes manifests pass
//! kubernetes-validate (offline schemas), the Compose file parses and references what
//! exists, and every metric the dashboard queries is in the exporter's real output.
//! No container engine runs here: the Dockerfile is not built.
mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fire times are compared from this instant on (a Monday; December's first Sunday is the 6th).
const FROM: &str = "2026-11-30T00:00:00Z";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every YAML document of a file, as JSON (PyYAML: no YAML crate in this project).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = Command::new(ci_python())
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "parsing {} (PyYAML comes with kubernetes-validate: run .ci/run or set BACKUP_TEST_PYTHON): {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One scheduled job of the example config: its `backup` arguments, cron and next times.
#[derive(Debug)]
struct Job {
    command: Vec<String>,
    cron: String,
    next: Vec<String>,
}

fn schedule_json(env: &Env, config: &Path, n: usize) -> Vec<Value> {
    let out = env.ok(&[
        "--config",
        config.to_str().unwrap(),
        "schedule",
        "--json",
        "--from",
        FROM,
        "-n",
        &n.to_string(),
    ]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn example_jobs(env: &Env) -> Vec<Job> {
    let jobs: Vec<Job> = schedule_json(env, &examples().join("backup.toml"), 12)
        .iter()
        .map(|j| {
            assert_eq!(j["timezone"], "UTC", "{j}");
            Job {
                command: strings(&j["command"]),
                cron: j["cron"].as_str().unwrap().to_string(),
                next: strings(&j["next"]),
            }
        })
        .collect();
    // The strategy document's schedule: four daily backups (Redis twice) and the monthly test.
    assert_eq!(jobs.len(), 5, "{jobs:?}");
    jobs
}

/// The `backup` arguments of a command line, without the global `--no-progress`.
fn backup_args(words: &[&str]) -> Vec<String> {
    let at = words
        .iter()
        .position(|w| *w == "backup" || w.ends_with("/backup"))
        .unwrap_or_else(|| panic!("no backup command in {words:?}"));
    words[at + 1..]
        .iter()
        .filter(|w| **w != "--no-progress")
        .map(|w| w.to_string())
        .collect()
}

/// Next times of a five-field cron expression by the tool's own parser; with
/// `sunday_guard`, only those on a Sunday (the recipes' stand-in for `SUN#1`, which
/// crontab and Kubernetes lack).
fn cron_next(env: &Env, cron: &str, sunday_guard: bool, n: usize) -> Vec<String> {
    let cfg = env.path().join("cron-check.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storages.local]\ntype = \"local\"\npath = \"{}\"\n\n[targets.t]\nengine = \"postgres\"\nstorages = [\"local\"]\nschedule = \"{cron}\"\n",
            env.repo().display()
        ),
    )
    .unwrap();
    let v = schedule_json(env, &cfg, if sunday_guard { 100 } else { n });
    let next = strings(&v[0]["next"]);
    next.into_iter()
        .filter(|t| {
            !sunday_guard
                || chrono::DateTime::parse_from_rfc3339(t)
                    .unwrap()
                    .format("%a")
                    .to_string()
                    == "Sun"
        })
        .take(n)
        .collect()
}

/// Checks one recipe entry (a cron expression and a command, maybe behind the Sunday
/// guard) against the example config's jobs; returns the job's command.
fn check_entry(env: &Env, jobs: &[Job], cron: &str, command: &str, what: &str) -> Vec<String> {
    let guard = command.contains("date -u +") && command.contains("= 7 ]");
    let words: Vec<&str> = command
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .collect();
    let args = backup_args(&words);
    let job = jobs.iter().find(|j| j.command == args).unwrap_or_else(|| {
        panic!("{what}: `{command}` is no job of examples/backup.toml: {jobs:?}")
    });
    let next = cron_next(env, cron, guard, job.next.len());
    assert_eq!(
        next, job.next,
        "{what}: `{cron}` fires at other times than `{}`",
        job.cron
    );
    if !guard {
        assert_eq!(cron, job.cron, "{what}");
    }
    args
}

#[test]
fn crontab_runs_the_example_configs_jobs_at_the_same_times() {
    let env = Env::new();
    let jobs = example_jobs(&env);
    let text = std::fs::read_to_string(examples().join("cron/backup.cron")).unwrap();
    let mut covered = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap();
        if first.contains('=') {
            continue; // SHELL=, PATH=...
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(
            f.len() > 6,
            "not a system crontab line (5 fields, user, command): {line}"
        );
        assert_eq!(f[5], "backup", "the user field: {line}");
        let cron = f[..5].join(" ");
        let command = f[6..].join(" ");
        // `%` is special in crontab: the guard must escape it.
        assert!(
            !command.replace("\\%", "").contains('%'),
            "unescaped % in {line}"
        );
        covered.insert(check_entry(
            &env,
            &jobs,
            &cron,
            &command.replace("\\%", "%"),
            "crontab",
        ));
    }
    let all: BTreeSet<_> = jobs.iter().map(|j| j.command.clone()).collect();
    assert_eq!(covered, all);
}

/// `Next elapse:` and `Iter. #N:` lines of `systemd-analyze calendar`, as RFC 3339 UTC.
fn systemd_next(on_calendar: &str, n: usize) -> Vec<String> {
    let out = Command::new("systemd-analyze")
        .args([
            "calendar",
            &format!("--iterations={n}"),
            "--base-time=2026-11-30 00:00:00 UTC",
            on_calendar,
        ])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (k, v) = l.split_once(": ")?;
            (k == "Next elapse" || k.starts_with("Iter. #")).then(|| {
                // `Sun 2026-12-06 10:00:00 UTC`
                let p: Vec<&str> = v.split_whitespace().collect();
                format!("{}T{}Z", p[1], p[2])
            })
        })
        .collect()
}

fn unit_key<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::trim)
}

#[test]
fn systemd_units_verify_and_timers_fire_when_the_config_says() {
    let env = Env::new();
    let jobs = example_jobs(&env);
    let dir = examples().join("systemd");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED systemd recipes: systemd-analyze is not installed (Debian package `systemd`)"
        );
        return;
    }
    // `systemd-analyze verify` wants ExecStart= to exist: point the copies at the built binary.
    let copy = env.path().join("units");
    std::fs::create_dir_all(&copy).unwrap();
    let mut units = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&p).unwrap();
        let text = text.replace("/usr/local/bin/backup", env!("CARGO_BIN_EXE_backup"));
        std::fs::write(copy.join(&name), text).unwrap();
        units.push(name);
    }
    units.sort();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| copy.join(u)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        units.contains(&"backup-daemon.service".to_string()),
        "{units:?}"
    );
    let daemon = std::fs::read_to_string(dir.join("backup-daemon.service")).unwrap();
    assert_eq!(
        unit_key(&daemon, "ExecStart"),
        Some("/usr/local/bin/backup daemon")
    );
    assert_eq!(unit_key(&daemon, "KillMode"), Some("mixed"));

    let mut covered = BTreeSet::new();
    for timer in units.iter().filter(|u| u.ends_with(".timer")) {
        let text = std::fs::read_to_string(dir.join(timer)).unwrap();
        assert_eq!(unit_key(&text, "Persistent"), Some("true"), "{timer}");
        let cal = unit_key(&text, "OnCalendar").unwrap();
        // backup-run@postgres.timer -> backup-run@.service with %i = postgres
        let (template, instance) = timer.trim_end_matches(".timer").split_once('@').unwrap();
        let service = std::fs::read_to_string(dir.join(format!("{template}@.service"))).unwrap();
        let exec = unit_key(&service, "ExecStart")
            .unwrap()
            .replace("%i", instance);
        let words: Vec<&str> = exec.split_whitespace().collect();
        let args = backup_args(&words);
        let job = jobs
            .iter()
            .find(|j| j.command == args)
            .unwrap_or_else(|| panic!("{timer}: `{exec}` is no job of examples/backup.toml"));
        assert_eq!(
            systemd_next(cal, job.next.len()),
            job.next,
            "{timer}: OnCalendar={cal} against `{}`",
            job.cron
        );
        covered.insert(args);
    }
    let all: BTreeSet<_> = jobs.iter().map(|j| j.command.clone()).collect();
    assert_eq!(covered, all);
}

fn kubernetes_validate() -> PathBuf {
    let p = Path::new(&ci_python()).with_file_name("kubernetes-validate");
    assert!(
        p.exists(),
        "{} is missing: run .ci/run (pip install kubernetes-validate into /opt/backup-ci/venv) or set BACKUP_TEST_PYTHON",
        p.display()
    );
    p
}

#[test]
fn kubernetes_manifests_validate_and_cronjobs_match_the_config() {
    let env = Env::new();
    let jobs = example_jobs(&env);
    let dir = examples().join("kubernetes");
    let files: Vec<PathBuf> = ["cronjobs.yaml", "daemon.yaml", "storage.yaml"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubernetes-validate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The validator does reject a wrong manifest (an unknown field, a string for a number).
    let bad = env.path().join("bad.yaml");
    let text = std::fs::read_to_string(&files[1]).unwrap();
    std::fs::write(&bad, text.replacen("replicas: 1", "replicas: one", 1)).unwrap();
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--quiet"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken Deployment passed");

    let mut covered = BTreeSet::new();
    for cj in yaml_docs(&files[0]) {
        assert_eq!(cj["kind"], "CronJob", "{cj}");
        let spec = &cj["spec"];
        assert_eq!(spec["timeZone"], "Etc/UTC");
        assert_eq!(spec["concurrencyPolicy"], "Forbid");
        let c = &spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        let mut words: Vec<String> = c["command"]
            .as_array()
            .map(|a| strings(&Value::Array(a.clone())))
            .unwrap_or_else(|| vec!["backup".into()]);
        words.extend(strings(&c["args"]));
        let command = words.join(" ");
        let name = cj["metadata"]["name"].as_str().unwrap().to_string();
        covered.insert(check_entry(
            &env,
            &jobs,
            spec["schedule"].as_str().unwrap(),
            &command,
            &name,
        ));
    }
    let all: BTreeSet<_> = jobs.iter().map(|j| j.command.clone()).collect();
    assert_eq!(covered, all);

    let docs = yaml_docs(&files[1]);
    let dep = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["args"][0], "daemon");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz");
    // The port and grace period agree with examples/backup.toml's [daemon].
    let cfg: toml::Table =
        toml::from_str(&std::fs::read_to_string(examples().join("backup.toml")).unwrap()).unwrap();
    let listen = cfg["daemon"]["listen"].as_str().unwrap();
    assert!(
        listen.ends_with(&format!(":{}", c["ports"][0]["containerPort"])),
        "{listen}"
    );
    assert_eq!(cfg["daemon"]["grace_period"].as_str(), Some("10m"));
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 600);
}

#[test]
fn compose_service_replaces_the_documents_container_and_references_what_exists() {
    let dir = examples().join("docker");
    let docs = yaml_docs(&dir.join("docker-compose.yml"));
    let svc = &docs[0]["services"]["backup"];
    assert_eq!(svc["container_name"], "backup-service");
    assert_eq!(svc["restart"], "unless-stopped");
    assert_eq!(svc["command"], serde_json::json!(["daemon"]));
    // The Dockerfile it builds and the config it mounts exist.
    let context = dir.join(svc["build"]["context"].as_str().unwrap());
    let dockerfile = context.join(svc["build"]["dockerfile"].as_str().unwrap());
    let df = std::fs::read_to_string(&dockerfile).unwrap();
    assert!(df.contains("NOT BUILT IN CI"), "{}", dockerfile.display());
    assert!(df.contains("ENTRYPOINT [\"backup\"]"));
    let volumes = strings(&svc["volumes"]);
    let config = volumes
        .iter()
        .find(|v| v.ends_with(":/etc/backup/backup.toml:ro"))
        .unwrap_or_else(|| panic!("no config mount in {volumes:?}"));
    let host = dir.join(config.split(':').next().unwrap());
    assert_eq!(
        host.canonicalize().unwrap(),
        examples().join("backup.toml").canonicalize().unwrap()
    );
    assert!(
        volumes.iter().any(|v| v.ends_with(":/backups")),
        "{volumes:?}"
    );
    // Every password file the config names is a secret of the service.
    let text = std::fs::read_to_string(&host).unwrap();
    let secrets: BTreeSet<String> = strings(&svc["secrets"]).into_iter().collect();
    let mut named = 0;
    for l in text.lines().filter(|l| l.starts_with("password_file")) {
        let path = l.split('"').nth(1).unwrap();
        let name = path.strip_prefix("/run/secrets/").unwrap();
        assert!(secrets.contains(name), "{name} not in {secrets:?}");
        assert!(docs[0]["secrets"][name]["file"].is_string(), "{name}");
        named += 1;
    }
    assert!(named >= 4, "{named}");
    // The healthcheck is a real command line of this binary.
    let hc = strings(&svc["healthcheck"]["test"]);
    assert_eq!(hc[..3], ["CMD", "backup", "status"]);
    let env = Env::new();
    let help = env.ok(&["status", "--help"]);
    for flag in hc[3..].iter().filter(|a| a.starts_with("--")) {
        assert!(
            help.contains(flag.as_str()),
            "{flag} is no flag of `backup status`"
        );
    }
    // The grace period covers the daemon's.
    assert_eq!(svc["stop_grace_period"], "11m");
}

/// Metric names in a PromQL expression: identifiers that are not functions, keywords,
/// label names (inside `{}` or `by (...)`), strings or durations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut s = String::new();
    let (mut depth_brace, mut depth_bracket, mut in_str) = (0, 0, false);
    for c in expr.chars() {
        match c {
            '"' => in_str = !in_str,
            '{' if !in_str => depth_brace += 1,
            '}' if !in_str => depth_brace -= 1,
            '[' if !in_str => depth_bracket += 1,
            ']' if !in_str => depth_bracket -= 1,
            _ if in_str || depth_brace > 0 || depth_bracket > 0 => {}
            _ => s.push(c),
        }
    }
    let mut out = BTreeSet::new();
    let words: Vec<(usize, String)> = {
        let mut v = Vec::new();
        let mut cur = String::new();
        let mut start = 0;
        for (i, c) in s.char_indices() {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                if cur.is_empty() {
                    start = i;
                }
                cur.push(c);
            } else if !cur.is_empty() {
                v.push((start, std::mem::take(&mut cur)));
            }
        }
        if !cur.is_empty() {
            v.push((start, cur));
        }
        v
    };
    let mut skip_group = false;
    for (i, w) in &words {
        let after = s[i + w.len()..].trim_start();
        if matches!(
            w.as_str(),
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
        ) {
            skip_group = true;
            continue;
        }
        if skip_group {
            // Label names inside `by (...)` up to the closing parenthesis.
            if after.starts_with(')') {
                skip_group = false;
            }
            continue;
        }
        if w.chars().next().unwrap().is_ascii_digit()
            || after.starts_with('(')
            || matches!(
                w.as_str(),
                "offset" | "bool" | "and" | "or" | "unless"
                // Aggregation operators (`max by (x) (...)`: not followed by `(`).
                | "sum" | "min" | "max" | "avg" | "count" | "group" | "stddev" | "stdvar"
                | "topk" | "bottomk" | "quantile" | "count_values"
            )
        {
            continue;
        }
        out.insert(w.clone());
    }
    out
}

#[test]
fn metric_name_extraction_skips_functions_labels_and_keywords() {
    assert_eq!(
        metric_names(
            "time() - max by (target, storage) (a_seconds{target=~\"$t\"}) / sum(rate(b_total{x=\"y z\"}[5m])) and on (target) c"
        ),
        ["a_seconds", "b_total", "c"].iter().map(|s| s.to_string()).collect()
    );
}

#[test]
fn grafana_dashboard_queries_only_metrics_the_exporter_writes() {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(examples().join("grafana/backup.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(METRIC, label)
            let m = q
                .trim_start_matches("label_values(")
                .split(',')
                .next()
                .unwrap();
            exprs.push(m.to_string());
        }
    }
    let names: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for want in [
        "backup_last_success_timestamp_seconds",
        "backup_duration_seconds",
        "backup_size_bytes",
        "backup_failure_total",
        "prune_deleted_backups",
        "test_restore_restore_seconds",
        "test_restore_rto_seconds",
        "test_restore_last_run_success",
    ] {
        assert!(
            names.contains(want),
            "the dashboard shows no {want}: {names:?}"
        );
    }

    // Real exporter output: backups, a verify, a test-restore with benchmarks, a prune.
    let (pg, env, _) = sample_backup("plain");
    let prom = env.path().join("backup.prom");
    let scratch = scratch_dir(&env);
    env.write_config(&format!(
        "{}\n[storages.local.retention]\nkeep_last = 1\nmin_age = \"0s\"\n\n[targets.pg.test_restore]\ntemp_dir = \"{}\"\nbenchmark_sql = [\"SELECT count(*) FROM users\"]\n\n[metrics]\ntextfile = \"{}\"\n",
        local_config(&env.repo(), &pg.url("app"), "plain"),
        scratch.display(),
        prom.display()
    ));
    env.ok(&["run", "pg"]);
    env.ok(&["verify", "pg", "latest"]);
    env.ok(&["test-restore", "pg"]);
    env.ok(&["prune", "pg", "--yes"]);
    let text = std::fs::read_to_string(&prom).unwrap();
    promtool_check_metrics(&text);
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{text}");
    assert!(
        text.contains("prune_deleted_backups{target=\"pg\",storage=\"local\",kind=\"logical\"} 1"),
        "{text}"
    );

    // Every expression is valid PromQL (as recording rules, `$target` as a match-all).
    let rules = env.path().join("dashboard-rules.yml");
    let mut y = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        y.push_str(&format!(
            "      - record: dashboard_expr_{i}\n        expr: {}\n",
            serde_json::to_string(&e.replace("$target", ".*")).unwrap()
        ));
    }
    std::fs::write(&rules, y).unwrap();
    match Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(_) => eprintln!(
            "SKIPPED promtool check rules: promtool not installed (Debian package `prometheus`)"
        ),
    }
}
