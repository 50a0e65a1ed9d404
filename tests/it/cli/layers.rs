//! The module map in ARCHITECTURE.md stays true: its "Layers" block is read here, then every
//! `src/**/*.rs` (test code left out), and each `crate::…`, `super::…` (and, in `main.rs`,
//! `popfetch::…`) path is checked against it. A module may use modules on lower lines and,
//! as long as no circle forms, on its own line; never one above. A module missing from the
//! table, or a table entry without its module, fails too, so the map cannot drift.
//!
//! `POPFETCH_LAYERS_SRC=DIR cargo test --test it layers` checks another tree's `src` (an older
//! commit's, say) against this table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layers, top first: each a list of module paths (`fetch`, `oauth2::authorize`).
fn layers(architecture: &str) -> Vec<Vec<String>> {
    let start = architecture
        .find("```layers\n")
        .expect("ARCHITECTURE.md has no ```layers block");
    let block = &architecture[start + "```layers\n".len()..];
    let block = &block[..block
        .find("```")
        .expect("the ```layers block is not closed")];
    block
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .map(|l| {
            l.split([',', ' '])
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|row| !row.is_empty())
        .collect()
}

/// The module path of a source file: `src/oauth2/http.rs` is `oauth2::http`, `src/config/mod.rs`
/// is `config`, `src/main.rs` is `main`.
fn module_of(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Test code is not held to the layers: sibling `tests.rs` / `proptests.rs` files, and the item
/// after each `#[cfg(test)]` (an inline test module, a test-only helper).
fn is_test_file(rel: &Path) -> bool {
    matches!(
        rel.file_name().and_then(|n| n.to_str()),
        Some("tests.rs" | "proptests.rs")
    )
}

fn shipped_code(text: &str) -> String {
    let mut out = String::new();
    // Inside a `#[cfg(test)]` item: its brace depth, and whether its body has begun.
    let mut skipping: Option<(i64, bool)> = None;
    for line in text.lines() {
        if let Some((depth, opened)) = &mut skipping {
            for c in line.chars() {
                match c {
                    '{' => {
                        *depth += 1;
                        *opened = true;
                    }
                    '}' => *depth -= 1,
                    _ => {}
                }
            }
            let attribute = line.trim_start().starts_with("#[");
            if *depth <= 0 && !attribute && (*opened || line.trim_end().ends_with(';')) {
                skipping = None;
            }
            continue;
        }
        if line.trim_start().starts_with("#[cfg(test)]") {
            skipping = Some((0, false));
            continue;
        }
        // Comments (and doc links in them) are not imports.
        let code = match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every module path the code names through `root::` (`crate`, `super`, `popfetch`): the
/// identifiers after it, `::`-joined, with `{a, b::c}` groups expanded.
fn paths_after(code: &str, root: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let pat = format!("{root}::");
    let mut from = 0;
    while let Some(i) = code[from..].find(&pat) {
        let at = from + i;
        from = at + pat.len();
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut item = String::new();
            let mut depth = 0;
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(segments(item.trim()));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            found.push(segments(rest));
        }
    }
    found.retain(|p| !p.is_empty());
    found
}

/// `a::b::C<…>` → `["a", "b", "C"]`: the leading identifiers.
fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// The table entry a module path falls under: the longest listed prefix.
fn unit_of(path: &[String], listed: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|p| listed.contains(p))
}

/// Checks the sources under `src` against `table`; every broken rule, one line each.
fn check(table: &[Vec<String>], sources: &[(PathBuf, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut layer_of = BTreeMap::new();
    for (i, row) in table.iter().enumerate() {
        for m in row {
            if layer_of.insert(m.clone(), i).is_some() {
                problems.push(format!("`{m}` is listed twice in the Layers table"));
            }
        }
    }
    let listed: BTreeSet<String> = layer_of.keys().cloned().collect();
    let mut seen = BTreeSet::new();
    // unit -> unit -> (file, path) of the first reference, for the messages.
    let mut edges: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
    for (rel, text) in sources {
        if is_test_file(rel) || rel == Path::new("lib.rs") {
            continue;
        }
        let me = module_of(rel);
        let file = format!("src/{}", rel.display());
        let Some(unit) = unit_of(&me, &listed) else {
            problems.push(format!(
                "{file}: module `{}` is not in ARCHITECTURE.md's Layers table; add it to the \
                 line where it belongs",
                me.join("::")
            ));
            continue;
        };
        seen.insert(unit.clone());
        let code = shipped_code(text);
        let mut targets = paths_after(&code, "crate");
        if rel == Path::new("main.rs") {
            targets.extend(paths_after(&code, "popfetch"));
        }
        // `super::x` from `a::b::c` (a file) names `a::b::x`; `mod.rs` counts as its folder.
        let parent = &me[..me.len().saturating_sub(1)];
        for p in paths_after(&code, "super") {
            targets.push(parent.iter().cloned().chain(p).collect());
        }
        for target in targets {
            let Some(to) = unit_of(&target, &listed) else {
                // A name of the crate root, or a module missing from the table (reported
                // once, for its own file).
                continue;
            };
            if to != unit {
                edges
                    .entry(unit.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| (file.clone(), target.join("::")));
            }
        }
    }
    for m in listed.difference(&seen) {
        problems.push(format!(
            "`{m}` is in ARCHITECTURE.md's Layers table but no file of src/ is that module"
        ));
    }
    for (from, tos) in &edges {
        for (to, (file, path)) in tos {
            let (a, b) = (layer_of[from], layer_of[to]);
            if b < a {
                problems.push(format!(
                    "{file}: `{from}` (layer {}) uses `{path}` of `{to}`, a higher layer ({})",
                    a + 1,
                    b + 1
                ));
            }
        }
    }
    for circle in circles(&edges) {
        let mut text = circle.join(" -> ");
        text.push_str(&format!(" -> {}", circle[0]));
        let ties: Vec<String> = circle
            .iter()
            .zip(circle.iter().cycle().skip(1))
            .map(|(a, b)| {
                let (file, path) = &edges[a][b];
                format!("{file} uses `{path}`")
            })
            .collect();
        let group: Vec<String> = edges
            .keys()
            .filter(|n| reaches(&edges, n, &circle[0]) && reaches(&edges, &circle[0], n))
            .cloned()
            .collect();
        problems.push(format!(
            "import circle {text} ({}); every module of it: {}",
            ties.join("; "),
            group.join(", ")
        ));
    }
    problems
}

fn reaches(
    edges: &BTreeMap<String, BTreeMap<String, (String, String)>>,
    from: &str,
    to: &str,
) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_string()];
    while let Some(n) = todo.pop() {
        for next in edges.get(&n).into_iter().flat_map(|t| t.keys()) {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                todo.push(next.clone());
            }
        }
    }
    false
}

/// Every circle of the graph, one per strongly connected group of two or more units, as a
/// path through it.
fn circles(edges: &BTreeMap<String, BTreeMap<String, (String, String)>>) -> Vec<Vec<String>> {
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for start in edges.keys() {
        if done.contains(start) || !reaches(edges, start, start) {
            continue;
        }
        // The shortest way back to `start`, found breadth first.
        let mut back: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start.clone()]);
        let mut last = None;
        while let Some(n) = queue.pop_front() {
            for next in edges.get(&n).into_iter().flat_map(|t| t.keys()) {
                if next == start {
                    last = Some(n.clone());
                    break;
                }
                if !back.contains_key(next) {
                    back.insert(next.clone(), n.clone());
                    queue.push_back(next.clone());
                }
            }
            if last.is_some() {
                break;
            }
        }
        let mut path = vec![last.expect("a unit that reaches itself has a way back")];
        while let Some(p) = back.get(path.last().unwrap()) {
            path.push(p.clone());
        }
        if path.last() != Some(start) {
            path.push(start.clone());
        }
        path.reverse();
        let group = edges
            .keys()
            .filter(|n| reaches(edges, start, n) && reaches(edges, n, start))
            .cloned();
        done.extend(group);
        out.push(path);
    }
    out
}

