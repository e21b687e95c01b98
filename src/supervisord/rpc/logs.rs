//! Process and main logs: `readProcessStdoutLog` & co., `tailProcess...Log`, `readLog`,
//! with supervisord's `readFile` / `tailFile` window rules.

use super::*;

impl Rpc {
    /// The retained output of one stream and the total ever written, or `None` when the
    /// stream has no log (supervisord: logfile None).
    pub(super) async fn captured(
        &self,
        name: &str,
        stream: Stream,
    ) -> Result<Option<(Vec<u8>, u64)>, Fault> {
        let info = match self.resolve(name).await? {
            (_, Some(i)) => i,
            (_, None) => return Err(Fault::with(faults::BAD_NAME, name)),
        };
        if let Some(spec) = self.spec_of(&info.name) {
            let target = match stream {
                Stream::Stdout => &spec.stdout,
                Stream::Stderr if spec.redirect_stderr => return Ok(None),
                Stream::Stderr => &spec.stderr,
            };
            if *target == LogTarget::Null {
                return Ok(None);
            }
        }
        let tail = self
            .handle
            .tail(&info.name, stream, -(CAPTURE_WINDOW as i64), CAPTURE_WINDOW)
            .map_err(|e| fault_of(e, name))?;
        Ok(Some((tail.bytes, tail.end_offset)))
    }

    pub(super) async fn read_process_log(
        &self,
        name: &str,
        offset: i64,
        length: i64,
        stream: Stream,
    ) -> RpcResult {
        let Some((buf, total)) = self.captured(name, stream).await? else {
            return Err(Fault::with(faults::NO_FILE, "None"));
        };
        read_window(&buf, total, offset, length).map(Value::Str)
    }

    pub(super) async fn tail_process_log(
        &self,
        name: &str,
        offset: i64,
        length: i64,
        stream: Stream,
    ) -> RpcResult {
        let Some((buf, total)) = self.captured(name, stream).await? else {
            return Ok(Value::Array(vec![
                Value::str(""),
                Value::Int(0),
                Value::Bool(false),
            ]));
        };
        let (data, end, overflow) = tail_window(&buf, total, offset, length);
        Ok(Value::Array(vec![
            Value::Str(data),
            Value::Int(end as i64),
            Value::Bool(overflow),
        ]))
    }

    pub(super) fn read_main_log(&self, offset: i64, length: i64) -> RpcResult {
        let Some(log) = &self.mainlog else {
            return Err(Fault::with(faults::NO_FILE, "None"));
        };
        let (buf, total) = log.snapshot();
        read_window(&buf, total, offset, length).map(Value::Str)
    }
}

/// supervisord's `readFile` over a buffer holding the last `buf.len()` of `total` bytes.
pub(super) fn read_window(
    buf: &[u8],
    total: u64,
    offset: i64,
    length: i64,
) -> Result<String, Fault> {
    let start_of_buf = total as i64 - buf.len() as i64;
    let slice = |from: i64, to: i64| -> String {
        let from = (from.max(start_of_buf) - start_of_buf).clamp(0, buf.len() as i64) as usize;
        let to = (to.max(start_of_buf) - start_of_buf).clamp(0, buf.len() as i64) as usize;
        String::from_utf8_lossy(&buf[from..to.max(from)]).into_owned()
    };
    if offset < 0 {
        if length != 0 {
            return Err(Fault::new(faults::BAD_ARGUMENTS));
        }
        return Ok(slice((total as i64 + offset).max(0), total as i64));
    }
    if length < 0 {
        return Err(Fault::new(faults::BAD_ARGUMENTS));
    }
    if length == 0 {
        return Ok(slice(0, total as i64)); // supervisord reads the whole file here
    }
    Ok(slice(
        offset,
        offset.saturating_add(length).min(total as i64),
    ))
}

/// supervisord's `tailFile`: `(bytes, new offset, overflow)`.
pub(super) fn tail_window(buf: &[u8], total: u64, offset: i64, length: i64) -> (String, u64, bool) {
    let sz = total as i64;
    let (mut offset, mut length) = (offset, length);
    let mut overflow = false;
    if sz > offset.saturating_add(length) {
        overflow = true;
        offset = sz - 1;
    }
    if offset.saturating_add(length) > sz {
        if offset > sz - 1 {
            length = 0;
        }
        offset = sz - length;
    }
    offset = offset.max(0);
    length = length.max(0);
    let data = if length == 0 {
        String::new()
    } else {
        read_window(buf, total, offset, length).unwrap_or_default()
    };
    (data, total, overflow)
}
