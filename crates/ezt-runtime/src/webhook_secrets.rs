//! The webhook-secrets service: a tenant's signing secrets (a primary, and the previous one
//! kept as secondary during a rotation), sealed at rest with the server key. Deliveries read
//! them through [`SigningKeys`]; every change here makes that cache forget the tenant, so the
//! next delivery on this node signs with the new secrets.

use std::sync::Arc;

use ezt_core::TenantId;
use ezt_store::{Store, WebhookSecrets};

use crate::clock::Clock;
use crate::deliver::SigningKeys;

/// A tenant's secrets, opened. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    /// Signs every delivery.
    pub primary: String,
    /// Also signs every delivery, second.
    pub secondary: Option<String>,
    /// Last change, ms since epoch.
    pub updated_at: u64,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opened([redacted])")
    }
}

/// Why the service refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The tenant has no secrets.
    #[error("no webhook secret")]
    NotFound,
    /// A rotation to the secret already primary.
    #[error("is already the primary secret")]
    AlreadyPrimary,
    /// A stored secret does not open with this server's key (logged with the tenant).
    #[error("the stored secret does not open with this server's key")]
    Unopenable,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ezt_store::Error),
}

/// The service.
pub struct Secrets {
    store: Arc<dyn Store>,
    keys: Arc<SigningKeys>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").finish_non_exhaustive()
    }
}

impl Secrets {
    /// The service over `store`, sealing with the deliverer's keys.
    pub fn new(store: Arc<dyn Store>, keys: Arc<SigningKeys>, clock: Arc<dyn Clock>) -> Self {
        Self { store, keys, clock }
    }

    fn open(&self, tenant: TenantId, s: &WebhookSecrets) -> Result<Opened, SecretsError> {
        let open = |sealed: &[u8]| {
            self.keys.sealer().open(tenant, sealed).map_err(|e| {
                tracing::error!(tenant_id = %tenant, error = %e, "cannot open a webhook secret");
                SecretsError::Unopenable
            })
        };
        Ok(Opened {
            primary: open(&s.primary)?,
            secondary: s.secondary.as_deref().map(open).transpose()?,
            updated_at: s.updated_at,
        })
    }

    /// Sets the tenant's secrets, replacing any; answers them and whether some were replaced.
    pub async fn set(
        &self,
        tenant: TenantId,
        primary: &str,
        secondary: Option<&str>,
    ) -> Result<(Opened, bool), SecretsError> {
        let existed = self.store.webhook_secrets(tenant).await?.is_some();
        let sealer = self.keys.sealer();
        let sealed = WebhookSecrets {
            primary: sealer.seal(tenant, primary),
            secondary: secondary.map(|s| sealer.seal(tenant, s)),
            updated_at: self.clock.now_ms(),
        };
        self.store
            .put_webhook_secrets(tenant, sealed.clone())
            .await?;
        self.keys.forget(tenant);
        tracing::info!(tenant_id = %tenant, replaced = existed, "webhook secrets set");
        Ok((self.open(tenant, &sealed)?, existed))
    }

    /// The tenant's secrets.
    pub async fn get(&self, tenant: TenantId) -> Result<Opened, SecretsError> {
        let s = self
            .store
            .webhook_secrets(tenant)
            .await?
            .ok_or(SecretsError::NotFound)?;
        self.open(tenant, &s)
    }

    /// Makes `new` the primary; the old primary stays as secondary, so receivers that still
    /// verify with it keep accepting deliveries until they switch.
    pub async fn rotate(&self, tenant: TenantId, new: &str) -> Result<Opened, SecretsError> {
        if let Some(current) = self.store.webhook_secrets(tenant).await? {
            let primary = self.keys.sealer().open(tenant, &current.primary).ok();
            if primary.as_deref() == Some(new) {
                return Err(SecretsError::AlreadyPrimary);
            }
        }
        let sealed = self.keys.sealer().seal(tenant, new);
        let s = self
            .store
            .rotate_webhook_secret(tenant, sealed, self.clock.now_ms())
            .await?
            .ok_or(SecretsError::NotFound)?;
        self.keys.forget(tenant);
        tracing::info!(tenant_id = %tenant, "webhook secret rotated");
        self.open(tenant, &s)
    }

    /// Deletes the tenant's secrets: webhooks go unsigned from then on.
    pub async fn delete(&self, tenant: TenantId) -> Result<(), SecretsError> {
        let deleted = self.store.delete_webhook_secrets(tenant).await?;
        self.keys.forget(tenant);
        if !deleted {
            return Err(SecretsError::NotFound);
        }
        tracing::info!(tenant_id = %tenant, "webhook secrets deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ezt_store::MemoryStore;

    use super::*;
    use crate::sealing::Sealer;

    fn service() -> Secrets {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let dir = tempfile::tempdir().unwrap();
        let sealer = Arc::new(Sealer::load(None, dir.path()).unwrap());
        let keys = Arc::new(SigningKeys::new(store.clone(), sealer));
        Secrets::new(store, keys, Arc::new(crate::clock::SystemClock))
    }

    #[tokio::test]
    async fn set_rotate_and_delete_keep_the_signing_cache_in_step() {
        let s = service();
        let t = TenantId::new(1, 1);
        assert!(matches!(s.get(t).await, Err(SecretsError::NotFound)));
        let (opened, replaced) = s.set(t, "first-secret-0123", None).await.unwrap();
        assert_eq!(
            (opened.primary.as_str(), replaced),
            ("first-secret-0123", false)
        );
        assert_eq!(&*s.keys.get(t).await.unwrap(), ["first-secret-0123"]);
        assert!(matches!(
            s.rotate(t, "first-secret-0123").await,
            Err(SecretsError::AlreadyPrimary)
        ));
        let rotated = s.rotate(t, "second-secret-456").await.unwrap();
        assert_eq!(rotated.secondary.as_deref(), Some("first-secret-0123"));
        assert_eq!(
            &*s.keys.get(t).await.unwrap(),
            ["second-secret-456", "first-secret-0123"],
            "the next delivery signs with both, new first"
        );
        assert_eq!(format!("{rotated:?}"), "Opened([redacted])", "never logged");
        s.delete(t).await.unwrap();
        assert!(
            s.keys.get(t).await.unwrap().is_empty(),
            "unsigned from now on"
        );
        assert!(matches!(s.delete(t).await, Err(SecretsError::NotFound)));
    }
}
