//! Typed access to the cluster objects in raft-store: each object is prost-encoded under its
//! kind's prefix (`/nodes/ID`, `/services/ID`, `/tasks/ID`, `/networks/ID`, `/cluster/ID`, `/revocations/ID`,
//! `/admin-certificates/ID`, `/unlock-keys/manager`, `/root-ca/root`, `/network-keys/ipsec`), names that must be unique have an index key
//! (`/names/services/NAME`), and `Meta.version` is the key's mod revision: an update or delete
//! naming another version is refused, so two writers can never overwrite each other's changes
//! unseen.

use prost::Message;
use shoal_api::v1;
use shoal_raft_store::{Compare, Op, ReadError, Store, Txn, WriteError};

/// A kind of stored object.
pub trait Object: Message + Default + Clone {
    /// Key prefix, e.g. `/services/`.
    const PREFIX: &'static str;
    /// Kind in messages, e.g. `service`.
    const KIND: &'static str;
    /// Whether names of this kind are unique (services: yes; nodes, whose names are hostnames: no).
    const UNIQUE_NAMES: bool;
    /// The object's ID.
    fn id(&self) -> &str;
    /// The object's name, if it has one.
    fn name(&self) -> Option<&str>;
    /// Its bookkeeping.
    fn meta_mut(&mut self) -> &mut v1::Meta;
    /// The version it was read at (0 for an object never stored).
    fn version(&self) -> u64;
}

macro_rules! object {
    ($ty:ty, $prefix:literal, $kind:literal, $unique:literal, |$o:ident| $name:expr) => {
        impl Object for $ty {
            const PREFIX: &'static str = $prefix;
            const KIND: &'static str = $kind;
            const UNIQUE_NAMES: bool = $unique;
            fn id(&self) -> &str {
                &self.id
            }
            fn name(&self) -> Option<&str> {
                let $o = self;
                $name
            }
            fn meta_mut(&mut self) -> &mut v1::Meta {
                self.meta.get_or_insert_with(Default::default)
            }
            fn version(&self) -> u64 {
                self.meta.as_ref().map_or(0, |m| m.version)
            }
        }
    };
}

object!(v1::Node, "/nodes/", "node", false, |o| o.description.as_ref().map(|d| d.hostname.as_str()));
object!(v1::Service, "/services/", "service", true, |o| o
    .spec
    .as_ref()
    .and_then(|s| s.annotations.as_ref())
    .map(|a| a.name.as_str()));
object!(v1::Task, "/tasks/", "task", false, |o| o.annotations.as_ref().map(|a| a.name.as_str()));
object!(v1::Cluster, "/cluster/", "cluster", false, |o| o
    .spec
    .as_ref()
    .and_then(|s| s.annotations.as_ref())
    .map(|a| a.name.as_str()));
object!(v1::Network, "/networks/", "network", true, |o| o
    .spec
    .as_ref()
    .and_then(|s| s.annotations.as_ref())
    .map(|a| a.name.as_str()));
object!(v1::Secret, "/secrets/", "secret", true, |o| o
    .spec
    .as_ref()
    .and_then(|s| s.annotations.as_ref())
    .map(|a| a.name.as_str()));
object!(v1::Config, "/configs/", "config", true, |o| o
    .spec
    .as_ref()
    .and_then(|s| s.annotations.as_ref())
    .map(|a| a.name.as_str()));
object!(v1::Revocation, "/revocations/", "revocation", false, |_o| None);
object!(v1::AdminCertificate, "/admin-certificates/", "admin certificate", false, |_o| None);
object!(v1::UnlockKeys, "/unlock-keys/", "unlock key", false, |_o| None);
object!(v1::RootCa, "/root-ca/", "root CA", false, |_o| None);
object!(v1::NetworkKeyRing, "/network-keys/", "network key ring", false, |_o| None);

/// A read or write of the object store failed.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// No object of that kind has that ID.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Kind.
        kind: &'static str,
        /// ID.
        id: String,
    },
    /// An object with that ID exists already.
    #[error("{kind} {id} already exists")]
    Exists {
        /// Kind.
        kind: &'static str,
        /// ID.
        id: String,
    },
    /// The name belongs to another object of the same kind.
    #[error("{kind} name {name:?} is already in use by {kind} {owner}")]
    NameTaken {
        /// Kind.
        kind: &'static str,
        /// The name.
        name: String,
        /// The object that has it.
        owner: String,
    },
    /// The object changed since the version the caller read.
    #[error("{kind} {id} was changed by someone else (version {expected} is out of date); read it again and retry")]
    Conflict {
        /// Kind.
        kind: &'static str,
        /// ID.
        id: String,
        /// The version the caller named.
        expected: u64,
    },
    /// A stored value does not decode (disk corruption or a version mismatch).
    #[error("{kind} {id}: stored value does not decode: {reason}")]
    Corrupt {
        /// Kind.
        kind: &'static str,
        /// ID.
        id: String,
        /// The decode error.
        reason: String,
    },
    /// A fenced write (the leader's) was refused because another leader has taken over since.
    #[error(
        "this manager is no longer the leader that made this decision (the fence {key} moved); the new leader decides again"
    )]
    Fenced {
        /// The fence key.
        key: String,
    },
    /// The store could not serve a read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The store could not apply a write.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Most writes [`ObjectStore::write_all`] puts in one transaction (a few hundred kilobytes of
