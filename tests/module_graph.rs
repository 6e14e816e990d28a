//! Dependencies run one way: no module of the workspace uses, directly or through others, a
//! module that uses it. `make lint` runs this.
//!
//! A module is a file (`a/mod.rs` and `a.rs` are the module `a`). A module depends on another
//! when its code names it: a `use` (not a `pub use`, which only re-exports a child's item), or a
//! path in the code (`crate::a::b`, `super::b`, or a child's name). A path to an item a module
//! re-exports from a child is a dependency on that child. Inline `#[cfg(test)] mod tests` blocks
//! are left out (tests depend on what they test; nothing depends on them).
//!
//! Parents count like any module: a parent whose code uses a child, and a child that uses the
//! parent's own items, is a circle too.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

type Module = Vec<String>;

struct Crate {
    root: PathBuf,
    modules: BTreeMap<Module, (PathBuf, String)>,
}

impl Crate {
    fn read(root: &Path) -> Crate {
        let mut modules = BTreeMap::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    // Each file in `src/bin` is a crate of its own, of one file.
                    if path != root.join("bin") {
                        dirs.push(path);
                    }
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                // Beside a library, `main.rs` is a crate of its own that uses the library.
                if path == root.join("main.rs") && root.join("lib.rs").exists() {
                    continue;
                }
                let rel = path.strip_prefix(root).unwrap().with_extension("");
                let mut module: Module = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    module.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    module.pop();
                }
                let code = code_of(&std::fs::read_to_string(&path).unwrap());
                modules.insert(module, (path, code));
            }
        }
        Crate {
            root: root.to_path_buf(),
            modules,
        }
    }

    fn children(&self, module: &Module) -> BTreeSet<String> {
        self.modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .map(|m| m[module.len()].clone())
            .collect()
    }

    /// The module a path used in `from` names, following re-exports of children's items; None
    /// for a path outside this crate.
    fn resolve(&self, from: &Module, path: &str, reexports: &Reexports) -> Option<Module> {
        let mut segments = path.split("::").map(str::trim).peekable();
        let first = *segments.peek()?;
        let mut at = match first {
            "crate" => {
                segments.next();
                Vec::new()
            }
            "super" | "self" => from.clone(),
            name if self.children(from).contains(name) => from.clone(),
            _ => return None,
        };
        let mut leading = true;
        for segment in segments {
            let name = segment.split(" as ").next().unwrap().trim();
            match name {
                "super" if leading => {
                    at.pop();
                    continue;
                }
                "self" => continue,
                _ => leading = false,
            }
            let mut child = at.clone();
            child.push(name.to_string());
            if self.modules.contains_key(&child) {
                at = child;
            } else if let Some(target) = reexports.get(&at).and_then(|r| r.get(name)) {
                at = target.clone();
            } else {
                break;
            }
        }
        Some(at)
    }
}

type Reexports = BTreeMap<Module, BTreeMap<String, Module>>;

/// The code of a file without comments and without its inline test module.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        let line = line.find(" //").map_or(line, |i| &line[..i]);
        code.push_str(line);
        code.push('\n');
    }
    if let Some(i) = code.find("#[cfg(test)]\nmod tests {") {
        code.truncate(i);
    }
    without_literals(&code)
}

