//! The layering rule (AGENTS.md, docs/architecture.md), checked on the sources:
//!
//! - crates reference only the crates below them ([`ALLOWED_CRATES`]); `ezt-core` references
//!   none, and only the binary names a store backend;
//! - within a crate, no two top-level modules import each other, directly or through others
//!   (no cycles); in the crates listed in [`ROOT_ONLY_WIRES`] modules never import the crate
//!   root either (it only declares and wires them);
//! - the named sibling rules hold ([`FORBIDDEN_MODULES`]): dispatch and deliver never import
//!   each other, lanes and events stay below the services.
//!
//! The check reads every `.rs` file under `crates/*/src` and collects `crate::…` and `ezt_…`
//! paths outside comments; `super::` paths stay inside a module and are not edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// For each crate, the workspace crates its non-test code may use. A crate missing here is
/// only checked for cycles.
const ALLOWED_CRATES: &[(&str, &[&str])] = &[
    ("ezt_core", &[]),
    ("ezt_store", &["ezt_core"]),
    ("ezt_store_sqlite", &["ezt_core", "ezt_store"]),
    ("ezt_store_postgres", &["ezt_core", "ezt_store"]),
    ("ezt_outbound", &["ezt_core"]),
    ("ezt_runtime", &["ezt_core", "ezt_store", "ezt_outbound"]),
    ("ezt_http", &["ezt_core", "ezt_store", "ezt_runtime"]),
    (
        "ezthrottle",
        &[
            "ezt_core",
            "ezt_store",
            "ezt_store_sqlite",
            "ezt_store_postgres",
            "ezt_runtime",
            "ezt_http",
        ],
    ),
];

/// Crates whose root only declares and wires modules: a module naming a root item would
/// close a cycle with the root.
const ROOT_ONLY_WIRES: &[&str] = &["ezt_outbound", "ezt_runtime", "ezt_http"];

/// (crate, module, modules it must not import).
const FORBIDDEN_MODULES: &[(&str, &str, &[&str])] = &[
    ("ezt_runtime", "dispatch", &["deliver", "jobs", "notifier"]),
    (
        "ezt_runtime",
        "deliver",
        &[
            "dispatch",
            "jobs",
            "followups",
            "events",
            "notifier",
            "webhook_secrets",
        ],
    ),
    (
        "ezt_runtime",
        "lanes",
        &[
            "dispatch",
            "deliver",
            "jobs",
            "followups",
            "events",
            "metrics",
            "notifier",
        ],
    ),
    (
        "ezt_runtime",
        "events",
        &["dispatch", "deliver", "jobs", "followups", "lanes"],
    ),
    (
        "ezt_runtime",
        "followups",
        &["dispatch", "jobs", "notifier"],
    ),
    ("ezt_runtime", "clock", &["*"]),
    ("ezt_runtime", "config", &["*"]),
    ("ezt_runtime", "fence", &["*"]),
    // The spool forwards through `followups`; admission (`jobs`) calls it, never the reverse.
    ("ezt_runtime", "spool", &["jobs", "dispatch", "deliver"]),
    (
        "ezt_runtime",
        "membership",
        &[
            "lanes",
            "dispatch",
            "deliver",
            "jobs",
            "followups",
            "notifier",
        ],
    ),
];

