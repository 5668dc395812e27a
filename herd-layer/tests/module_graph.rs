//! The shape of herd-layer, checked from its own source: the routing core
//! imports nothing of the proxy app, and no two files depend on each other
//! through a cycle (a cycle is a knot nobody can change one end of alone).
//!
//! The graph is built from what each file names: `use` trees and inline
//! `crate::…`/`super::…` paths, each resolved to the deepest file that
//! exists. A module's own children are its parts, not dependencies. Test code (`tests.rs` files and everything after a file's
//! `#[cfg(test)]`) is left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file, as its module path (`["dialect", "openai"]`).
fn modules() -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                if name == "bin" && prefix.is_empty() {
                    continue;
                }
                let mut pre = prefix.to_vec();
                pre.push(name);
                walk(&p, &pre, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                if name == "tests" {
                    continue;
                }
                let mut m = prefix.to_vec();
                if name != "mod" && !(prefix.is_empty() && name == "lib") {
                    m.push(name);
                }
                out.insert(m, p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&src(), &[], &mut out);
    out
}

/// Expand a `use` tree (`a::{b, c::{d, e}}`) into paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let t = tree.split(" as ").next().unwrap_or("").trim();
        return vec![t.to_string()];
    };
    let prefix = &tree[..open];
    let Some(close) = tree.rfind('}') else {
        return Vec::new();
    };
    let inner = &tree[open + 1..close];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| {
            if p == "self" {
                prefix.trim_end_matches("::").to_string()
            } else {
                format!("{prefix}{p}")
            }
        })
        .collect()
}

/// The code of a file without its tests and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths a file names, resolved to absolute module paths.
fn named(text: &str, me: &[String], is_mod_file: bool) -> Vec<Vec<String>> {
    let code = code(text);
    let mut paths = Vec::new();
    // `use` statements (at the start of a line), whole trees.
    let lines: Vec<&str> = code.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_start();
        let l = l.strip_prefix("pub ").unwrap_or(l);
        let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
        let l = l.strip_prefix("pub(super) ").unwrap_or(l);
        if let Some(tree) = l.strip_prefix("use ") {
            let mut stmt = tree.to_string();
            while !stmt.contains(';') && i + 1 < lines.len() {
                i += 1;
                stmt.push_str(lines[i]);
            }
            paths.extend(expand(stmt.split(';').next().unwrap_or("")));
        }
        i += 1;
    }
    // Inline paths.
    for (i, _) in code.match_indices("crate::") {
        let p: String = code[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(p);
    }
    for (i, _) in code.match_indices("super::") {
        if code[..i].ends_with("::") {
            continue;
        }
        let p: String = code[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(p);
    }
    // A mod.rs file's module is its folder; a leaf file's parent is its folder.
    let parent: Vec<String> = if is_mod_file {
        me.to_vec()
    } else {
        me[..me.len().saturating_sub(1)].to_vec()
    };
    let mut out = Vec::new();
    for p in paths {
        let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        let Some(first) = segs.first() else { continue };
        let abs: Vec<String> = match *first {
            "crate" => segs[1..].iter().map(|s| s.to_string()).collect(),
            "super" => {
                let mut base = parent.clone();
                let mut i = 0;
                while segs.get(i) == Some(&"super") {
                    if i > 0 {
                        base.pop();
                    }
                    i += 1;
                }
                base.extend(segs[i..].iter().map(|s| s.to_string()));
                base
            }
            "self" => {
                let mut base = me.to_vec();
                base.extend(segs[1..].iter().map(|s| s.to_string()));
                base
            }
            // A child module named relatively (`pub use service::Scoring;`).
            child => {
                if !code.contains(&format!("mod {child};")) {
                    continue;
                }
                let mut base = me.to_vec();
                base.extend(segs.iter().map(|s| s.to_string()));
                base
            }
        };
        out.push(abs);
    }
    out
}

/// The deepest module file a path lands in.
fn resolve(path: &[String], mods: &BTreeMap<Vec<String>, PathBuf>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| mods.contains_key(p))
}

fn graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mods = modules();
    let mut g = BTreeMap::new();
    for (m, file) in &mods {
        let text = std::fs::read_to_string(file).unwrap();
        let is_mod_file =
            file.file_name().is_some_and(|n| n == "mod.rs") || file.ends_with("src/lib.rs");
        let deps: BTreeSet<Vec<String>> = named(&text, m, is_mod_file)
            .iter()
            .filter_map(|p| resolve(p, &mods))
            // A module's own children are its parts, not its dependencies:
            // `mod.rs` re-exporting `layer::FooLayer` while `layer.rs` names
            // `super::Foo` is tower's facade, not a knot.
            .filter(|d| !d.is_empty() && !d.starts_with(m))
            .collect();
        g.insert(m.clone(), deps);
    }
    g
}

fn name(m: &[String]) -> String {
    m.join("::")
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        n: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        t.index.insert(v, t.n);
        t.low.insert(v, t.n);
        t.n += 1;
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let Some((w, _)) = t.g.get_key_value(w) else {
                continue;
            };
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                scc.push(name(w));
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        n: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_file_is_in_an_import_cycle() {
    let g = graph();
    assert!(g.len() > 40, "found only {} files", g.len());
    let c = cycles(&g);
    assert!(
        c.is_empty(),
        "import cycles among herd-layer's files: {c:#?}"
    );
}

#[test]
fn the_core_imports_nothing_of_the_app() {
    let g = graph();
    let mut bad = Vec::new();
    for (m, deps) in &g {
        if m.first().is_some_and(|s| s == "app") {
            continue;
        }
        for d in deps {
            if d.first().is_some_and(|s| s == "app") {
                bad.push(format!("{} -> {}", name(m), name(d)));
            }
        }
    }
    assert!(bad.is_empty(), "core files import the app: {bad:#?}");
}

#[test]
fn the_checker_sees_cycles_and_imports() {
    // The checker itself can fail: a made-up pair importing each other is
    // one cycle, and a real edge of the tree is found.
    let mut g = BTreeMap::new();
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    g.insert(a.clone(), BTreeSet::from([b.clone()]));
    g.insert(b.clone(), BTreeSet::from([a.clone()]));
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".to_string()]]);
    let real = graph();
    let forward = real.get(&vec!["forward".to_string()]).unwrap();
    assert!(
        forward.contains(&vec!["dialect".to_string()]),
        "{forward:?}"
    );
    assert_eq!(
        expand("crate::{a::B, c::{self, D}}"),
        vec!["crate::a::B", "crate::c", "crate::c::D"]
    );
}