/// tasks: one Raft entry that a follower takes in one message).
pub const BATCH: usize = 500;

/// How many times [`ObjectStore::modify`] reads and writes again after losing to another write.
pub const MODIFY_ATTEMPTS: u32 = 5;

/// Transactions of one [`ObjectStore::write_all`] in flight at once.
const IN_FLIGHT: usize = 4;

/// One write of [`ObjectStore::write_all`].
#[derive(Debug, Clone, PartialEq)]
pub enum Write<T> {
    /// Store a new object (refused if its ID exists).
    Create(T),
    /// Replace the object read at its version (refused if it changed since).
    Update(T),
    /// Delete the object read at `version`.
    Delete {
        /// Its ID.
        id: String,
        /// The version read.
        version: u64,
    },
}

/// The cluster objects on top of a raft-store member.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    store: Store,
    /// Every write also requires this key to be at this mod revision (see [`ObjectStore::fenced`]).
    fence: Option<(String, u64)>,
}

pub(crate) fn key<T: Object>(id: &str) -> String {
    format!("{}{id}", T::PREFIX)
}

fn name_key<T: Object>(name: &str) -> String {
    format!("/names/{}{name}", T::PREFIX.trim_start_matches('/'))
}

pub(crate) fn decode<T: Object>(id: &str, bytes: &[u8], revision: u64) -> Result<T, ObjectError> {
    let mut object = T::decode(bytes).map_err(|e| ObjectError::Corrupt {
        kind: T::KIND,
        id: id.to_owned(),
        reason: e.to_string(),
    })?;
    object.meta_mut().version = revision;
    Ok(object)
}

impl ObjectStore {
    /// Wraps a raft-store member.
    pub fn new(store: Store) -> Self {
        Self { store, fence: None }
    }

    /// The same store, but every write through the returned handle is refused
    /// ([`ObjectError::Fenced`]) once `key` has moved past `revision`. The leader writes a key
    /// when it takes office and fences its decisions with it: a deposed leader still finishing
    /// a pass (its writes forwarded to the new leader) can then never hand out an address or a
    /// port that the new leader hands out too.
    pub fn fenced(&self, key: impl Into<String>, revision: u64) -> Self {
        Self { store: self.store.clone(), fence: Some((key.into(), revision)) }
    }

    fn txn(&self) -> Txn {
        match &self.fence {
            Some((key, revision)) => Txn::new().when(Compare::mod_revision(key.clone(), *revision)),
            None => Txn::new(),
        }
    }

