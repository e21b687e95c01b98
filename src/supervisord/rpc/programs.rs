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
        let available = parsed.programs;
        let new_groups = by_group(&available);
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
            .filter(|g| !new_groups.iter().any(|(n, _)| n == *g))
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
        let specs: Vec<ServiceSpec> = programs
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
                .add(spec.clone(), Origin::Supervisord)
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

/// Group specs by group name, keeping first-seen order.
pub(super) fn by_group(specs: &[ServiceSpec]) -> Vec<(String, Vec<ServiceSpec>)> {
    let mut out: Vec<(String, Vec<ServiceSpec>)> = Vec::new();
    for s in specs {
        let g = s.group_name().to_string();
        match out.iter_mut().find(|(n, _)| *n == g) {
            Some((_, v)) => v.push(s.clone()),
            None => out.push((g, vec![s.clone()])),
        }
    }
    out
}
