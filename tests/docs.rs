//! The docs a newcomer reads stay true: every configuration key is in docs/configuration.md,
//! every file or folder the README names exists, and the README's map and src/lib.rs's Layout
//! name every module.

use std::path::Path;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md is readable")
}

#[test]
fn the_configuration_reference_documents_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let text = std::fs::read_to_string(path).expect("docs/configuration.md is readable");
    for key in tether::config::KEYS {
        assert!(
            text.contains(&format!("| `{key}` |")),
            "docs/configuration.md's table lacks `{key}`"
        );
    }
    // And no row for a key that no longer exists.
    for row in text.lines().filter(|l| l.starts_with("| `")) {
        let key = row.split('`').nth(1).unwrap_or_default();
        assert!(
            tether::config::KEYS.contains(&key),
            "docs/configuration.md documents `{key}`, which is no key"
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

/// The top-level modules the library declares (`mod x;` lines of src/lib.rs).
fn modules(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| {
            let l = l
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            Some(l.strip_prefix("mod ")?.strip_suffix(';')?.to_string())
        })
        .collect()
}

#[test]
fn the_readme_map_and_the_lib_layout_name_every_module() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("src/lib.rs");
    let readme = readme();
    let map = readme
        .split("## Map")
        .nth(1)
        .expect("the README has a Map section");
    let layout = lib
        .split("# Layout")
        .nth(1)
        .and_then(|rest| rest.split("# Embedding").next())
        .expect("src/lib.rs has a Layout section");
    let modules = modules(&lib);
    assert!(modules.len() > 20, "only {} modules found", modules.len());
    for m in &modules {
        assert!(
            map.contains(&format!("`src/{m}.rs`")) || map.contains(&format!("`src/{m}/`")),
            "the README map does not place module `{m}`"
        );
        assert!(
            layout.contains(&format!("`{m}`")),
            "src/lib.rs's Layout does not name module `{m}`"
        );
    }
    // And nothing the map names as a module is gone.
    for quoted in map.split('`').skip(1).step_by(2) {
        if let Some(name) = quoted
            .strip_prefix("src/")
            .map(|p| p.trim_end_matches('/').trim_end_matches(".rs"))
            .filter(|n| !n.contains('/') && *n != "main" && *n != "lib")
        {
            assert!(
                modules.iter().any(|m| m == name),
                "the README map names `{quoted}`, which is no module"
            );
        }
    }
}
