//! The module-cycle check on small crates held in memory.

use std::{collections::BTreeMap, path::Path};

use crate::{
    cycles::{Cycle, ModPath, display},
    modgraph,
};

fn load(files: &[(&str, &str)]) -> modgraph::Crate {
    let files: BTreeMap<&str, &str> = files.iter().copied().collect();
    let read = |p: &Path| {
        files
            .get(p.to_str().unwrap())
            .map(|s| s.to_string())
            .ok_or_else(|| anyhow::anyhow!("no file {}", p.display()))
    };
    modgraph::load(Path::new("src/lib.rs"), &read).unwrap()
}

fn cycles(files: &[(&str, &str)]) -> Vec<Vec<String>> {
    load(files)
        .graph()
        .cycles()
        .into_iter()
        .flat_map(|Cycle { paths, .. }| paths)
        .map(|path| path.iter().map(|p| display(p)).collect())
        .collect()
}

fn edges(files: &[(&str, &str)]) -> Vec<(String, String)> {
    let graph = load(files).graph();
    let mut out = Vec::new();
    for (from, tos) in &graph.edges {
        for to in tos.keys() {
            out.push((display(from), display(to)));
        }
    }
    out
}

fn e(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[test]
fn modules_are_found_in_files_dirs_and_inline() {
    let krate = load(&[
        ("src/lib.rs", "pub mod a; pub mod b; mod c { pub mod d; }"),
        ("src/a.rs", "pub mod inner;"),
        ("src/a/inner.rs", ""),
        ("src/b/mod.rs", "mod x;"),
        ("src/b/x.rs", ""),
        ("src/c/d.rs", ""),
    ]);
    // root, a, a::inner, b, b::x, c, c::d
    assert_eq!(krate.module_count(), 7);
}

#[test]
fn a_missing_module_file_is_an_error() {
    let files: BTreeMap<&str, &str> = [("src/lib.rs", "mod gone;")].into_iter().collect();
    let read = |p: &Path| {
        files
            .get(p.to_str().unwrap())
            .map(|s| s.to_string())
            .ok_or_else(|| anyhow::anyhow!("no file {}", p.display()))
    };
    assert!(modgraph::load(Path::new("src/lib.rs"), &read).is_err());
}

#[test]
fn use_paths_and_inline_paths_make_edges() {
    let found = edges(&[
        (
            "src/lib.rs",
            "pub mod a; pub mod b; pub mod c; pub mod d; pub mod e;",
        ),
        (
            "src/a.rs",
            "use crate::{b::{self, B}, c::C as Renamed};\n\
             #[arg(default_value = crate::d::DEFAULT)]\n\
             pub struct A { x: Renamed }\n\
             fn f() { println!(\"{}\", crate::e::E); let _ = std::fs::read(\"x\"); }",
        ),
        ("src/b.rs", ""),
        ("src/c.rs", ""),
        ("src/d.rs", ""),
        ("src/e.rs", ""),
    ]);
    assert_eq!(
        found,
        vec![
            e("crate::a", "crate::b"),
            e("crate::a", "crate::c"),
            e("crate::a", "crate::d"),
            e("crate::a", "crate::e"),
        ]
    );
}

#[test]
fn names_imported_then_used_as_path_roots_resolve() {
    let found = edges(&[
        ("src/lib.rs", "pub mod a; pub mod b;"),
        ("src/a.rs", "fn f() { use crate::b; b::run(); }"),
        (
            "src/b.rs",
            "use tokio::sync::watch; fn g() { watch::channel(); }",
        ),
    ]);
    assert_eq!(found, vec![e("crate::a", "crate::b")]);
}

#[test]
fn doc_comments_strings_and_other_crates_are_no_edges() {
    let found = edges(&[
        ("src/lib.rs", "pub mod a; pub mod b;"),
        (
            "src/a.rs",
            "/// See [crate::b::B].\nfn f() { let s = \"crate::b::B\"; ::b::x(); other::b::B; }",
        ),
        ("src/b.rs", ""),
    ]);
    assert_eq!(found, vec![]);
}

#[test]
fn a_sibling_cycle_is_reported_in_order() {
    let found = cycles(&[
        ("src/lib.rs", "pub mod cli; pub mod live; pub mod report;"),
        (
            "src/cli.rs",
            "pub enum OutputFormat {} const S: &str = crate::live::api::DEFAULT;",
        ),
        ("src/live/mod.rs", "pub mod api; pub mod view;"),
        (
            "src/live/api.rs",
            "pub const DEFAULT: &str = \"\"; use super::view::View;",
        ),
        (
            "src/live/view.rs",
            "use crate::report::Report; pub struct View;",
        ),
        (
            "src/report.rs",
            "use crate::cli::OutputFormat; pub struct Report;",
        ),
    ]);
    assert_eq!(
        found,
        vec![vec!["crate::cli", "crate::live", "crate::report"]]
    );
}

#[test]
fn parent_and_child_patterns_are_no_cycle() {
    // The child uses the parent's re-export of a sibling, the parent re-exports and uses its
    // children, a child of the root uses the root's items.
    let found = cycles(&[
        ("src/lib.rs", "pub mod otlp; pub fn string_kv() {}"),
        (
            "src/otlp/mod.rs",
            "pub mod http; pub mod ingress; pub use ingress::Payload;\n\
             pub fn bind() -> http::Server { todo!() }",
        ),
        (
            "src/otlp/http.rs",
            "use super::{Payload, bind}; pub struct Server; fn f() { crate::string_kv(); }",
        ),
        ("src/otlp/ingress.rs", "pub struct Payload; use super::*;"),
    ]);
    assert_eq!(found, Vec::<Vec<String>>::new());
}

#[test]
fn a_re_export_is_followed_to_the_module_that_defines_the_item() {
    let found = edges(&[
        ("src/lib.rs", "pub mod otlp;"),
        (
            "src/otlp/mod.rs",
            "pub mod http; pub mod ingress; pub use ingress::Payload;",
        ),
        ("src/otlp/http.rs", "use super::Payload;"),
        ("src/otlp/ingress.rs", "pub struct Payload;"),
    ]);
    assert_eq!(found, vec![e("crate::otlp::http", "crate::otlp::ingress")]);
    // So a cycle through a re-export is still a cycle.
    let found = cycles(&[
        ("src/lib.rs", "pub mod otlp;"),
        (
            "src/otlp/mod.rs",
            "pub mod http; pub mod ingress; pub use ingress::Payload;",
        ),
        ("src/otlp/http.rs", "use super::Payload; pub fn bind() {}"),
        (
            "src/otlp/ingress.rs",
            "pub struct Payload; fn f() { super::http::bind(); }",
        ),
    ]);
    assert_eq!(
        found,
        vec![vec!["crate::otlp::http", "crate::otlp::ingress"]]
    );
}

#[test]
fn a_cycle_between_subtrees_is_found() {
    let found = cycles(&[
        ("src/lib.rs", "pub mod collector; pub mod join;"),
        (
            "src/collector.rs",
            "use crate::join::attribution::Measured;",
        ),
        ("src/join/mod.rs", "pub mod attribution; pub mod joiner;"),
        ("src/join/attribution.rs", "pub struct Measured;"),
        ("src/join/joiner.rs", "use crate::collector::Collector;"),
    ]);
    assert_eq!(found, vec![vec!["crate::collector", "crate::join"]]);
}

#[test]
fn glob_imports_bring_in_the_modules_names() {
    let found = edges(&[
        ("src/lib.rs", "pub mod a; pub mod b; pub mod c;"),
        ("src/a.rs", "use crate::b::*; fn f() { inner::g(); }"),
        ("src/b.rs", "pub use crate::c as inner;"),
        ("src/c.rs", "pub fn g() {}"),
    ]);
    assert_eq!(
        found,
        vec![
            e("crate::a", "crate::b"),
            e("crate::a", "crate::c"),
            e("crate::b", "crate::c")
        ]
    );
}

#[test]
fn unit_tests_are_left_out() {
    let found = cycles(&[
        ("src/lib.rs", "pub mod a; pub mod b;"),
        ("src/a.rs", "use crate::b::B; pub struct A;"),
        (
            "src/b.rs",
            "pub struct B;\n#[cfg(test)]\nmod tests { use crate::a::A; }\n\
             #[cfg(test)]\nfn helper() { crate::a::A; }\n#[cfg(test)]\nmod more;",
        ),
    ]);
    assert_eq!(found, Vec::<Vec<String>>::new());
}

#[test]
fn evidence_names_the_file_module_and_path() {
    let graph = load(&[
        ("src/lib.rs", "pub mod a; pub mod b;"),
        ("src/a.rs", "mod inner { fn f() { crate::b::run(); } }"),
        ("src/b.rs", ""),
    ])
    .graph();
    let from: ModPath = vec!["a".into()];
    let to: ModPath = vec!["b".into()];
    let evidence: Vec<_> = graph.edges[&from][&to].iter().collect();
    assert_eq!(evidence.len(), 1);
    assert_eq!(evidence[0].file, "src/a.rs");
    assert_eq!(display(&evidence[0].from), "crate::a::inner");
    assert_eq!(evidence[0].item, "crate::b::run");
}

#[test]
fn a_path_attribute_is_refused() {
    let files: BTreeMap<&str, &str> = [
        ("src/lib.rs", "#[path = \"x.rs\"] mod y;"),
        ("src/x.rs", ""),
    ]
    .into_iter()
    .collect();
    let read = |p: &Path| {
        files
            .get(p.to_str().unwrap())
            .map(|s| s.to_string())
            .ok_or_else(|| anyhow::anyhow!("no file {}", p.display()))
    };
    let err = modgraph::load(Path::new("src/lib.rs"), &read).unwrap_err();
    assert!(format!("{err:#}").contains("#[path]"), "{err:#}");
}
