//! Shell completions and man pages are generated from the clap command and committed;
//! this test fails when they drift. Regenerate with `BACKUP_BLESS=1 cargo test --test cli_docs`.

use std::path::Path;

const SHELLS: &[(&str, &str)] = &[
    ("bash", "backup.bash"),
    ("zsh", "_backup"),
    ("fish", "backup.fish"),
    ("elvish", "backup.elv"),
    ("powershell", "_backup.ps1"),
];

fn bless() -> bool {
    std::env::var_os("BACKUP_BLESS").is_some()
}

fn check(path: &Path, generated: &[u8], drift: &mut Vec<String>) {
    if bless() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, generated).unwrap();
        return;
    }
    match std::fs::read(path) {
        Ok(committed) if committed == generated => {}
        _ => drift.push(path.display().to_string()),
    }
}

#[test]
fn completions_and_man_pages_match_the_cli() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut drift = Vec::new();
    for (shell, file) in SHELLS {
        let out = assert_cmd::Command::cargo_bin("backup")
            .unwrap()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(!out.stdout.is_empty());
        check(
            &root.join("completions").join(file),
            &out.stdout,
            &mut drift,
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("backup")
        .unwrap()
        .args(["man", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut generated: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    generated.sort();
    assert!(generated.iter().any(|f| f == "backup.1"), "{generated:?}");
    assert!(
        generated.iter().any(|f| f == "backup-run.1"),
        "{generated:?}"
    );
    for f in &generated {
        let bytes = std::fs::read(tmp.path().join(f)).unwrap();
        check(&root.join("man").join(f), &bytes, &mut drift);
    }
    // Pages of removed commands must go too.
    if let Ok(rd) = std::fs::read_dir(root.join("man")) {
        for e in rd {
            let name = e.unwrap().file_name();
            if !generated.contains(&name) {
                if bless() {
                    std::fs::remove_file(root.join("man").join(&name)).unwrap();
                } else {
                    drift.push(format!(
                        "man/{} (no such command any more)",
                        name.to_string_lossy()
                    ));
                }
            }
        }
    }
    assert!(
        drift.is_empty(),
        "generated docs drifted from the CLI: {drift:?}; run `BACKUP_BLESS=1 cargo test --test cli_docs` and commit"
    );
}
