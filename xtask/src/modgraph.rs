//! The source half of the module-cycle check: which modules a crate has (its `mod` items, found
//! in the file tree the way rustc finds them) and which other modules each one's code names.
//!
//! What counts as a reference from module M to module N:
//! - a `use` in M (at any depth, fn bodies included) whose path leads into N, a glob's too;
//! - a path of two or more segments anywhere in M's code (types, expressions, patterns, macro
//!   arguments, attribute arguments such as `#[arg(default_value = crate::x::Y)]`) that starts
//!   with `crate`, `$crate`, `self`, `super`, a name M imported or a child module of M, and leads
//!   into N.
//!
//! A path leads into the deepest module it names: `crate::join::joiner::SpanLine` leads into
//! `crate::join::joiner`. When the item after that module is one of the module's own imports
//! (a re-export such as `pub use ingress::Payload`), the path is followed to where the import
//! points, so `super::Payload` in `otlp::http` leads into `otlp::ingress`.
//!
//! Not counted: doc comments and string literals, paths into other crates, items under
//! `#[cfg(test)]` at module level (the check is about the library, not its unit tests), and
//! single-segment names (those come through a `use`, which is counted). Modules declared with
//! `#[path]` are refused rather than guessed.
//!
//! Read here rather than by cargo-modules (`dependencies --acyclic`): that one graphs items, so
//! every type with a method that names it is a cycle (it fails on every crate of the workspace,
//! whatever the filters), it always runs the build scripts, the agent's among them, which builds
//! the eBPF programs, and it takes over 13 CPU-minutes to install.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use proc_macro2::{Spacing, TokenStream, TokenTree};
use quote::ToTokens as _;
use syn::{Attribute, Item, UseTree};

use crate::cycles::{Evidence, Graph, ModPath, display};

/// How far imports are followed, so that `use a as b; use b as a;` cannot loop.
const MAX_HOPS: u32 = 16;

#[derive(Debug)]
struct Module {
    path: ModPath,
    file: String,
    /// Where `mod x;` inside this module looks for `x.rs` or `x/mod.rs`.
    children_dir: PathBuf,
    children: BTreeMap<String, ModPath>,
    /// Names brought in by `use`, each to the path as written.
    imports: BTreeMap<String, ModPath>,
    /// Modules whose names `use …::*` brings in, as written.
    globs: Vec<ModPath>,
    /// Every path the module's code names, as written.
    refs: Vec<ModPath>,
}

#[derive(Debug)]
pub struct Crate {
    modules: Vec<Module>,
    index: BTreeMap<ModPath, usize>,
}

/// Reads the crate whose root file is `root_file` (lib.rs or main.rs); `read` gives a file's text
/// or fails when it does not exist.
pub fn load(
    root_file: &Path,
    read: &dyn Fn(&Path) -> anyhow::Result<String>,
) -> anyhow::Result<Crate> {
    let mut krate = Crate {
        modules: Vec::new(),
        index: BTreeMap::new(),
    };
    let dir = root_file.parent().unwrap_or(Path::new("")).to_path_buf();
    krate.load_file(Vec::new(), root_file, dir, read)?;
    Ok(krate)
}

fn is_test_only(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta.require_list().is_ok_and(|list| {
                let cfg = list.tokens.to_string().replace(' ', "");
                cfg == "test" || cfg.starts_with("all(test,")
            })
    })
}

