//! The manifest compared with the members as it is read: one record at a time, so that a
//! manifest declaring any number of entries costs no more memory than one of them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};

use super::guard::JsonGuard;
use crate::snapshot::manifest::{self, Entry};

/// What the extraction saw of one member: its record without path and xattrs (the map's
/// key holds the path, a digest stands for the xattrs), and whether the manifest listed it.
pub(super) struct Slot {
    pub(super) entry: Entry,
    pub(super) xattrs: [u8; 32],
    pub(super) listed: bool,
}

pub(super) type Seen = HashMap<String, Slot>;

/// Digest of an xattr map in its manifest form (name to hex value), in name order.
pub(super) fn xattr_digest<'a>(x: impl Iterator<Item = (&'a str, &'a str)>) -> [u8; 32] {
    let mut h = Sha256::new();
    for (k, v) in x {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// The manifest's header fields, once checked.
pub(super) struct Checked {
    pub(super) created: String,
    pub(super) total_bytes: u64,
}

#[derive(Default)]
struct Tally {
    format: Option<u32>,
    created: String,
    total_bytes: u64,
    listed: u64,
    /// First entry listed but not in the archive.
    missing: Option<String>,
    error: Option<String>,
}

/// Read the manifest JSON from `r` and compare every record with `seen`.
pub(super) fn check_manifest<R: Read>(r: R, seen: &mut Seen) -> Result<Checked, String> {
    let mut tally = Tally::default();
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(JsonGuard::new(r)));
    let parsed = DocSeed {
        seen: &mut *seen,
        tally: &mut tally,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Some(e) = tally.error.take() {
        return Err(e);
    }
    parsed.map_err(|e| format!("bad manifest: {e}"))?;
    match tally.format {
        Some(manifest::FORMAT) => {}
        Some(f) => return Err(format!("unknown archive format {f}")),
        None => return Err("bad manifest: no format".into()),
    }
    if tally.listed != seen.len() as u64 {
        return Err(format!(
            "manifest lists {} entries, archive holds {}",
            tally.listed,
            seen.len()
        ));
    }
    if let Some(p) = tally.missing {
        return Err(format!("{p:?}: in the manifest, not in the archive"));
    }
    if let Some((p, _)) = seen.iter().find(|(_, s)| !s.listed) {
        return Err(format!("{p:?}: in the archive, not in the manifest"));
    }
    Ok(Checked {
        created: tally.created,
        total_bytes: tally.total_bytes,
    })
}

struct DocSeed<'a> {
    seen: &'a mut Seen,
    tally: &'a mut Tally,
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a manifest object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "format" => {
                    let f: u32 = map.next_value()?;
                    if f != manifest::FORMAT {
                        // Stop here: a record of another format need not parse as ours.
                        self.tally.error = Some(format!("unknown archive format {f}"));
                        return Err(de::Error::custom("format"));
                    }
                    self.tally.format = Some(f);
                }
                "created" => self.tally.created = map.next_value()?,
                "total_bytes" => self.tally.total_bytes = map.next_value()?,
                "entries" => map.next_value_seed(EntriesSeed {
                    seen: &mut *self.seen,
                    tally: &mut *self.tally,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct EntriesSeed<'a> {
    seen: &'a mut Seen,
    tally: &'a mut Tally,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(mut e) = seq.next_element::<Entry>()? {
            self.tally.listed += 1;
            let Some(slot) = self.seen.get_mut(&e.path) else {
                // Keep counting, so that the rejection says how many the manifest lists.
                self.tally.missing.get_or_insert(e.path);
                continue;
            };
            if slot.listed {
                self.tally.error = Some(format!("{:?}: listed twice in the manifest", e.path));
                return Err(de::Error::custom("duplicate"));
            }
            let xattrs = xattr_digest(e.xattrs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let path = std::mem::take(&mut e.path);
            e.xattrs = BTreeMap::new();
            if e != slot.entry || xattrs != slot.xattrs {
                self.tally.error = Some(format!(
                    "{path:?}: does not match the manifest (content, size, type, owner, mode, \
                     mtime, link or xattrs)"
                ));
                return Err(de::Error::custom("mismatch"));
            }
            slot.listed = true;
        }
        Ok(())
    }
}
