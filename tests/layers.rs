//! The shape ARCHITECTURE.md promises, checked on the source itself: the server's modules
//! import one way down the layers (so no import cycle), the invariants about who names
//! sockets, openraft and sled, and the size limits (no file under `src/` over 800 lines, no
//! function outside tests over 120). Reads `src/` as text; no build of anything else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may import only modules of a lower layer (modules of
/// one layer know nothing of each other). Keep in step with ARCHITECTURE.md's picture.
const LAYERS: &[&[&str]] = &[
    &["protocol", "config", "sys"],
    &["metrics", "state", "outbound", "tls"],
    &[
        "auth",
        "channels",
        "limits",
        "hub",
        "conn",
        "peer",
        "proxy",
        "replicator",
    ],
    &["engine"],
    &["store"],
    &["cluster"],
    &["node"],
    &["ops", "survey"],
    &["session"],
    &["api", "admin"],
    &["transport"],
    &["server"],
];

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 120;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a.rs` and `src/a/**` belong to module `a`.
fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The code of a file without its `#[cfg(test)]` module and without comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names through `crate::…` (including
/// `use crate::{a, b::c}` groups).
fn crate_deps(code: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let m = ident(part);
                if !m.is_empty() {
                    deps.insert(m);
                }
            }
        } else {
            let m = ident(rest);
            if !m.is_empty() {
                deps.insert(m);
            }
        }
    }
    deps
}

struct Tree {
    /// module → modules it imports.
    deps: BTreeMap<String, BTreeSet<String>>,
    /// (path relative to the crate, code) of every file.
    files: Vec<(String, String, String)>,
}

fn tree() -> Tree {
    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    paths.sort();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap();
        let m = module_of(&p);
        let c = code(&text);
        if m != "lib" && m != "main" {
            let d = deps.entry(m.clone()).or_default();
            d.extend(crate_deps(&c).into_iter().filter(|x| *x != m));
        }
        let rel = p
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
            .to_string();
        files.push((rel, text, c));
    }
    Tree { deps, files }
}

fn layer_of(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

#[test]
fn every_module_is_in_a_layer_and_imports_only_lower_layers() {
    let t = tree();
    let mut wrong = Vec::new();
    for (m, deps) in &t.deps {
        let Some(lm) = layer_of(m) else {
            wrong.push(format!("module `{m}` is in no layer of tests/layers.rs"));
            continue;
        };
        for d in deps {
            match layer_of(d) {
                Some(ld) if ld < lm => {}
                Some(_) => wrong.push(format!("`{m}` imports `{d}`, which is not below it")),
                None => wrong.push(format!("`{m}` imports `{d}`, which is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_dependency_checker_sees_grouped_and_inline_paths() {
    let deps = crate_deps(&code(
        "use crate::{a::X, b};\nfn f() { crate::c::g(); }\n// crate::d\n",
    ));
    assert_eq!(deps, BTreeSet::from(["a".into(), "b".into(), "c".into()]));
    assert_eq!(crate_deps(&code("// crate::d\nfn f() {}")), BTreeSet::new());
}

/// Files (relative paths) whose code names any of `needles`.
fn files_naming(t: &Tree, needles: &[&str]) -> BTreeSet<String> {
    t.files
        .iter()
        .filter(|(_, _, c)| needles.iter().any(|n| c.contains(n)))
        .map(|(p, _, _)| p.clone())
        .collect()
}

#[test]
fn only_transport_peer_and_the_proxy_client_know_network_sockets_http_and_websocket_frames() {
    let t = tree();
    let named = files_naming(
        &t,
        &[
            "tokio::net",
            "std::net::Tcp",
            "TcpStream",
            "TcpListener",
            "hyper::",
            "hyper_util",
            "fastwebsockets",
        ],
    );
    let outside: Vec<_> = named
        .into_iter()
        .filter(|p| {
            !p.starts_with("src/transport/") && p != "src/peer.rs" && p != "src/proxy/http.rs"
        })
        .collect();
    assert!(outside.is_empty(), "sockets/HTTP named in {outside:?}");
}

#[test]
fn only_cluster_and_store_name_openraft_and_only_store_names_sled() {
    let t = tree();
    let raft: Vec<_> = files_naming(&t, &["openraft"])
        .into_iter()
        .filter(|p| !p.starts_with("src/cluster/") && !p.starts_with("src/store/"))
        .collect();
    assert!(raft.is_empty(), "openraft named in {raft:?}");
    let sled: Vec<_> = files_naming(&t, &["sled::", "use sled"])
        .into_iter()
        .filter(|p| !p.starts_with("src/store/"))
        .collect();
    assert!(sled.is_empty(), "sled named in {sled:?}");
}

#[test]
fn node_is_a_context_with_its_behaviour_in_one_file() {
    let t = tree();
    let elsewhere: Vec<_> = t
        .files
        .iter()
        .filter(|(p, _, c)| p != "src/node.rs" && c.contains("impl Node {"))
        .map(|(p, _, _)| p.clone())
        .collect();
    assert!(
        elsewhere.is_empty(),
        "`impl Node` outside node.rs: {elsewhere:?}"
    );
    let node = &t
        .files
        .iter()
        .find(|(p, _, _)| p == "src/node.rs")
        .unwrap()
        .2;
    let open_fields: Vec<_> = node
        .lines()
        .skip_while(|l| !l.starts_with("pub struct Node {"))
        .take_while(|l| *l != "}")
        .filter(|l| l.trim_start().starts_with("pub ") && l.contains(':'))
        .collect();
    assert!(
        open_fields.is_empty(),
        "fully public Node fields: {open_fields:?}"
    );
}

#[test]
fn protocol_is_pure() {
    let t = tree();
    let impure: Vec<_> = t
        .files
        .iter()
        .filter(|(p, _, c)| {
            p.starts_with("src/protocol/")
                && [
                    "async ",
                    "tokio",
                    "std::fs",
                    "std::net",
                    "Mutex",
                    "RwLock",
                    "\nstatic ",
                    "\npub static ",
                    "thread_local",
                ]
                .iter()
                .any(|n| c.contains(n))
        })
        .map(|(p, _, _)| p.clone())
        .collect();
    assert!(
        impure.is_empty(),
        "protocol does I/O or state in {impure:?}"
    );
}

/// Functions longer than the limit: `(file:line, name, lines)`. A function runs from its
/// `fn` line to the first line that closes at the same indentation (rustfmt's layout).
fn long_functions(path: &str, code: &str) -> Vec<(String, String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = &l[..l.len() - t.len()];
        let mut is_fn = false;
        for w in t.split_whitespace() {
            if w == "fn" {
                is_fn = true;
                break;
            }
            if !(w.starts_with("pub") || ["async", "const", "unsafe", "extern"].contains(&w)) {
                break;
            }
        }
        if !is_fn || t.ends_with(';') || t.ends_with('}') {
            continue;
        }
        let name: String = t[t.find("fn ").unwrap() + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = format!("{indent}}}");
        let end = lines[i + 1..]
            .iter()
            .position(|x| *x == close)
            .map(|k| i + 1 + k)
            .unwrap_or(lines.len() - 1);
        let n = end - i + 1;
        if n > MAX_FN_LINES {
            out.push((format!("{path}:{}", i + 1), name, n));
        }
    }
    out
}

#[test]
fn the_function_length_checker_measures_to_the_closing_brace() {
    let body = "    let x = 1;\n".repeat(MAX_FN_LINES);
    let code = format!("pub async fn long() {{\n{body}}}\n\nfn short() {{\n}}\n");
    let found = long_functions("x.rs", &code);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1, "long");
    assert_eq!(found[0].2, MAX_FN_LINES + 2);
}

#[test]
fn no_file_over_800_lines_and_no_function_over_120_outside_tests() {
    let t = tree();
    // The load generator's crate keeps the same limits.
    let mut bench = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/bench/src"),
        &mut bench,
    );
    let bench = bench.into_iter().map(|p| {
        let text = std::fs::read_to_string(&p).unwrap();
        let c = code(&text);
        (p.display().to_string(), text, c)
    });
    let mut wrong = Vec::new();
    for (path, text, code) in t.files.iter().cloned().chain(bench) {
        let n = text.lines().count();
        if n > MAX_FILE_LINES {
            wrong.push(format!("{path}: {n} lines"));
        }
        for (at, name, n) in long_functions(&path, &code) {
            wrong.push(format!("{at}: fn {name} is {n} lines"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