/// The workspace's `crates/` directory (`EZT_LAYERS_CRATES` checks another tree, e.g. an
/// old checkout, to see what the rule reports there).
fn crates_dir() -> PathBuf {
    match std::env::var_os("EZT_LAYERS_CRATES") {
        Some(dir) => dir.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`None` for the crate root).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The code of a file without comments (line comments and `/* */` blocks) and string
/// literals, so prose and messages that mention a path are not imports.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            // A char literal holding a quote ('"'), so the string skipper is not fooled.
            b'\'' if b.get(i + 1) == Some(&b'"') && b.get(i + 2) == Some(&b'\'') => i += 3,
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every identifier that follows `prefix` (e.g. `crate::`) at a word boundary; `use
/// crate::{a, b::c}` yields `a` and `b`.
fn paths_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut from = 0;
    while let Some(pos) = code[from..].find(prefix) {
        let at = from + pos;
        from = at + prefix.len();
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue; // e.g. `my_crate::`
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| is_ident(*c)).collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// Workspace crates named in `code` (`ezt_core::…`, `use ezt_store::{…}`).
fn crates_named(code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for k in known {
        let needle = format!("{k}::");
        let mut from = 0;
        while let Some(pos) = code[from..].find(&needle) {
            let at = from + pos;
            from = at + needle.len();
            if !code[..at].chars().next_back().is_some_and(is_ident) {
                out.insert(k.clone());
                break;
            }
        }
    }
    out
}

/// A cycle in `graph`, if any, as the path that closes it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

struct Crate {
    name: String,
    /// Module → the modules of this crate it names (`"(root)"` for the crate root).
    modules: BTreeMap<String, BTreeSet<String>>,
    /// Workspace crates its sources name.
    uses: BTreeSet<String>,
}

const ROOT: &str = "(root)";

fn scan() -> Vec<Crate> {
    let dir = crates_dir();
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).expect("crates/").flatten() {
        if e.path().join("Cargo.toml").is_file() {
            names.push(e.file_name().to_string_lossy().replace('-', "_"));
        }
    }
    let known: BTreeSet<String> = names.iter().cloned().collect();
    let mut out = Vec::new();
    for name in names {
        let src = dir.join(name.replace('_', "-")).join("src");
        let mut files = Vec::new();
        rs_files(&src, &mut files);
        let mods: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
        let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut uses = BTreeSet::new();
        for f in &files {
            let code = code_only(&std::fs::read_to_string(f).expect("readable source"));
            let me = top_module(&src, f).unwrap_or_else(|| ROOT.into());
            let edges = modules.entry(me.clone()).or_default();
            for target in paths_after(&code, "crate::") {
                let to = if mods.contains(&target) {
                    target
                } else {
                    ROOT.into()
                };
                if to != me {
                    edges.insert(to);
                }
            }
            let mut named = crates_named(&code, &known);
            named.remove(&name);
            uses.extend(named);
        }
        // The root declares (and so depends on) every module.
        modules.entry(ROOT.into()).or_default().extend(mods);
        out.push(Crate {
            name,
            modules,
            uses,
        });
    }
    out
}

#[test]
fn crates_only_use_the_crates_below_them() {
    let crates = scan();
    assert!(crates.len() >= 5, "found the workspace crates");
    let mut bad = Vec::new();
    for c in &crates {
        let Some((_, allowed)) = ALLOWED_CRATES.iter().find(|(n, _)| *n == c.name) else {
            continue;
        };
        for u in &c.uses {
            if !allowed.contains(&u.as_str()) {
                bad.push(format!("{} uses {u}", c.name));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "layering (see docs/architecture.md): {bad:?}"
    );
    let graph: BTreeMap<String, BTreeSet<String>> = crates
        .iter()
        .map(|c| (c.name.clone(), c.uses.clone()))
        .collect();
    assert_eq!(find_cycle(&graph), None, "a cycle between crates");
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    for mut c in scan() {
        if !ROOT_ONLY_WIRES.contains(&c.name.as_str()) {
            // Elsewhere the root may hold shared items; only cycles between modules count.
            c.modules.remove(ROOT);
            for edges in c.modules.values_mut() {
                edges.remove(ROOT);
            }
        }
        let mutual: Vec<String> = c
            .modules
            .iter()
            .flat_map(|(a, edges)| edges.iter().map(move |b| (a, b)))
            .filter(|(a, b)| a < b && c.modules.get(*b).is_some_and(|e| e.contains(*a)))
            .map(|(a, b)| format!("{a} <-> {b}"))
            .collect();
        assert!(
            mutual.is_empty(),
            "modules of {} that import each other: {mutual:?}",
            c.name
        );
        if let Some(cycle) = find_cycle(&c.modules) {
            panic!(
                "import cycle in {}: {} (modules must not import each other back, nor the crate root; see docs/architecture.md)",
                c.name,
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn sibling_and_layer_rules_hold() {
    let crates = scan();
    let mut bad = Vec::new();
    for (krate, module, forbidden) in FORBIDDEN_MODULES {
        let c = crates
            .iter()
            .find(|c| c.name == *krate)
            .unwrap_or_else(|| panic!("crate {krate} exists"));
        let edges = c
            .modules
            .get(*module)
            .unwrap_or_else(|| panic!("module {krate}::{module} exists"));
        for to in edges {
            if forbidden.contains(&"*") || forbidden.contains(&to.as_str()) {
                bad.push(format!("{krate}::{module} imports {to}"));
            }
        }
    }
    assert!(bad.is_empty(), "forbidden directions: {bad:?}");
}

#[test]
fn the_checker_sees_cycles_groups_and_ignores_comments() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(
        find_cycle(&g).map(|c| c.len()),
        Some(4),
        "a -> b -> c -> a is found"
    );
    let code = code_only(
        "use crate::{lanes::X, events};\n// crate::dispatch in prose\nlet s = \"crate::jobs\";\nfoo(crate::metrics::y);",
    );
    let found = paths_after(&code, "crate::");
    assert_eq!(
        found,
        BTreeSet::from(["events".into(), "lanes".into(), "metrics".into()]),
        "groups and inline paths count; comments and strings do not"
    );
}
