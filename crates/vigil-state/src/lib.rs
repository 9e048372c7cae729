//! Vigil's local state store: first-seen combinations that outgrow memory,
//! spilled to one embedded [redb](https://www.redb.org) file per instance.
//!
//! This is the Kafka Streams pattern of a local store backed by a
//! changelog: the state topic is the durable truth, and this file is a
//! cache of it beyond memory. So the file is created empty at start
//! ([`SpillStore::create`] replaces an old one) and refilled as the state
//! topic is restored; nothing here must survive a restart.
//!
//! Invariants:
//! * a [`SpillTable`] holds, per combination (a 128-bit key), the event
//!   time it was last seen (seconds), and an index by that time, so expiry
//!   and eviction read only the entries they remove;
//! * every write is one transaction committed durably (fsync): writes are
//!   rare (an eviction moves a tenth of memory at once), and redb's
//!   non-durable commits keep freed pages until a durable one, which
//!   would grow the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

/// The file in the spill directory.
pub const SPILL_FILE: &str = "first-seen.redb";

/// Default size of redb's page cache, shared by every table of a store.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// What went wrong with the local store, with what Vigil was doing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spill directory or its file could not be made.
    #[error("cannot create the state spill file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A read or write of the file failed.
    #[error("state spill table {table}: {doing}: {source}")]
    Io {
        table: String,
        doing: &'static str,
        #[source]
        source: Box<redb::Error>,
    },
}

