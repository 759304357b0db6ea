//! The secrets and configs of one node's assignment stream: a payload version goes to the node
//! just before the first task of its set that uses it, and is taken back once no task of the set
//! uses it, so a node holds a secret only while it has a task that needs it.

use std::collections::HashMap;

use shoal_api::v1;

use crate::objects::{ObjectError, ObjectStore};
use crate::payload::{self, Payload, Reference};

/// A payload version as the node keys it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Secret(String, u64),
    Config(String, u64),
}

/// What one stream has told its node of secrets and configs.
#[derive(Debug, Default)]
pub(super) struct Told {
    /// The payload versions each known task uses.
    uses: HashMap<String, Vec<Key>>,
    /// How many known tasks use each payload version the node holds.
    held: HashMap<Key, usize>,
}

fn keys(task: &v1::Task) -> Vec<Key> {
    let Some(container) = task.spec.as_ref().and_then(|s| s.container.as_ref()) else { return Vec::new() };
    let secrets =
        <v1::Secret as Payload>::refs(container).iter().map(|r| Key::Secret(r.id().to_owned(), r.data_version()));
    let configs =
        <v1::Config as Payload>::refs(container).iter().map(|r| Key::Config(r.id().to_owned(), r.data_version()));
    let mut keys: Vec<Key> = secrets.chain(configs).collect();
    keys.dedup();
    keys
}

impl Told {
    /// The changes that go before and after `change` (a task's update or removal): the payloads
    /// its task needs that the node does not hold yet, before; the ones no task needs any more,
    /// after. Payloads that are gone from the store are left out (the node then rejects the
    /// task, naming what it lacks).
    pub(super) async fn around(
        &mut self,
        objects: &ObjectStore,
        change: v1::AssignmentChange,
    ) -> Result<Vec<v1::AssignmentChange>, ObjectError> {
        let Some(task) = change.task.as_ref() else { return Ok(vec![change]) };
        let removal = change.action == v1::assignment_change::Action::Remove as i32;
        let new_keys = if removal { Vec::new() } else { keys(task) };
        let old_keys = self.uses.remove(&task.id).unwrap_or_default();
        let mut before = Vec::new();
        for key in &new_keys {
            let count = self.held.entry(key.clone()).or_default();
            *count += 1;
            if *count == 1
                && let Some(update) = fetch(objects, key).await?
            {
                before.push(update);
            }
        }
        let mut after = Vec::new();
        for key in old_keys {
            let Some(count) = self.held.get_mut(&key) else { continue };
            *count -= 1;
            if *count == 0 {
                self.held.remove(&key);
                after.push(removal_of(&key));
            }
        }
        if !new_keys.is_empty() {
            self.uses.insert(task.id.clone(), new_keys);
        }
        before.push(change);
        before.extend(after);
        Ok(before)
    }
}

/// The update that hands a payload version to the node; `None` when it is gone.
async fn fetch(objects: &ObjectStore, key: &Key) -> Result<Option<v1::AssignmentChange>, ObjectError> {
    async fn one<P: Payload>(objects: &ObjectStore, id: &str, version: u64) -> Result<Option<P>, ObjectError> {
        match objects.get_local::<P>(id).await {
            Ok(object) => Ok(payload::for_node(&object, version)),
            Err(ObjectError::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }
    Ok(match key {
        Key::Secret(id, version) => one::<v1::Secret>(objects, id, *version).await?.map(Payload::into_change),
        Key::Config(id, version) => one::<v1::Config>(objects, id, *version).await?.map(Payload::into_change),
    })
}

/// The removal of a payload version: its ID and version, nothing else.
fn removal_of(key: &Key) -> v1::AssignmentChange {
    let action = v1::assignment_change::Action::Remove as i32;
    match key {
        Key::Secret(id, version) => v1::AssignmentChange {
            action,
            secret: Some(v1::Secret { id: id.clone(), data_version: *version, ..Default::default() }),
            ..Default::default()
        },
        Key::Config(id, version) => v1::AssignmentChange {
            action,
            config: Some(v1::Config { id: id.clone(), data_version: *version, ..Default::default() }),
            ..Default::default()
        },
    }
}
