//! The graph half of the module-cycle check: references between modules are lifted to the
//! sibling modules that contain them, and the strongly connected components of that graph are
//! the cycles to report.
//!
//! A module is named by its path from the crate root (`["live", "api"]` is `crate::live::api`).
//! A reference from module `a` to module `b` becomes an edge between the two children of their
//! closest common ancestor that contain `a` and `b`: `crate::live::view` using
//! `crate::report::Report` is the edge `live -> report`, and `crate::join::joiner` using
//! `crate::join::parts::Parts` is the edge `join::joiner -> join::parts`. A reference between a
//! module and one of its own ancestors or descendants (`use super::X`, `pub use child::X`) has no
//! such pair and is no edge: a parent and its children are one unit, and only siblings can depend
//! on each other in a cycle.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub type ModPath = Vec<String>;

/// Where one edge comes from: the module whose code holds the reference, and the item it names
/// (`crate::cli::OutputFormat`, or the module itself for `use crate::procfs;`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Evidence {
    pub from: ModPath,
    pub file: String,
    pub item: String,
}

/// Sibling-level edges, each with the references that make it.
#[derive(Debug, Default)]
pub struct Graph {
    pub edges: BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<Evidence>>>,
}

/// One group of sibling modules that depend on each other, with the cycles through it.
#[derive(Debug, PartialEq, Eq)]
pub struct Cycle {
    /// Every module of the strongly connected component, sorted.
    pub members: Vec<ModPath>,
    /// A shortest cycle through each member, in order (the last step leads back to the first),
    /// each starting at its smallest module, without repeats, sorted.
    pub paths: Vec<Vec<ModPath>>,
}

/// The two siblings that a reference from `from` to `to` lifts to, or `None` when one module is
/// the other or one of its ancestors.
pub fn lift(from: &[String], to: &[String]) -> Option<(ModPath, ModPath)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((from[..=common].to_vec(), to[..=common].to_vec()))
}

impl Graph {
    /// Records a reference from module `from` to module `to`.
    pub fn add(&mut self, from: &[String], to: &[String], evidence: Evidence) {
        if let Some((a, b)) = lift(from, to) {
            self.edges
                .entry(a)
                .or_default()
                .entry(b)
                .or_default()
                .insert(evidence);
        }
    }

    fn successors(&self, node: &ModPath) -> impl Iterator<Item = &ModPath> {
        self.edges.get(node).into_iter().flat_map(|m| m.keys())
    }

    /// Every strongly connected component of more than one module, with a cycle through it.
    pub fn cycles(&self) -> Vec<Cycle> {
        tarjan(self)
            .into_iter()
            .filter(|scc| scc.len() > 1)
            .map(|mut members| {
                members.sort();
                let mut paths: Vec<Vec<ModPath>> = members
                    .iter()
                    .map(|m| {
                        let mut path = self.shortest_cycle(m, &members);
                        let smallest = (0..path.len()).min_by_key(|i| &path[*i]).unwrap_or(0);
                        path.rotate_left(smallest);
                        path
                    })
                    .collect();
                paths.sort();
                paths.dedup();
                Cycle { members, paths }
            })
            .collect()
    }

    /// Breadth-first from `start` back to itself, inside `within`.
    fn shortest_cycle(&self, start: &ModPath, within: &[ModPath]) -> Vec<ModPath> {
        let mut came_from: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            for next in self.successors(node) {
                if !within.contains(next) {
                    continue;
                }
                if next == start {
                    let mut path = vec![node.clone()];
                    let mut at = node;
                    while at != start {
                        at = came_from[at];
                        path.push(at.clone());
                    }
                    path.reverse();
                    return path;
                }
                if !came_from.contains_key(next) {
                    came_from.insert(next, node);
                    queue.push_back(next);
                }
            }
        }
        unreachable!("a strongly connected component has a cycle through each member")
    }
}

