//! Dependency order: one total start order (dependencies first, then lower `priority`,
//! then name), whose reverse is the stop order, and cycle detection for config checks.
//! Dependencies on services that do not exist (yet) are ignored for ordering: they are
//! waited for at run time.

use std::collections::{BTreeMap, BTreeSet};

use super::ServiceSpec;

/// Names in start order. Members of a dependency cycle come last, by priority.
/// Linear in the number of services and dependencies (times a log factor).
pub fn start_order<'a>(specs: impl IntoIterator<Item = &'a ServiceSpec>) -> Vec<String> {
    let specs: BTreeMap<&str, &ServiceSpec> =
        specs.into_iter().map(|s| (s.name.as_str(), s)).collect();
    // For each service: how many of its (existing, distinct) dependencies are not placed
    // yet, and who depends on it.
    let mut missing: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in specs.values() {
        let deps: BTreeSet<&str> = s
            .depends_on
            .iter()
            .map(String::as_str)
            .filter(|d| specs.contains_key(d) && *d != s.name)
            .collect();
        for d in &deps {
            dependents.entry(d).or_default().push(s.name.as_str());
        }
        missing.insert(s.name.as_str(), deps.len());
    }
    let key = |n: &str| (specs[n].priority, n.to_string());
    let mut ready: BTreeSet<(i32, String)> = missing
        .iter()
        .filter(|(_, &c)| c == 0)
        .map(|(n, _)| key(n))
        .collect();
    let mut out = Vec::with_capacity(specs.len());
    while let Some(first) = ready.pop_first() {
        let name = first.1;
        missing.remove(name.as_str());
        for dep in dependents.get(name.as_str()).into_iter().flatten() {
            if let Some(c) = missing.get_mut(dep) {
                *c -= 1;
                if *c == 0 {
                    ready.insert(key(dep));
                }
            }
        }
        out.push(name);
    }
    let mut rest: Vec<(i32, String)> = missing.keys().map(|n| key(n)).collect();
    rest.sort();
    out.extend(rest.into_iter().map(|(_, n)| n));
    out
}

/// A dependency cycle among `specs`, as `a -> b -> a`, if there is one. Iterative depth-
/// first search (a chain of 100 000 dependencies must not overflow the stack), linear.
pub fn find_cycle(specs: &[ServiceSpec]) -> Option<String> {
    let by_name: BTreeMap<&str, &ServiceSpec> =
        specs.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    for s in specs {
        if done.contains(s.name.as_str()) {
            continue;
        }
        // The current path, each with the index of its next dependency to visit.
        let mut path: Vec<(&str, usize)> = vec![(s.name.as_str(), 0)];
        let mut on_path: BTreeSet<&str> = BTreeSet::from([s.name.as_str()]);
        while let Some((n, next)) = path.last_mut() {
            let deps = by_name.get(*n).map_or(&[][..], |s| &s.depends_on[..]);
            let Some(d) = deps.get(*next).map(String::as_str) else {
                done.insert(n);
                on_path.remove(*n);
                path.pop();
                continue;
            };
            *next += 1;
            if on_path.contains(d) {
                let i = path.iter().position(|(p, _)| *p == d).expect("on the path");
                let mut cycle: Vec<&str> = path[i..].iter().map(|(p, _)| *p).collect();
                cycle.push(d);
                return Some(cycle.join(" -> "));
            }
            if !done.contains(d) {
                on_path.insert(d);
                path.push((d, 0));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, deps: &[&str], priority: i32) -> ServiceSpec {
        let yaml = format!(
            "name: {name}\ncommand: [x]\ndepends_on: [{}]\npriority: {priority}\n",
            deps.join(",")
        );
        serde_norway::from_str(&yaml).unwrap()
    }

    #[test]
    fn dependencies_then_priority() {
        let s = vec![
            spec("rest", &["db", "mq"], 1),
            spec("db", &[], 50),
            spec("mq", &[], 10),
            spec("nginx", &["rest"], 999),
            spec("early", &[], 5),
            spec("waits-for-absent", &["nobody"], 1),
        ];
        assert_eq!(
            start_order(&s),
            ["waits-for-absent", "early", "mq", "db", "rest", "nginx"]
        );
    }

    #[test]
    fn cycles_are_found() {
        let s = vec![
            spec("a", &["b"], 1),
            spec("b", &["c"], 1),
            spec("c", &["a"], 1),
        ];
        assert_eq!(find_cycle(&s).unwrap(), "a -> b -> c -> a");
        assert_eq!(start_order(&s).len(), 3);
        assert!(find_cycle(&[spec("a", &["zz"], 1)]).is_none());
    }
}
