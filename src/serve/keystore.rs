//! Content-addressed store of evaluation keys: in memory with least-recently-used eviction
//! by resident bytes, optionally backed by a directory (`<id>.evk`, the uploaded envelope)
//! that survives restarts and can be shared by several instances.
//!
//! A key set evicted from memory stays on disk and is read back (and its content address
//! checked again) on the next request that names it. With a disk budget, each upload is
//! followed by pruning: the least recently used `.evk` files (modification time, refreshed
//! whenever a file is read back) are deleted, files of key sets resident in memory last,
//! until the directory fits. A client whose keys were pruned gets 404 and uploads again. Files are written to a temporary name
//! and renamed, so an instance never reads a half-written file.

use super::{is_key_id, sha256_hex};
use crate::ckks::{from_bytes, CkksParams, EvaluationKeys, SwitchingKey};
use crate::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Resident size of parsed keys (seeded halves are expanded in memory).
pub(crate) fn resident_bytes(keys: &EvaluationKeys) -> usize {
    fn sk(k: &SwitchingKey) -> usize {
        k.b.iter().chain(&k.a).map(|p| p.as_words().len() * 8).sum()
    }
    keys.relin.as_ref().map_or(0, |r| sk(&r.0))
        + keys.galois.values().map(|g| sk(&g.key)).sum::<usize>()
}

struct Entry {
    keys: Arc<EvaluationKeys>,
    resident: usize,
    envelope: u64,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    tick: u64,
    resident: usize,
    evictions: u64,
    disk_deletions: u64,
}

/// Counters for `/metrics`.
pub(crate) struct KeyStoreStats {
    pub resident_bytes: usize,
    pub entries: usize,
    pub evictions: u64,
    pub disk_deletions: u64,
}

pub(crate) struct KeyStore {
    inner: Mutex<Inner>,
    dir: Option<PathBuf>,
    max_bytes: usize,
    max_disk_bytes: Option<u64>,
    params: CkksParams,
}