/// `code` with the insides of its string and character literals left out.
fn without_literals(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            'r' if chars.get(i + 1) == Some(&'#') || chars.get(i + 1) == Some(&'"') => {
                let hashes = chars[i + 1..].iter().take_while(|c| **c == '#').count();
                if chars.get(i + 1 + hashes) != Some(&'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let rest: String = chars[i + 2 + hashes..].iter().collect();
                let len = rest.find(&close).map_or(rest.len(), |e| e + close.len());
                i += 2 + hashes + rest[..len].chars().count();
                out.push_str("\"\"");
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            '\'' if chars.get(i + 1) == Some(&'\\') => {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
            '\'' if chars.get(i + 2) == Some(&'\'') => i += 3,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// The statements `use …;` in `code`, each with whether it is a re-export (`pub use`).
fn uses(code: &str) -> Vec<(bool, String)> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = find_word(rest, "use") {
        let before = rest[..i].trim_end();
        let public = ["pub", "pub(crate)", "pub(super)", "pub(self)"]
            .iter()
            .any(|p| before.ends_with(p));
        let after = &rest[i + 3..];
        let Some(end) = after.find(';') else { break };
        found.push((public, after[..end].trim().to_string()));
        rest = &after[end..];
    }
    found
}

fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find(word).map(|i| i + from) {
        let before = i.checked_sub(1).map(|b| bytes[b]);
        let after = bytes.get(i + word.len());
        let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        if !before.is_some_and(ident) && after.is_some_and(|b| b.is_ascii_whitespace()) {
            return Some(i);
        }
        from = i + word.len();
    }
    None
}

/// `a::{b, c::{d, e}}` as `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect::<Vec<_>>().join(" ");
    let (Some(open), Some(close)) = (tree.find('{'), tree.rfind('}')) else {
        return vec![tree];
    };
    let prefix = &tree[..open];
    let body = &tree[open + 1..close];
    let (mut parts, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand(&format!("{prefix}{p}")))
        .collect()
}

/// Paths in code that may name a module of this crate: `crate::…`, `super::…`, `self::…` or
/// `name::…`.
fn paths_in(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let chars: Vec<char> = code.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        if !ident(chars[i]) || (i > 0 && (ident(chars[i - 1]) || chars[i - 1] == ':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (ident(chars[i]) || chars[i] == ':') {
            i += 1;
        }
        let path: String = chars[start..i].iter().collect();
        // `a::b::{…}` is a `use` tree, read whole by `uses`.
        if path.contains("::") && !path.ends_with(':') {
            found.push(path);
        }
    }
    found
}

/// Who depends on whom, with the path that makes each dependency.
fn dependencies(krate: &Crate) -> BTreeMap<Module, BTreeMap<Module, String>> {
    let mut reexports = Reexports::new();
    for (module, (_, code)) in &krate.modules {
        for (_, tree) in uses(code).into_iter().filter(|(public, _)| *public) {
            for path in expand(&tree) {
                let name = path.rsplit(" as ").next().unwrap();
                let name = name.rsplit("::").next().unwrap().trim().to_string();
                if let Some(target) = krate.resolve(module, &path, &reexports)
                    && target.len() > module.len()
                    && target.starts_with(module)
                {
                    reexports
                        .entry(module.clone())
                        .or_default()
                        .insert(name, target);
                }
            }
        }
    }
    let mut edges: BTreeMap<Module, BTreeMap<Module, String>> = BTreeMap::new();
    for (module, (_, code)) in &krate.modules {
        let mut paths: Vec<String> = uses(code)
            .into_iter()
            .filter(|(public, _)| !public)
            .flat_map(|(_, tree)| expand(&tree))
            .collect();
        let without_reexports = uses(code)
            .into_iter()
            .filter(|(public, _)| *public)
            .fold(code.clone(), |code, (_, tree)| code.replace(&tree, ""));
        paths.extend(paths_in(&without_reexports));
        for path in paths {
            if let Some(target) = krate.resolve(module, &path, &reexports)
                && &target != module
            {
                edges
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_insert(path);
            }
        }
    }
    edges
}

/// Every circle, as the modules on it in order (each reported once).
fn circles(edges: &BTreeMap<Module, BTreeMap<Module, String>>) -> Vec<Vec<Module>> {
    fn visit(
        at: &Module,
        edges: &BTreeMap<Module, BTreeMap<Module, String>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
        found: &mut Vec<Vec<Module>>,
    ) {
        if let Some(i) = path.iter().position(|m| m == at) {
            found.push(path[i..].to_vec());
            return;
        }
        if done.contains(at) {
            return;
        }
        path.push(at.clone());
        for next in edges.get(at).into_iter().flat_map(BTreeMap::keys) {
            visit(next, edges, path, done, found);
        }
        path.pop();
        done.insert(at.clone());
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        visit(module, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".into()
    } else {
        module.join("::")
    }
}

fn report(krate: &Crate) -> Vec<String> {
    let edges = dependencies(krate);
    circles(&edges)
        .into_iter()
        .map(|circle| {
            let mut lines = vec![format!("a circle in {}:", krate.root.display())];
            for (i, from) in circle.iter().enumerate() {
                let to = &circle[(i + 1) % circle.len()];
                lines.push(format!(
                    "  {} -> {} ({} names `{}`)",
                    name(from),
                    name(to),
                    krate.modules[from].0.display(),
                    edges[from][to]
                ));
            }
            lines.join("\n")
        })
        .collect()
}

fn roots() -> Vec<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut roots = vec![
        repo.join("src"),
        repo.join("testkit/src"),
        repo.join("bench/src"),
    ];
    for entry in std::fs::read_dir(repo.join("tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.join("main.rs").exists() {
            roots.push(path);
        }
    }
    roots
}

#[test]
fn dependencies_run_one_way() {
    let circles: Vec<String> = roots()
        .iter()
        .flat_map(|root| report(&Crate::read(root)))
        .collect();
    assert!(
        circles.is_empty(),
        "{} circle(s) among modules; move what both sides need below them:\n{}",
        circles.len(),
        circles.join("\n")
    );
}

#[test]
fn the_check_sees_a_circle() {
    let dir = std::env::temp_dir().join(format!("reserve-module-graph-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(dir.join("a/mod.rs"), "mod c;\npub use c::Thing;\n").unwrap();
    std::fs::write(dir.join("a/c.rs"), "pub struct Thing(crate::b::Other);\n").unwrap();
    std::fs::write(
        dir.join("b.rs"),
        "use super::a::{self, Thing};\npub struct Other;\n// crate::a::c in a comment\n",
    )
    .unwrap();
    let found = report(&Crate::read(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("a::c -> b") && found[0].contains("b -> a::c"),
        "{found:?}"
    );
}
