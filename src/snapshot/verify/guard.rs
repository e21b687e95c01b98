//! Memory bounds for reading an untrusted archive: the tar stream is followed block by
//! block beside the tar reader, which would buffer a GNU long name or a PAX record of any
//! declared size, and refused when one is larger than [`MAX_EXTENSION_BYTES`]; the manifest's
//! JSON is refused when one string in it is longer than [`MAX_JSON_STRING`].

use std::io::{self, Read};

/// Largest GNU long-name/long-link or PAX extension member (names are at most 4 KiB; the
/// rest is extended attributes, whose values Linux limits to 64 KiB each).
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;
/// Longest string in the manifest (a path, a link target, or a hex xattr value).
pub const MAX_JSON_STRING: usize = 2 * MAX_EXTENSION_BYTES as usize + 64;

fn refuse(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Where the guard is in the tar stream.
enum At {
    /// Collecting a 512-byte header.
    Header,
    /// Skipping this many bytes of member data (padded to a block).
    Data(u64),
    /// Collecting a PAX record of this many padded bytes (its `size` may override the next
    /// header's).
    Pax(u64),
}

/// A reader of a tar stream that refuses oversized extension members.
pub struct TarGuard<R> {
    inner: R,
    at: At,
    block: Vec<u8>,
    pax: Vec<u8>,
    pax_len: u64,
    size_override: Option<u64>,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            at: At::Header,
            block: Vec::with_capacity(512),
            pax: Vec::new(),
            pax_len: 0,
            size_override: None,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn header(&mut self) -> io::Result<()> {
        let h = std::mem::take(&mut self.block);
        if h.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let size =
            parse_size(&h[124..136]).ok_or_else(|| refuse("bad size in a tar header".into()))?;
        let kind = h[156];
        let padded = |n: u64| n.div_ceil(512).saturating_mul(512);
        match kind {
            b'L' | b'K' | b'x' | b'g' if size > MAX_EXTENSION_BYTES => Err(refuse(format!(
                "a tar extension record of {size} bytes (over {MAX_EXTENSION_BYTES})"
            ))),
            b'x' | b'g' => {
                self.pax.clear();
                self.pax_len = size;
                self.at = if size == 0 {
                    At::Header
                } else {
                    At::Pax(padded(size))
                };
                Ok(())
            }
            b'S' => Err(refuse("GNU sparse members are not allowed".into())),
            b'L' | b'K' => {
                self.at = if size == 0 {
                    At::Header
                } else {
                    At::Data(padded(size))
                };
                Ok(())
            }
            _ => {
                let size = self.size_override.take().unwrap_or(size);
                self.at = if size == 0 {
                    At::Header
                } else {
                    At::Data(padded(size))
                };
                Ok(())
            }
        }
    }

    fn pax_done(&mut self) {
        let data = &self.pax[..(self.pax_len as usize).min(self.pax.len())];
        // Records are "LEN key=value\n"; only `size` changes the framing.
        for rec in data.split(|&b| b == b'\n') {
            if let Some(sp) = rec.iter().position(|&b| b == b' ') {
                if let Some(v) = rec[sp + 1..].strip_prefix(b"size=") {
                    self.size_override = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok());
                }
            }
        }
        self.pax = Vec::new();
    }

    fn follow(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.at {
                At::Header => {
                    let take = (512 - self.block.len()).min(buf.len());
                    self.block.extend_from_slice(&buf[..take]);
                    buf = &buf[take..];
                    if self.block.len() == 512 {
                        self.header()?;
                    }
                }
                At::Data(left) => {
                    let take = (left.min(buf.len() as u64)) as usize;
                    buf = &buf[take..];
                    self.at = if left == take as u64 {
                        At::Header
                    } else {
                        At::Data(left - take as u64)
                    };
                }
                At::Pax(left) => {
                    let take = (left.min(buf.len() as u64)) as usize;
                    self.pax.extend_from_slice(&buf[..take]);
                    buf = &buf[take..];
                    if left == take as u64 {
                        self.at = At::Header;
                        self.pax_done();
                    } else {
                        self.at = At::Pax(left - take as u64);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A tar size field: octal, or GNU base-256 (high bit set).
fn parse_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(f[0] & 0x7f);
        for &b in &f[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(n);
    }
    let s = std::str::from_utf8(f).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.follow(&buf[..n])?;
        Ok(n)
    }
}

/// A reader of JSON that refuses a string longer than [`MAX_JSON_STRING`] (the JSON
/// parser would buffer it whole).
pub struct JsonGuard<R> {
    inner: R,
    in_string: bool,
    escaped: bool,
    len: usize,
}

impl<R: Read> JsonGuard<R> {
    pub fn new(inner: R) -> Self {
        JsonGuard {
            inner,
            in_string: false,
            escaped: false,
            len: 0,
        }
    }
}

impl<R: Read> Read for JsonGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        for &b in &buf[..n] {
            if !self.in_string {
                if b == b'"' {
                    self.in_string = true;
                    self.len = 0;
                }
                continue;
            }
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                continue;
            }
            self.len += 1;
            if self.len > MAX_JSON_STRING {
                return Err(refuse(format!(
                    "a manifest string longer than {MAX_JSON_STRING} bytes"
                )));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(kind: tar::EntryType, size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_cksum();
        let mut v = h.as_bytes().to_vec();
        v.resize(512 + 4096, b'a');
        v
    }

    #[test]
    fn oversized_extension_records_are_refused_before_they_are_read() {
        let long = tar_with(tar::EntryType::GNULongName, 1 << 30);
        let mut g = TarGuard::new(&long[..]);
        let err = io::copy(&mut g, &mut io::sink()).unwrap_err();
        assert!(err.to_string().contains("extension record"), "{err}");
        let file = tar_with(tar::EntryType::Regular, 1 << 30);
        let mut g = TarGuard::new(&file[..]);
        io::copy(&mut g, &mut io::sink()).unwrap();
    }

    #[test]
    fn long_manifest_strings_are_refused() {
        let mut json = b"{\"a\":\"".to_vec();
        json.resize(json.len() + MAX_JSON_STRING + 1, b'x');
        let mut g = JsonGuard::new(&json[..]);
        assert!(io::copy(&mut g, &mut io::sink()).is_err());
        let ok = br#"{"a":"x\"y","b":["\\",""]}"#;
        io::copy(&mut JsonGuard::new(&ok[..]), &mut io::sink()).unwrap();
    }
}
