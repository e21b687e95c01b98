//! The end-of-run report (and `status`): each step's state, time and note, then every
//! attempt over every `recover` and `resume` with its duration and outcome, and the total
//! wall time from the start of the recovery to its last attempt's end.

use std::time::{Duration, UNIX_EPOCH};

use crate::journal::*;

fn secs(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

fn clock(ms: u64) -> String {
    let t = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
    t.get(11..19).unwrap_or(&t).to_owned()
}

pub fn report(j: &Journal) -> String {
    let mut out = format!(
        "recovery {} of server {} ({}): {}\n",
        j.run_id,
        j.old_server.name,
        j.old_server.id,
        if j.finished {
            format!(
                "done, new server {}",
                j.new_server_id.as_deref().unwrap_or("?")
            )
        } else {
            match &j.last_error {
                Some(e) => format!("stopped at {e}"),
                None => "in progress".into(),
            }
        }
    );
    let mut in_steps = 0;
    for s in &j.steps {
        in_steps += s.duration_ms;
        let state = serde_json::to_value(s.state).unwrap_or_default();
        let tries = if s.attempts > 1 {
            format!(" ({} attempts)", s.attempts)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  {:<25} {:<8} {:>9}  {}{tries}\n",
            s.step.name(),
            state.as_str().unwrap_or("?"),
            secs(s.duration_ms),
            s.note
        ));
    }
    if !j.attempts.is_empty() {
        out.push_str("  attempts:\n");
        let mut runs = 1;
        for (i, a) in j.attempts.iter().enumerate() {
            let (took, outcome) = match a.duration_ms {
                Some(ms) => (secs(ms), a.outcome.as_str()),
                None if i + 1 < j.attempts.len() => {
                    runs += 1;
                    ("?".into(), "interrupted: the process died in it")
                }
                None => ("?".into(), "running, or the process died in it"),
            };
            out.push_str(&format!(
                "    {:>3}. {} {:<25} {:>8}  {}\n",
                i + 1,
                clock(a.started_at_ms),
                a.step.name(),
                took,
                outcome
            ));
        }
        let end = j
            .attempts
            .iter()
            .map(|a| a.started_at_ms + a.duration_ms.unwrap_or(0))
            .max()
            .unwrap_or(0);
        let wall = end.saturating_sub(j.started_at * 1000);
        out.push_str(&format!(
            "  total {} wall from the start to the last step's end ({} run(s)); {} in steps\n",
            secs(wall),
            runs,
            secs(in_steps)
        ));
    } else {
        out.push_str(&format!("  total {}\n", secs(in_steps)));
    }
    out
}