fn sources(src: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.strip_prefix(src).unwrap().to_path_buf(), text));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn issue14_1_imports_follow_the_layers_of_architecture_md() {
    let table = layers(&std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap());
    let src =
        std::env::var_os("POPFETCH_LAYERS_SRC").map_or_else(|| repo().join("src"), PathBuf::from);
    let problems = check(&table, &sources(&src));
    assert!(
        problems.is_empty(),
        "the imports of {} break the Layers of ARCHITECTURE.md:\n{}",
        src.display(),
        problems.join("\n")
    );
}

/// The checker itself: an upward import, a circle on one line, a module missing from the
/// table and a table entry without a module are each found; grouped and `super::` paths count.
#[test]
fn issue14_1_layer_check_finds_upward_imports_and_circles() {
    let table = layers("```layers\ncli\nfetch, status  # same line\ntext oauth2\n```\n");
    let file = |p: &str, t: &str| (PathBuf::from(p), t.to_string());
    let clean = [
        file("cli.rs", "use crate::{fetch::poll, text};\n"),
        file("fetch.rs", "use crate::status;\n/// [`crate::cli`]\n"),
        file("status.rs", "fn f() { crate::text::x() }\n"),
        file(
            "text.rs",
            "#[cfg(test)]\nfn helper() {\n    crate::cli::x();\n}\nfn shipped() {}\n\
             #[cfg(test)]\nmod tests;\n#[cfg(test)]\nmod t {\n    use crate::cli;\n}\n",
        ),
        file("oauth2/mod.rs", "pub mod http;\n"),
        file("oauth2/http.rs", "use super::Token; use crate::text;\n"),
    ];
    assert_eq!(check(&table, &clean), Vec::<String>::new());

    let mut bad = clean.to_vec();
    bad[2] = file("status.rs", "use crate::fetch::Report;\n");
    bad[5] = file(
        "oauth2/http.rs",
        "use super::Token;\nfn f() { crate::fetch::poll() }\n",
    );
    bad.push(file("progress.rs", ""));
    let problems = check(&table, &bad);
    let has = |s: &str| problems.iter().any(|p| p.contains(s));
    assert!(
        has(
            "src/oauth2/http.rs: `oauth2` (layer 3) uses `fetch::poll` of `fetch`, a higher layer (2)"
        ),
        "{problems:?}"
    );
    assert!(
        has(
            "import circle fetch -> status -> fetch (src/fetch.rs uses `status`; src/status.rs uses `fetch::Report`); every module of it: fetch, status"
        ),
        "{problems:?}"
    );
    assert!(has("module `progress` is not in"), "{problems:?}");
    assert_eq!(problems.len(), 3, "{problems:?}");

    let extra = layers("```layers\ncli\nimport\n```\n");
    assert_eq!(
        check(&extra, &[file("cli.rs", "")]),
        ["`import` is in ARCHITECTURE.md's Layers table but no file of src/ is that module"]
    );
}
