//! Dependency order: one total start order (dependencies first, then lower `priority`,
//! then name), whose reverse is the stop order, and cycle detection for config checks.
//! Dependencies on services that do not exist (yet) are ignored for ordering: they are
//! waited for at run time.

use std::collections::{BTreeMap, BTreeSet};

use super::ServiceSpec;

/// Names in start order. Members of a dependency cycle come last, by priority.
pub fn start_order<'a>(specs: impl IntoIterator<Item = &'a ServiceSpec>) -> Vec<String> {
    let specs: BTreeMap<&str, &ServiceSpec> =
        specs.into_iter().map(|s| (s.name.as_str(), s)).collect();
    let mut missing: BTreeMap<&str, usize> = specs
        .values()
        .map(|s| {
            let deps: BTreeSet<&str> = s
                .depends_on
                .iter()
                .map(String::as_str)
                .filter(|d| specs.contains_key(d) && *d != s.name)
                .collect();
            (s.name.as_str(), deps.len())
        })
        .collect();
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
        for s in specs.values() {
            let deps: BTreeSet<&str> = s.depends_on.iter().map(String::as_str).collect();
            if deps.contains(name.as_str()) {
                if let Some(c) = missing.get_mut(s.name.as_str()) {
                    *c -= 1;
                    if *c == 0 {
                        ready.insert(key(&s.name));
                    }
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

/// A dependency cycle among `specs`, as `a -> b -> a`, if there is one.
pub fn find_cycle(specs: &[ServiceSpec]) -> Option<String> {
    let by_name: BTreeMap<&str, &ServiceSpec> =
        specs.iter().map(|s| (s.name.as_str(), s)).collect();
    fn visit<'a>(
        n: &'a str,
        by_name: &BTreeMap<&'a str, &'a ServiceSpec>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|p| *p == n) {
            let mut cycle: Vec<&str> = path[i..].to_vec();
            cycle.push(n);
            return Some(cycle.join(" -> "));
        }
        if done.contains(n) {
            return None;
        }
        path.push(n);
        if let Some(s) = by_name.get(n) {
            for d in &s.depends_on {
                if let Some(c) = visit(d, by_name, path, done) {
                    return Some(c);
                }
            }
        }
        path.pop();
        done.insert(n);
        None
    }
    let mut done = BTreeSet::new();
    for s in specs {
        if let Some(c) = visit(&s.name, &by_name, &mut Vec::new(), &mut done) {
            return Some(c);
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