impl KeyStore {
    pub(crate) fn new(params: CkksParams, max_bytes: usize, dir: Option<PathBuf>) -> Result<Self> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        Ok(KeyStore {
            inner: Mutex::new(Inner::default()),
            dir,
            max_bytes,
            max_disk_bytes: None,
            params,
        })
    }

    /// Sets the disk budget of the key directory (`None`: unlimited).
    pub(crate) fn with_disk_budget(mut self, max_disk_bytes: Option<u64>) -> Self {
        self.max_disk_bytes = max_disk_bytes;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked while holding it; the map
        // itself is always consistent between statements.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_of(&self, id: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(format!("{id}.evk")))
    }

    pub(crate) fn capacity(&self) -> usize {
        self.max_bytes
    }

    /// Keys in memory, refreshing their recency.
    pub(crate) fn get_resident(&self, id: &str) -> Option<Arc<EvaluationKeys>> {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        g.map.get_mut(id).map(|e| {
            e.last_used = tick;
            e.keys.clone()
        })
    }

    /// Envelope size of a known key set (memory or disk), without loading it.
    pub(crate) fn lookup(&self, id: &str) -> Option<u64> {
        if !is_key_id(id) {
            return None;
        }
        if let Some(e) = self.lock().map.get(id) {
            return Some(e.envelope);
        }
        let path = self.path_of(id)?;
        std::fs::metadata(path).ok().map(|m| m.len())
    }

    /// Keys for `id`: from memory, else read back from the directory (blocking: call on the
    /// blocking pool). `Ok(None)` when unknown.
    pub(crate) fn load(&self, id: &str) -> Result<Option<Arc<EvaluationKeys>>> {
        if !is_key_id(id) {
            return Ok(None);
        }
        if let Some(k) = self.get_resident(id) {
            return Ok(Some(k));
        }
        let Some(path) = self.path_of(id) else {
            return Ok(None);
        };
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        if sha256_hex(&bytes) != id {
            return Err(Error::format(
                "stored evaluation keys",
                format!("{} does not hash to its name", path.display()),
            ));
        }
        let keys: EvaluationKeys = from_bytes(&self.params, &bytes)?;
        // Mark the file as recently used for the disk budget (best effort).
        if let Ok(f) = std::fs::File::options().append(true).open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        Ok(Some(self.insert_resident(id, keys, bytes.len() as u64)))
    }

    /// Adds parsed keys (and persists `envelope` when a directory is set). Blocking.
    pub(crate) fn insert(
        &self,
        id: &str,
        keys: EvaluationKeys,
        envelope: &[u8],
    ) -> Result<Arc<EvaluationKeys>> {
        if let Some(path) = self.path_of(id) {
            if !path.exists() {
                crate::io::fs::replace_bytes_atomic(&path, envelope, None)?;
            }
        }
        let keys = self.insert_resident(id, keys, envelope.len() as u64);
        self.prune_disk(id)?;
        Ok(keys)
    }

    /// Deletes least recently used key files until the directory's `.evk` files fit the
    /// disk budget; never deletes `keep` (the key set just uploaded). Other instances
    /// sharing the directory may delete concurrently: a file already gone is not an error.
    fn prune_disk(&self, keep: &str) -> Result<()> {
        let (Some(dir), Some(budget)) = (&self.dir, self.max_disk_bytes) else {
            return Ok(());
        };
        let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut files = Vec::new();
        let mut total = 0u64;
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".evk") else {
                continue;
            };
            if !is_key_id(id) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            total = total.saturating_add(meta.len());
            if id != keep {
                let used = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
                files.push((id.to_string(), used, meta.len()));
            }
        }
        if total <= budget {
            return Ok(());
        }
        // Files of key sets not in memory go first, then by age.
        let resident: std::collections::HashSet<String> = self.lock().map.keys().cloned().collect();
        files.sort_by_key(|(id, used, _)| (resident.contains(id), *used));
        let mut deleted = 0u64;
        for (id, _, len) in files {
            if total <= budget {
                break;
            }
            let path = dir.join(format!("{id}.evk"));
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total = total.saturating_sub(len);
                    deleted += 1;
                    // Its memory copy goes too, so that the id is consistently unknown.
                    let mut g = self.lock();
                    if let Some(e) = g.map.remove(&id) {
                        g.resident -= e.resident;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    total = total.saturating_sub(len);
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        self.lock().disk_deletions += deleted;
        Ok(())
    }

    fn insert_resident(
        &self,
        id: &str,
        keys: EvaluationKeys,
        envelope: u64,
    ) -> Arc<EvaluationKeys> {
        let resident = resident_bytes(&keys);
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        if let Some(e) = g.map.get_mut(id) {
            e.last_used = tick;
            return e.keys.clone();
        }
        let keys = Arc::new(keys);
        g.resident += resident;
        g.map.insert(
            id.to_string(),
            Entry {
                keys: keys.clone(),
                resident,
                envelope,
                last_used: tick,
            },
        );
        // Evict the least recently used others until the budget holds (the new entry
        // stays: the caller needs it now, and it was checked to fit on its own).
        while g.resident > self.max_bytes && g.map.len() > 1 {
            let victim = g
                .map
                .iter()
                .filter(|(k, _)| k.as_str() != id)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(v) = victim else { break };
            if let Some(e) = g.map.remove(&v) {
                g.resident -= e.resident;
                g.evictions += 1;
            }
        }
        keys
    }

    /// Forgets `id` in memory and on disk. Returns whether it was known.
    pub(crate) fn remove(&self, id: &str) -> Result<bool> {
        if !is_key_id(id) {
            return Ok(false);
        }
        let mut known = false;
        {
            let mut g = self.lock();
            if let Some(e) = g.map.remove(id) {
                g.resident -= e.resident;
                known = true;
            }
        }
        if let Some(path) = self.path_of(id) {
            match std::fs::remove_file(&path) {
                Ok(()) => known = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(known)
    }

    pub(crate) fn stats(&self) -> KeyStoreStats {
        let g = self.lock();
        KeyStoreStats {
            resident_bytes: g.resident,
            entries: g.map.len(),
            evictions: g.evictions,
            disk_deletions: g.disk_deletions,
        }
    }
}