/// Tarjan's algorithm, iterative so that deep module trees cannot overflow the stack.
fn tarjan(graph: &Graph) -> Vec<Vec<ModPath>> {
    let mut nodes: BTreeSet<&ModPath> = graph.edges.keys().collect();
    nodes.extend(graph.edges.values().flat_map(|m| m.keys()));
    let nodes: Vec<&ModPath> = nodes.into_iter().collect();
    let index_of: BTreeMap<&ModPath, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let succ: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| graph.successors(n).map(|s| index_of[s]).collect())
        .collect();

    let mut index = vec![usize::MAX; nodes.len()];
    let mut low = vec![0; nodes.len()];
    let mut on_stack = vec![false; nodes.len()];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut components = Vec::new();
    for root in 0..nodes.len() {
        if index[root] != usize::MAX {
            continue;
        }
        // (node, position in its successor list)
        let mut work = vec![(root, 0)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (node, ref mut pos)) = work.last_mut() {
            if let Some(&next) = succ[node].get(*pos) {
                *pos += 1;
                if index[next] == usize::MAX {
                    index[next] = next_index;
                    low[next] = next_index;
                    next_index += 1;
                    stack.push(next);
                    on_stack[next] = true;
                    work.push((next, 0));
                } else if on_stack[next] {
                    low[node] = low[node].min(index[next]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[node]);
            }
            if low[node] == index[node] {
                let mut component = Vec::new();
                loop {
                    let member = stack.pop().expect("the node itself is on the stack");
                    on_stack[member] = false;
                    component.push(nodes[member].clone());
                    if member == node {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// `crate::a::b`, the way the crate's own code would name the module.
pub fn display(path: &[String]) -> String {
    std::iter::once("crate")
        .chain(path.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("::")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ModPath {
        s.split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    fn ev(from: &str) -> Evidence {
        Evidence {
            from: p(from),
            file: format!("{from}.rs"),
            item: "x".into(),
        }
    }

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::default();
        for (a, b) in edges {
            g.add(&p(a), &p(b), ev(a));
        }
        g
    }

    #[test]
    fn lifts_to_the_siblings_under_the_common_ancestor() {
        assert_eq!(
            lift(&p("live::view"), &p("report")),
            Some((p("live"), p("report")))
        );
        assert_eq!(
            lift(&p("join::joiner"), &p("join::parts")),
            Some((p("join::joiner"), p("join::parts")))
        );
        assert_eq!(
            lift(&p("a::b::c"), &p("a::d")),
            Some((p("a::b"), p("a::d")))
        );
    }

    #[test]
    fn a_module_and_its_ancestors_or_descendants_are_no_edge() {
        // `use super::X` from a child, `pub use child::X` in the parent, a child of the root.
        assert_eq!(lift(&p("otlp::http"), &p("otlp")), None);
        assert_eq!(lift(&p("otlp"), &p("otlp::ingress")), None);
        assert_eq!(lift(&p("a::b::c"), &p("a")), None);
        assert_eq!(lift(&p(""), &p("cli")), None);
        assert_eq!(lift(&p("cli"), &p("cli")), None);
    }

    #[test]
    fn an_acyclic_graph_has_no_cycle() {
        let g = graph(&[
            ("a", "b"),
            ("b", "c"),
            ("a", "c"),
            ("c::x", "c::y"),
            ("b::z", "b"),
        ]);
        assert_eq!(g.cycles(), vec![]);
    }

    #[test]
    fn parent_child_references_both_ways_are_no_cycle() {
        let g = graph(&[
            ("otlp", "otlp::ingress"),
            ("otlp::http", "otlp"),
            ("otlp::ingress", "otlp"),
        ]);
        assert_eq!(g.cycles(), vec![]);
    }

    #[test]
    fn a_two_module_cycle_is_found() {
        let g = graph(&[("cli", "live::api"), ("live::api", "cli"), ("cli", "clock")]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].members, vec![p("cli"), p("live")]);
        assert_eq!(cycles[0].paths, vec![vec![p("cli"), p("live")]]);
    }

    #[test]
    fn a_cycle_through_submodules_is_found_at_the_level_where_it_closes() {
        // Neither join::attribution nor join::joiner alone is in a cycle with collector, but
        // join as a whole is.
        let g = graph(&[
            ("collector", "join::attribution"),
            ("join::joiner", "collector"),
        ]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].paths, vec![vec![p("collector"), p("join")]]);
        let evidence = &g.edges[&p("join")][&p("collector")];
        assert_eq!(evidence.iter().next().unwrap().from, p("join::joiner"));
    }

    #[test]
    fn the_shortest_cycle_is_given_in_order() {
        let g = graph(&[
            ("cli", "live"),
            ("live", "report"),
            ("report", "cli"),
            ("live", "x"),
            ("x", "y"),
            ("y", "z"),
            ("z", "cli"),
        ]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].members.len(), 6);
        // x, y and z are only on the long cycle, which is the shortest one through them.
        assert_eq!(
            cycles[0].paths,
            vec![
                vec![p("cli"), p("live"), p("report")],
                vec![p("cli"), p("live"), p("x"), p("y"), p("z")],
            ]
        );
    }

    #[test]
    fn separate_cycles_are_reported_separately() {
        let g = graph(&[
            ("a", "b"),
            ("b", "a"),
            ("m::x", "m::y"),
            ("m::y", "m::x"),
            ("a", "m"),
        ]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 2);
        let mut paths: Vec<_> = cycles.into_iter().flat_map(|c| c.paths).collect();
        paths.sort();
        assert_eq!(
            paths,
            vec![vec![p("a"), p("b")], vec![p("m::x"), p("m::y")]]
        );
    }

    #[test]
    fn cycles_sharing_modules_are_each_given() {
        // One group: cli -> live -> report -> cli and collector <-> join, joined by
        // collector -> report and live -> join. Every module is on one of the two short cycles,
        // so the long one through all five is not given.
        let g = graph(&[
            ("cli", "live"),
            ("live", "report"),
            ("report", "cli"),
            ("collector", "join"),
            ("join", "collector"),
            ("collector", "report"),
            ("live", "join"),
        ]);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(
            cycles[0].paths,
            vec![
                vec![p("cli"), p("live"), p("report")],
                vec![p("collector"), p("join")],
            ]
        );
    }

    #[test]
    fn display_names_modules_from_the_crate_root() {
        assert_eq!(display(&p("live::api")), "crate::live::api");
        assert_eq!(display(&[]), "crate");
    }
}