/// One spill file shared by every rule's and lane's table.
#[derive(Clone)]
pub struct SpillStore {
    db: Arc<Database>,
    path: PathBuf,
    /// Tables made so far: the next table's number.
    tables: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for SpillStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SpillStore {
    /// Create `dir` if needed and an empty spill file in it (an old one is
    /// removed: the state topic restores what it held), with a page cache
    /// of `cache_bytes`.
    pub fn create(dir: &Path, cache_bytes: usize) -> Result<SpillStore, Error> {
        let path = dir.join(SPILL_FILE);
        let create_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Create {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| create_error(e.into()))?;
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(create_error(e.into())),
        }
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| create_error(e.into()))?;
        Ok(SpillStore {
            db: Arc::new(db),
            path,
            tables: Arc::default(),
        })
    }

    /// A store on another redb backend (in memory, or one that fails on
    /// purpose in tests), with a page cache of `cache_bytes`.
    pub fn with_backend(
        backend: impl redb::StorageBackend,
        cache_bytes: usize,
    ) -> Result<SpillStore, Error> {
        let path = PathBuf::from(format!("{backend:?}"));
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create_with_backend(backend)
            .map_err(|e| Error::Create {
                path: path.clone(),
                source: e.into(),
            })?;
        Ok(SpillStore {
            db: Arc::new(db),
            path,
            tables: Arc::default(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new, empty table labelled `label` (a rule, or a rule and
    /// repartition partition). Tables are named uniquely, so two holders
    /// never share one; a table is deleted when its handle is dropped.
    pub fn table(&self, label: &str) -> SpillTable {
        let n = self
            .tables
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        SpillTable {
            db: Arc::clone(&self.db),
            entries: format!("{n}:{label}/entries"),
            by_time: format!("{n}:{label}/by_time"),
            len: 0,
        }
    }
}

type Entries<'a> = redb::Table<'a, u128, u32>;
type ByTime<'a> = redb::Table<'a, (u32, u128), ()>;

/// The spilled combinations of one first-seen state: key to last-seen time.
pub struct SpillTable {
    db: Arc<Database>,
    entries: String,
    by_time: String,
    len: u64,
}

impl std::fmt::Debug for SpillTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillTable")
            .field("table", &self.entries)
            .field("len", &self.len)
            .finish()
    }
}

impl SpillTable {
    /// Entries held.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Store `entries` (key, last seen), replacing what a key held, and
    /// remove `stale` keys (ones the caller holds again in memory) first.
    pub fn put(&mut self, entries: &[(u128, u32)], stale: &[u128]) -> Result<(), Error> {
        self.len = self.write("store entries", |table, by_time| {
            for key in stale {
                if let Some(old) = table.remove(key)? {
                    by_time.remove((old.value(), *key))?;
                }
            }
            for &(key, at) in entries {
                if let Some(old) = table.insert(key, at)? {
                    by_time.remove((old.value(), key))?;
                }
                by_time.insert((at, key), ())?;
            }
            Ok(table.len()?)
        })?;
        Ok(())
    }

    /// The last-seen time of `key`, if spilled.
    pub fn get(&self, key: u128) -> Result<Option<u32>, Error> {
        let read = |doing| {
            move |source: redb::Error| Error::Io {
                table: self.entries.clone(),
                doing,
                source: Box::new(source),
            }
        };
        let txn = self
            .db
            .begin_read()
            .map_err(|e| read("begin a read")(e.into()))?;
        let table = match txn.open_table(TableDefinition::<u128, u32>::new(&self.entries)) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(read("open the table")(e.into())),
        };
        let value = table.get(key).map_err(|e| read("read")(e.into()))?;
        Ok(value.map(|v| v.value()))
    }

    /// Remove every entry last seen before `horizon`; their keys.
    pub fn remove_before(&mut self, horizon: u32) -> Result<Vec<u128>, Error> {
        self.remove_oldest_while(|at, _| at < horizon)
    }

    /// Remove the `count` entries last seen longest ago; their keys.
    pub fn remove_oldest(&mut self, count: usize) -> Result<Vec<u128>, Error> {
        self.remove_oldest_while(|_, removed| removed < count)
    }

    /// Remove `keys` where spilled.
    pub fn remove(&mut self, keys: &[u128]) -> Result<(), Error> {
        self.put(&[], keys)
    }

    /// Remove every entry.
    pub fn clear(&mut self) -> Result<(), Error> {
        self.len = self.write("empty the table", |table, by_time| {
            table.retain(|_, _| false)?;
            by_time.retain(|_, _| false)?;
            Ok(0)
        })?;
        Ok(())
    }

    /// Remove entries in last-seen order while `more(time, removed so far)`.
    fn remove_oldest_while(
        &mut self,
        mut more: impl FnMut(u32, usize) -> bool,
    ) -> Result<Vec<u128>, Error> {
        if self.len == 0 {
            return Ok(Vec::new());
        }
        let mut removed = Vec::new();
        self.len = self.write("remove entries", |table, by_time| {
            let mut oldest = Vec::new();
            for row in by_time.iter()? {
                let (at, key) = row?.0.value();
                if !more(at, oldest.len()) {
                    break;
                }
                oldest.push((at, key));
            }
            for (at, key) in oldest {
                by_time.remove((at, key))?;
                table.remove(key)?;
                removed.push(key);
            }
            Ok(table.len()?)
        })?;
        Ok(removed)
    }

    /// Run `f` on both tables in one durable write transaction.
    fn write<T>(
        &self,
        doing: &'static str,
        f: impl FnOnce(&mut Entries<'_>, &mut ByTime<'_>) -> Result<T, redb::Error>,
    ) -> Result<T, Error> {
        let io = |source: redb::Error| Error::Io {
            table: self.entries.clone(),
            doing,
            source: Box::new(source),
        };
        let txn = self.db.begin_write().map_err(|e| io(e.into()))?;
        let result = {
            let mut entries = txn
                .open_table(TableDefinition::<u128, u32>::new(&self.entries))
                .map_err(|e| io(e.into()))?;
            let mut by_time = txn
                .open_table(TableDefinition::<(u32, u128), ()>::new(&self.by_time))
                .map_err(|e| io(e.into()))?;
            f(&mut entries, &mut by_time).map_err(io)?
        };
        txn.commit().map_err(|e| io(e.into()))?;
        Ok(result)
    }
}

impl Drop for SpillTable {
    /// Delete the table: no other handle can reach it. A failure leaves
    /// it in the file, which the next start replaces.
    fn drop(&mut self) {
        let Ok(txn) = self.db.begin_write() else {
            return;
        };
        let _ = txn.delete_table(TableDefinition::<u128, u32>::new(&self.entries));
        let _ = txn.delete_table(TableDefinition::<(u32, u128), ()>::new(&self.by_time));
        let _ = txn.commit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SpillStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SpillStore::create(dir.path(), 1 << 20).unwrap();
        (dir, store)
    }

    #[test]
    fn entries_are_replaced_and_removed_in_last_seen_order() {
        let (_dir, store) = store();
        let mut table = store.table("rule");
        table.put(&[(1, 30), (2, 10), (3, 20)], &[]).unwrap();
        table.put(&[(2, 40)], &[]).unwrap();
        assert_eq!(table.len(), 3);
        assert_eq!(table.get(2).unwrap(), Some(40));
        assert_eq!(table.remove_before(30).unwrap(), vec![3]);
        assert_eq!(table.remove_oldest(1).unwrap(), vec![1]);
        assert_eq!(table.get(1).unwrap(), None);
        assert_eq!(table.len(), 1);
        table.remove(&[2]).unwrap();
        assert!(table.is_empty());
        assert_eq!(table.remove_oldest(5).unwrap(), Vec::<u128>::new());
    }

    #[test]
    fn tables_are_apart_and_deleted_when_dropped() {
        let (dir, store) = store();
        let mut a = store.table("a");
        let mut b = store.table("a");
        a.put(&[(7, 1)], &[]).unwrap();
        assert_eq!(b.get(7).unwrap(), None);
        b.put(&[(8, 1)], &[]).unwrap();
        b.clear().unwrap();
        assert!(b.is_empty());
        assert_eq!(b.get(8).unwrap(), None);
        let tables = |store: &SpillStore| {
            let txn = store.db.begin_read().unwrap();
            txn.list_tables().unwrap().count()
        };
        assert_eq!(tables(&store), 4);
        drop(a);
        assert_eq!(tables(&store), 2);
        drop((b, store));
        let again = SpillStore::create(dir.path(), 1 << 20).unwrap();
        assert_eq!(tables(&again), 0);
    }

    #[test]
    fn a_missing_directory_is_created_and_an_unusable_one_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("x/y");
        SpillStore::create(&nested, 1 << 20).unwrap();
        assert!(nested.join(SPILL_FILE).exists());
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let error = SpillStore::create(&file, 1 << 20).unwrap_err().to_string();
        assert!(
            error.contains("cannot create the state spill file"),
            "{error}"
        );
    }
}