fn attrs_of(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

fn ident(id: &impl ToString) -> String {
    let s = id.to_string();
    s.strip_prefix("r#").map(String::from).unwrap_or(s)
}

impl Crate {
    fn add_module(&mut self, path: ModPath, file: String, children_dir: PathBuf) -> usize {
        let idx = self.modules.len();
        self.index.insert(path.clone(), idx);
        self.modules.push(Module {
            path,
            file,
            children_dir,
            children: BTreeMap::new(),
            imports: BTreeMap::new(),
            globs: Vec::new(),
            refs: Vec::new(),
        });
        idx
    }

    fn load_file(
        &mut self,
        path: ModPath,
        file: &Path,
        children_dir: PathBuf,
        read: &dyn Fn(&Path) -> anyhow::Result<String>,
    ) -> anyhow::Result<()> {
        let text = read(file)?;
        let parsed =
            syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let idx = self.add_module(path, file.display().to_string(), children_dir);
        self.load_items(idx, &parsed.items, read)
    }

    fn load_items(
        &mut self,
        idx: usize,
        items: &[Item],
        read: &dyn Fn(&Path) -> anyhow::Result<String>,
    ) -> anyhow::Result<()> {
        for item in items {
            if is_test_only(attrs_of(item)) {
                continue;
            }
            match item {
                Item::Use(u) if u.leading_colon.is_none() => self.add_use(idx, &u.tree, Vec::new()),
                Item::Use(_) => {}
                Item::Mod(m) => {
                    let name = ident(&m.ident);
                    let mut child = self.modules[idx].path.clone();
                    child.push(name.clone());
                    self.modules[idx]
                        .children
                        .insert(name.clone(), child.clone());
                    let dir = self.modules[idx].children_dir.join(&name);
                    if let Some((_, items)) = &m.content {
                        let file = self.modules[idx].file.clone();
                        let child_idx = self.add_module(child, file, dir);
                        self.load_items(child_idx, items, read)?;
                    } else {
                        if m.attrs.iter().any(|a| a.path().is_ident("path")) {
                            bail!(
                                "{}: `mod {name}` has a #[path] attribute, which the module check does not follow",
                                self.modules[idx].file
                            );
                        }
                        let parent = &self.modules[idx].children_dir;
                        let flat = parent.join(format!("{name}.rs"));
                        let nested = dir.join("mod.rs");
                        let file = if read(&flat).is_ok() { flat } else { nested };
                        self.load_file(child, &file, dir, read).with_context(|| {
                            format!("module `{name}` of {}", self.modules[idx].file)
                        })?;
                    }
                }
                other => self.scan(idx, other.to_token_stream()),
            }
        }
        Ok(())
    }

    fn add_use(&mut self, idx: usize, tree: &UseTree, mut prefix: ModPath) {
        let module = &mut self.modules[idx];
        match tree {
            UseTree::Path(p) => {
                prefix.push(ident(&p.ident));
                self.add_use(idx, &p.tree, prefix);
            }
            UseTree::Name(n) => {
                let name = ident(&n.ident);
                if name != "self" {
                    prefix.push(name);
                }
                if let Some(last) = prefix.last() {
                    module.imports.insert(last.clone(), prefix.clone());
                    module.refs.push(prefix);
                }
            }
            UseTree::Rename(r) => {
                let name = ident(&r.ident);
                if name != "self" {
                    prefix.push(name);
                }
                let rename = ident(&r.rename);
                if rename != "_" {
                    module.imports.insert(rename, prefix.clone());
                }
                module.refs.push(prefix);
            }
            UseTree::Glob(_) => {
                module.globs.push(prefix.clone());
                module.refs.push(prefix);
            }
            UseTree::Group(g) => {
                for tree in &g.items {
                    self.add_use(idx, tree, prefix.clone());
                }
            }
        }
    }

    /// Collects the paths in a token stream, and the `use` items nested in it (in fn bodies).
    fn scan(&mut self, idx: usize, tokens: TokenStream) {
        let tts: Vec<TokenTree> = tokens.into_iter().collect();
        let is_colon2 = |k: usize| {
            matches!((tts.get(k), tts.get(k + 1)),
                (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
                    if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
        };
        let mut i = 0;
        while i < tts.len() {
            match &tts[i] {
                TokenTree::Group(g) => self.scan(idx, g.stream()),
                TokenTree::Ident(id) if id == "use" => {
                    let end = tts[i..]
                        .iter()
                        .position(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ';'));
                    if let Some(end) = end {
                        let item: TokenStream = tts[i..=i + end].iter().cloned().collect();
                        if let Ok(u) = syn::parse2::<syn::ItemUse>(item)
                            && u.leading_colon.is_none()
                        {
                            self.add_use(idx, &u.tree, Vec::new());
                            i += end + 1;
                            continue;
                        }
                    }
                }
                TokenTree::Ident(id) if !(i >= 2 && is_colon2(i - 2)) => {
                    let mut segs = vec![ident(id)];
                    let mut k = i + 1;
                    while is_colon2(k) {
                        let Some(TokenTree::Ident(next)) = tts.get(k + 2) else {
                            break;
                        };
                        segs.push(ident(next));
                        k += 3;
                    }
                    if segs.len() > 1 {
                        self.modules[idx].refs.push(segs);
                        i = k;
                        continue;
                    }
                }
                _ => {}
            }
            i += 1;
        }
    }

    /// The absolute path (from the crate root) that `raw`, written in module `idx`, names; `None`
    /// for paths into other crates and for local items.
    fn resolve(&self, idx: usize, raw: &[String], hops: u32) -> Option<ModPath> {
        if hops > MAX_HOPS {
            return None;
        }
        let module = &self.modules[idx];
        let (first, rest) = raw.split_first()?;
        let joined = |base: &[String], rest: &[String]| [base, rest].concat();
        match first.as_str() {
            "crate" => Some(rest.to_vec()),
            "self" => Some(joined(&module.path, rest)),
            "super" => {
                let mut base = module.path.clone();
                let mut rest = raw;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop()?;
                    rest = &rest[1..];
                }
                Some(joined(&base, rest))
            }
            name => {
                if let Some(base) = self.name_in(idx, name, hops) {
                    return Some(joined(&base, rest));
                }
                module.globs.iter().find_map(|glob| {
                    let target = self.index.get(&self.resolve(idx, glob, hops + 1)?)?;
                    Some(joined(&self.name_in(*target, name, hops + 1)?, rest))
                })
            }
        }
    }

    /// What `name` means in module `idx` when it is a child module or an import there.
    fn name_in(&self, idx: usize, name: &str, hops: u32) -> Option<ModPath> {
        let module = &self.modules[idx];
        if let Some(child) = module.children.get(name) {
            return Some(child.clone());
        }
        let import = module.imports.get(name)?;
        // `use foo;` names `foo` itself: not a path to resolve again.
        if import.len() == 1 && import[0] == name {
            return None;
        }
        self.resolve(idx, import, hops + 1)
    }

    /// The module an absolute path leads into, following re-exports, and the item it names
    /// there (the path cut one segment below the module).
    fn target(&self, abs: &[String], hops: u32) -> (usize, ModPath) {
        let depth = (0..=abs.len())
            .rev()
            .find(|n| self.index.contains_key(&abs[..*n]))
            .unwrap_or(0);
        let module = self.index[&abs[..depth]];
        if depth < abs.len()
            && hops < MAX_HOPS
            && let Some(import) = self.modules[module].imports.get(&abs[depth])
            && let Some(next) = self.resolve(module, import, hops + 1)
        {
            return self.target(&[&next[..], &abs[depth + 1..]].concat(), hops + 1);
        }
        (module, abs[..abs.len().min(depth + 1)].to_vec())
    }

    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// The sibling-level graph of the crate's references (see `cycles`).
    pub fn graph(&self) -> Graph {
        let mut graph = Graph::default();
        for (idx, module) in self.modules.iter().enumerate() {
            for raw in &module.refs {
                let Some(abs) = self.resolve(idx, raw, 0) else {
                    continue;
                };
                let (target, item) = self.target(&abs, 0);
                let target = &self.modules[target];
                graph.add(
                    &module.path,
                    &target.path,
                    Evidence {
                        from: module.path.clone(),
                        file: module.file.clone(),
                        item: display(&item),
                    },
                );
            }
        }
        graph
    }
}
