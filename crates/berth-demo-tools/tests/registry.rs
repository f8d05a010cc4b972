//! `demo/tools.toml` stays consistent with this crate and `demo/data/`:
//! every tool names a binary of this package and files that exist. (A
//! line-level check: the registry's reader, the berth server, is not
//! written yet.)

use std::path::Path;

/// The string value of `key = "value"` on `line`, if that is the line's key.
fn string_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix(key)?.trim_start().strip_prefix('=')?.trim();
    rest.strip_prefix('"')?.split('"').next()
}

#[test]
fn registry_names_existing_binaries_and_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let registry = std::fs::read_to_string(root.join("demo/tools.toml")).expect("demo/tools.toml");
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).expect("manifest");
    let tools = registry.lines().filter(|l| l.trim() == "[[tools]]").count();
    assert_eq!(tools, 4);
    let mut names = Vec::new();
    for line in registry.lines() {
        if let Some(bin) = string_value(line, "bin") {
            assert!(manifest.contains(&format!("name = \"{bin}\"")), "no binary {bin} in berth-demo-tools");
        }
        if let Some(package) = string_value(line, "package") {
            assert_eq!(package, "berth-demo-tools");
        }
        if let Some(mode) = string_value(line, "input_mode") {
            assert!(["env", "url", "file"].contains(&mode), "input_mode {mode}");
        }
        if let Some(image) = string_value(line, "image") {
            assert!(!image.contains(':'), "image {image} must not carry a tag");
        }
        if let Some(name) = string_value(line, "name") {
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{name}");
            assert!(!names.contains(&name), "duplicate tool {name}");
            names.push(name);
        }
        if let Some(list) = line.trim().strip_prefix("default_files = [") {
            for file in
                list.trim_end_matches(']').split(',').map(|f| f.trim().trim_matches('"')).filter(|f| !f.is_empty())
            {
                assert!(root.join("demo/data").join(file).is_file(), "demo/data/{file} missing");
            }
        }
    }
    assert_eq!(names.len(), tools);
    for key in ["description", "port", "mem_reservation_mb", "input_mode", "default_files"] {
        assert_eq!(
            registry.lines().filter(|l| l.trim_start().starts_with(&format!("{key} ="))).count(),
            tools,
            "every tool sets {key}"
        );
    }
    // Each sample file parses and has something to draw.
    for entry in std::fs::read_dir(root.join("demo/data")).expect("demo/data") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let table = berth_demo_tools::csv::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!((5..=30).contains(&table.rows.len()), "{}", path.display());
        assert!(!table.numeric_columns().is_empty(), "{}", path.display());
    }
}
