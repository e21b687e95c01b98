//! `reloadConfig`, `addProcessGroup`, `removeProcessGroup`: the program files re-read
//! and applied group by group, serialised so concurrent `update`s stay consistent.

use super::*;

impl Rpc {
    pub(super) async fn reload_config(&self) -> RpcResult {
        let mut programs = self.programs.lock().await;
        let src = &self.source;
        let parsed = conf::read(&src.conf, &src.root, &src.overrides)
            .map_err(|e| Fault::with(faults::CANT_REREAD, e))?;
        for w in &parsed.warnings {
            tracing::warn!("{w}");
        }
        let available: Vec<Arc<ServiceSpec>> = parsed.programs.into_iter().map(Arc::new).collect();
        let new_groups = by_group(&available);
        let new_names: std::collections::HashSet<&str> =
            new_groups.iter().map(|(n, _)| n.as_str()).collect();
        let added: Vec<Value> = new_groups
            .iter()
            .filter(|(g, _)| !programs.active.contains_key(g))
            .map(|(g, _)| Value::str(g))
            .collect();
        let changed: Vec<Value> = new_groups
            .iter()
            .filter(|(g, specs)| {
                programs.active.get(g).is_some_and(|cur| {
                    cur.len() != specs.len()
                        || cur.iter().zip(specs).any(|(a, b)| !same_definition(a, b))
                })
            })
            .map(|(g, _)| Value::str(g))
            .collect();
        let removed: Vec<Value> = programs
            .active
            .keys()
            .filter(|g| !new_names.contains(g.as_str()))
            .map(Value::str)
            .collect();
        programs.available = available;
        Ok(Value::Array(vec![Value::Array(vec![
            Value::Array(added),
            Value::Array(changed),
            Value::Array(removed),
        ])]))
    }

    pub(super) async fn add_group(&self, name: &str) -> RpcResult {
        let mut programs = self.programs.lock().await;
        let specs: Vec<Arc<ServiceSpec>> = programs
            .available
            .iter()
            .filter(|s| s.group_name() == name)
            .cloned()
            .collect();
        if specs.is_empty() {
            return Err(Fault::with(faults::BAD_NAME, name));
        }
        if programs.active.contains_key(name) {
            return Err(Fault::with(faults::ALREADY_ADDED, name));
        }
        for spec in &specs {
            self.handle
                .add(Arc::clone(spec), Origin::Supervisord)
                .await
                .map_err(|e| match e {
                    SuperviseError::AlreadyStarted(_) | SuperviseError::BadArguments(_) => {
                        Fault::with(faults::ALREADY_ADDED, name)
                    }
                    other => fault_of(other, name),
                })?;
        }
        tracing::info!(group = name, "supervisord: added process group");
        programs.active.insert(name.to_string(), specs);
        Ok(Value::Bool(true))
    }

    pub(super) async fn remove_group(&self, name: &str) -> RpcResult {
        let mut programs = self.programs.lock().await;
        let Some(specs) = programs.active.get(name).cloned() else {
            return Err(Fault::with(faults::BAD_NAME, name));
        };
        let infos = self.program_infos().await;
        let unstopped = infos
            .iter()
            .any(|i| i.group == name && !STOPPED_STATES.contains(&i.state));
        if unstopped {
            return Err(Fault::with(faults::STILL_RUNNING, name));
        }
        for spec in &specs {
            match self.handle.remove(&spec.name).await {
                Ok(()) | Err(SuperviseError::BadName(_)) => {}
                Err(SuperviseError::AlreadyStarted(_)) => {
                    return Err(Fault::with(faults::STILL_RUNNING, name))
                }
                Err(e) => return Err(fault_of(e, name)),
            }
        }
        tracing::info!(group = name, "supervisord: removed process group");
        programs.active.remove(name);
        Ok(Value::Bool(true))
    }
}

/// A spec as the files define it: where it was written does not make it "changed".
pub(super) fn same_definition(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    a.source = None;
    b.source = None;
    a == b
}

/// Group specs by group name, keeping first-seen order (groups found by name, not
/// searched: 2 000 one-program groups are grouped in linear time).
pub(super) fn by_group(specs: &[Arc<ServiceSpec>]) -> Vec<(String, Vec<Arc<ServiceSpec>>)> {
    let mut out: Vec<(String, Vec<Arc<ServiceSpec>>)> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for s in specs {
        match index.get(s.group_name()) {
            Some(&i) => out[i].1.push(Arc::clone(s)),
            None => {
                index.insert(s.group_name(), out.len());
                out.push((s.group_name().to_string(), vec![Arc::clone(s)]));
            }
        }
    }
    out
}