    /// Whether the fence (if any) has moved: then a refusal is the fence's, not the object's.
    async fn fence_moved(&self) -> Option<ObjectError> {
        let (key, revision) = self.fence.as_ref()?;
        match self.store.get(key.clone()).await {
            Ok(Some(kv)) if kv.mod_revision == *revision => None,
            Ok(_) => Some(ObjectError::Fenced { key: key.clone() }),
            Err(err) => Some(ObjectError::Read(err)),
        }
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The object with `id` (linearizable read).
    pub async fn get<T: Object>(&self, id: &str) -> Result<T, ObjectError> {
        let kv = self.store.get(key::<T>(id)).await?;
        let kv = kv.ok_or_else(|| ObjectError::NotFound { kind: T::KIND, id: id.to_owned() })?;
        decode(id, &kv.value, kv.mod_revision)
    }

    /// The object with `id` as this member has applied it, without asking the leader: for a
    /// read whose write compares the version anyway, where being behind costs a retry, not
    /// correctness.
    pub async fn get_local<T: Object>(&self, id: &str) -> Result<T, ObjectError> {
        let kv = self.store.get_with(key::<T>(id), shoal_raft_store::Consistency::Stale).await?;
        let kv = kv.ok_or_else(|| ObjectError::NotFound { kind: T::KIND, id: id.to_owned() })?;
        decode(id, &kv.value, kv.mod_revision)
    }

    /// Every object of kind `T`, in ID order.
    pub async fn list<T: Object>(&self) -> Result<Vec<T>, ObjectError> {
        Ok(self.list_at::<T>().await?.0)
    }

    /// Every object of kind `T` and the store revision the list was read at (to watch from).
    pub async fn list_at<T: Object>(&self) -> Result<(Vec<T>, u64), ObjectError> {
        let range = self.store.range(T::PREFIX).await?;
        let objects = range
            .kvs
            .iter()
            .map(|kv| decode(&kv_id::<T>(&kv.key), &kv.value, kv.mod_revision))
            .collect::<Result<_, _>>()?;
        Ok((objects, range.revision))
    }

    /// Stores a new object; refused if its ID exists or (for unique kinds) its name is taken.
    pub async fn create<T: Object>(&self, mut object: T) -> Result<T, ObjectError> {
        let now = shoal_api::to_timestamp(std::time::SystemTime::now());
        let meta = object.meta_mut();
        meta.version = 0;
        meta.created_at = Some(now);
        meta.updated_at = Some(now);
        let id = object.id().to_owned();
        let mut txn = self.txn().when(Compare::missing(key::<T>(&id)));
        let name = object.name().filter(|_| T::UNIQUE_NAMES).map(str::to_owned);
        if let Some(name) = &name {
            txn = txn.when(Compare::missing(name_key::<T>(name))).and_then(Op::put(name_key::<T>(name), id.clone()));
        }
        txn = txn.and_then(Op::put(key::<T>(&id), object.encode_to_vec()));
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(self.explain_refusal::<T>(&id, name.as_deref(), 0).await);
        }
        object.meta_mut().version = outcome.revision;
        Ok(object)
    }

