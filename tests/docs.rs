//! The docs a newcomer reads stay true: every configuration key is in the README's table, and
//! every file or folder the README names exists.

use std::path::Path;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md is readable")
}

#[test]
fn readme_documents_every_configuration_key() {
    let text = readme();
    for key in tether::config::KEYS {
        assert!(
            text.contains(&format!("| `{key}` |")),
            "README's configuration table lacks `{key}`"
        );
    }
}

#[test]
fn every_path_the_readme_names_exists() {
    let text = readme();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prefixes = [
        "src/",
        "docs/",
        "scripts/",
        "bench/",
        "clients/",
        "deploy/",
        "examples/",
        "tests/",
    ];
    let mut checked = 0;
    for quoted in text.split('`').skip(1).step_by(2) {
        let candidate = quoted.split_whitespace().next().unwrap_or_default();
        if !prefixes.iter().any(|p| candidate.starts_with(p)) || candidate.contains('<') {
            continue;
        }
        let path = candidate.trim_end_matches([',', '.', ':', ')']);
        assert!(
            root.join(path).exists(),
            "README names `{path}`, which does not exist"
        );
        checked += 1;
    }
    assert!(
        checked > 20,
        "only {checked} paths found: the README format changed?"
    );
}
