//! The control API's side of autolock: `cluster update --autolock` makes or removes the unlock
//! key, `--rotate` replaces it (the old one kept sealed by the new, see `crate::autolock`);
//! every manager's keeper then rewrites its key files.

use shoal_api::v1;
use tonic::Status;

use super::ControlService;
use crate::autolock::{UNLOCK_KEYS_ID, new_keys, rotated};
use crate::objects::{Object, ObjectError};

impl ControlService {
    /// Brings the unlock key in line with the cluster's autolock setting, after the cluster
    /// object was written with it; returns the key when it is new (turned on, or rotated).
    pub(super) async fn follow_autolock(&self, autolock: bool, rotate: bool) -> Result<String, Status> {
        let stored = match self.objects.get::<v1::UnlockKeys>(UNLOCK_KEYS_ID).await {
            Ok(keys) => Some(keys),
            Err(ObjectError::NotFound { .. }) => None,
            Err(err) => return Err(err.into()),
        };
        match (autolock, stored) {
            (true, None) => {
                let (keys, key) = new_keys()?;
                self.objects.create(keys).await?;
                tracing::info!("autolock turned on: the managers encrypt their keys at rest with the unlock key");
                Ok(key.to_string())
            }
            (true, Some(keys)) if rotate => {
                let (keys, key) = rotated(keys)?;
                self.objects.update(keys).await?;
                tracing::info!("unlock key rotated: the managers re-encrypt their keys at rest with the new one");
                Ok(key.to_string())
            }
            (true, Some(_)) | (false, None) => Ok(String::new()),
            (false, Some(keys)) => {
                self.objects.delete::<v1::UnlockKeys>(UNLOCK_KEYS_ID, keys.version()).await?;
                tracing::info!("autolock turned off: the managers keep their keys at rest in the clear");
                Ok(String::new())
            }
        }
    }
}