    /// Reads object `id`, lets `change` edit it (it returns whether there is anything to write)
    /// and writes it back; when a concurrent write got there first, reads it again and edits
    /// again, up to [`MODIFY_ATTEMPTS`] times. Returns the written object, or `None` when
    /// `change` wrote nothing.
    pub async fn modify<T: Object>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut T) -> bool,
    ) -> Result<Option<T>, ObjectError> {
        let mut attempts = 0;
        loop {
            let mut object: T = self.get(id).await?;
            if !change(&mut object) {
                return Ok(None);
            }
            match self.update(object).await {
                Ok(written) => return Ok(Some(written)),
                Err(ObjectError::Conflict { .. }) if attempts + 1 < MODIFY_ATTEMPTS => attempts += 1,
                Err(err) => return Err(err),
            }
        }
    }

    /// Replaces an object read at `object`'s version; refused if it changed since.
    pub async fn update<T: Object>(&self, mut object: T) -> Result<T, ObjectError> {
        let id = object.id().to_owned();
        let version = object.version();
        let mut txn = self.txn().when(Compare::mod_revision(key::<T>(&id), version));
        let new_name = object.name().filter(|_| T::UNIQUE_NAMES).map(str::to_owned);
        // Only a kind with unique names needs the stored object: to move its name index.
        let old_name = if T::UNIQUE_NAMES {
            let current: T = self.get(&id).await?;
            current.name().map(str::to_owned)
        } else {
            None
        };
        if new_name != old_name {
            if let Some(name) = &new_name {
                txn =
                    txn.when(Compare::missing(name_key::<T>(name))).and_then(Op::put(name_key::<T>(name), id.clone()));
            }
            if let Some(name) = &old_name {
                txn = txn.and_then(Op::delete(name_key::<T>(name)));
            }
        }
        let meta = object.meta_mut();
        meta.version = 0;
        meta.updated_at = Some(shoal_api::to_timestamp(std::time::SystemTime::now()));
        txn = txn.and_then(Op::put(key::<T>(&id), object.encode_to_vec()));
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(self.explain_refusal::<T>(&id, new_name.as_deref(), version).await);
        }
        object.meta_mut().version = outcome.revision;
        Ok(object)
    }

    /// Deletes an object read at `version` (its name with it); refused if it changed since.
    pub async fn delete<T: Object>(&self, id: &str, version: u64) -> Result<(), ObjectError> {
        let current: T = self.get(id).await?;
        let mut txn = self.txn().when(Compare::mod_revision(key::<T>(id), version)).and_then(Op::delete(key::<T>(id)));
        if let Some(name) = current.name().filter(|_| T::UNIQUE_NAMES) {
            txn = txn.and_then(Op::delete(name_key::<T>(name)));
        }
        let outcome = self.store.txn(txn).await?;
        if !outcome.succeeded {
            return Err(self.explain_refusal::<T>(id, None, version).await);
        }
        Ok(())
    }

    /// Applies `writes` of one kind in transactions of up to [`BATCH`] writes each, so that the
    /// leader's passes and the nodes' status reports cost one Raft entry per batch, not per
    /// object. Each write keeps its own version check: a transaction refused because one of its
    /// objects changed is redone write by write, so that one stale object holds back no other.
    /// Returns each write's outcome, in order; the outer error is a failure of the store itself.
    ///
    /// Kinds with unique names take the one-by-one path (their name index needs a read), and an
    /// object may appear at most once in `writes`.
    pub async fn write_all<T: Object>(
        &self,
        writes: Vec<Write<T>>,
    ) -> Result<Vec<Result<(), ObjectError>>, ObjectError> {
        use futures::StreamExt as _;
        let size = if T::UNIQUE_NAMES { 1 } else { BATCH };
        let mut chunks = Vec::with_capacity(writes.len().div_ceil(size));
        let mut rest = writes.into_iter().peekable();
        while rest.peek().is_some() {
            chunks.push(rest.by_ref().take(size).collect::<Vec<_>>());
        }
        // A few transactions in flight at once, so that encoding, the disk and applying overlap
        // (and the log's group commit shares one fsync among them); outcomes stay in order.
        let mut results =
            futures::stream::iter(chunks.into_iter().map(|chunk| self.write_chunk(chunk))).buffered(IN_FLIGHT);
        let mut outcomes = Vec::new();
        while let Some(chunk) = results.next().await {
            outcomes.extend(chunk?);
        }
        Ok(outcomes)
    }

    /// One transaction of [`Self::write_all`], redone write by write when refused.
    async fn write_chunk<T: Object>(&self, chunk: Vec<Write<T>>) -> Result<Vec<Result<(), ObjectError>>, ObjectError> {
        if chunk.len() > 1 {
            let now = shoal_api::to_timestamp(std::time::SystemTime::now());
            let mut txn = self.txn();
            for write in &chunk {
                txn = match write {
                    Write::Create(object) | Write::Update(object) => {
                        let mut object = object.clone();
                        let version = object.version();
                        let meta = object.meta_mut();
                        meta.version = 0;
                        meta.updated_at = Some(now);
                        if version == 0 {
                            meta.created_at = Some(now);
                        }
                        let key = key::<T>(object.id());
                        let compare = if matches!(write, Write::Create(_)) {
                            Compare::missing(key.clone())
                        } else {
                            Compare::mod_revision(key.clone(), version)
                        };
                        txn.when(compare).and_then(Op::put(key, object.encode_to_vec()))
                    }
                    Write::Delete { id, version } => {
                        txn.when(Compare::mod_revision(key::<T>(id), *version)).and_then(Op::delete(key::<T>(id)))
                    }
                };
            }
            if self.store.txn(txn).await?.succeeded {
                return Ok(chunk.iter().map(|_| Ok(())).collect());
            }
        }
        let mut outcomes = Vec::with_capacity(chunk.len());
        for write in chunk {
            let outcome = match write {
                Write::Create(object) => self.create(object).await.map(drop),
                Write::Update(object) => self.update(object).await.map(drop),
                Write::Delete { id, version } => self.delete::<T>(&id, version).await,
            };
            match outcome {
                Err(err @ (ObjectError::Read(_) | ObjectError::Write(_) | ObjectError::Fenced { .. })) => {
                    return Err(err);
                }
                outcome => outcomes.push(outcome),
            }
        }
        Ok(outcomes)
    }

    /// Why a transaction's compares failed, found by reading the keys it compared.
    async fn explain_refusal<T: Object>(&self, id: &str, name: Option<&str>, version: u64) -> ObjectError {
        if let Some(err) = self.fence_moved().await {
            return err;
        }
        match self.store.get(key::<T>(id)).await {
            Ok(None) if version != 0 => return ObjectError::NotFound { kind: T::KIND, id: id.to_owned() },
            Ok(Some(kv)) if version == 0 => return ObjectError::Exists { kind: T::KIND, id: kv_id::<T>(&kv.key) },
            Ok(Some(kv)) if kv.mod_revision != version => {
                return ObjectError::Conflict { kind: T::KIND, id: id.to_owned(), expected: version };
            }
            Err(err) => return ObjectError::Read(err),
            _ => {}
        }
        if let Some(name) = name
            && let Ok(Some(owner)) = self.store.get(name_key::<T>(name)).await
        {
            return ObjectError::NameTaken {
                kind: T::KIND,
                name: name.to_owned(),
                owner: String::from_utf8_lossy(&owner.value).into_owned(),
            };
        }
        ObjectError::Conflict { kind: T::KIND, id: id.to_owned(), expected: version }
    }
}

pub(crate) fn kv_id<T: Object>(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[T::PREFIX.len().min(key.len())..]).into_owned()
}

#[cfg(test)]
mod tests;
