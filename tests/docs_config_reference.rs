//! The documentation stays true: docs/config-reference.md is exactly what
//! scripts/gen-config-reference.sh makes from this binary's config schema, and every relative
//! link and script named in docs/ exists.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn config_reference_is_regenerated_byte_for_byte() {
    let out = Command::new("bash")
        .arg(repo().join("scripts/gen-config-reference.sh"))
        .arg("--stdout")
        .env("CFY_INIT_BIN", env!("CARGO_BIN_EXE_cfy-init"))
        .output()
        .expect("run scripts/gen-config-reference.sh");
    assert!(
        out.status.success(),
        "gen-config-reference.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let committed_path = repo().join("docs/config-reference.md");
    let committed = std::fs::read(&committed_path).expect("docs/config-reference.md exists");
    if committed != out.stdout {
        let generated = String::from_utf8_lossy(&out.stdout);
        let committed = String::from_utf8_lossy(&committed);
        let first_diff = generated
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(generated.lines().count().min(committed.lines().count()));
        panic!(
            "docs/config-reference.md is out of date (first difference at line {}): \
             run scripts/gen-config-reference.sh and commit the result",
            first_diff + 1
        );
    }
}

#[test]
fn the_reference_documents_every_section_of_the_schema() {
    let out = Command::new(env!("CARGO_BIN_EXE_cfy-init"))
        .args(["config", "schema"])
        .output()
        .unwrap();
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reference = std::fs::read_to_string(repo().join("docs/config-reference.md")).unwrap();
    for section in schema["properties"].as_object().unwrap().keys() {
        assert!(
            reference.contains(&format!("\n## {section}\n")),
            "section {section} missing from docs/config-reference.md"
        );
    }
}

/// Relative link targets of a Markdown file: `](target)` not starting with a scheme or `#`.
fn relative_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or("");
        if !target.is_empty() && !target.contains("://") && !target.starts_with("mailto:") {
            links.push(target.to_string());
        }
    }
    links
}

fn docs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_relative_link_and_script_in_docs_exists() {
    let files = docs();
    for wanted in [
        "docker.md",
        "helm.md",
        "operations.md",
        "upgrading.md",
        "config-reference.md",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(wanted)),
            "docs/{wanted} is missing"
        );
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let dir = file.parent().unwrap();
        for link in relative_links(&text) {
            assert!(
                dir.join(&link).exists(),
                "{}: broken link {link}",
                file.display()
            );
        }
        for word in text.split(|c: char| c.is_whitespace() || "`()[],;".contains(c)) {
            if let Some(script) = word.strip_prefix("scripts/") {
                let script = script.trim_end_matches(['.', ':']);
                if script.ends_with(".sh") {
                    assert!(
                        Path::new(&repo().join("scripts").join(script)).exists(),
                        "{}: names scripts/{script}, which does not exist",
                        file.display()
                    );
                }
            }
        }
    }
}
