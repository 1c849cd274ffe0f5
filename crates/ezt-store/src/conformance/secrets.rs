//! `SecretStore`: webhook signing secrets and the installation's key/value secrets.

use ezt_core::TenantId;

use crate::*;

/// Secrets are per tenant; rotation moves the primary to secondary atomically.
pub async fn webhook_secrets_rotate<S: SecretStore>(s: S) {
    let t1 = TenantId(1);
    assert!(s.webhook_secrets(t1).await.unwrap().is_none());
    assert!(
        s.rotate_webhook_secret(t1, vec![9], 5)
            .await
            .unwrap()
            .is_none(),
        "nothing to rotate"
    );
    s.put_webhook_secrets(
        t1,
        WebhookSecrets {
            primary: vec![1],
            secondary: None,
            updated_at: 1,
        },
    )
    .await
    .unwrap();
    assert!(
        s.webhook_secrets(TenantId(2)).await.unwrap().is_none(),
        "per tenant"
    );
    let r = s
        .rotate_webhook_secret(t1, vec![2], 6)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.primary, r.secondary, r.updated_at),
        (vec![2], Some(vec![1]), 6)
    );
    let r = s
        .rotate_webhook_secret(t1, vec![3], 7)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (r.primary, r.secondary),
        (vec![3], Some(vec![2])),
        "the oldest is dropped"
    );
    assert_eq!(
        s.webhook_secrets(t1).await.unwrap().unwrap().primary,
        vec![3]
    );
    assert!(s.delete_webhook_secrets(t1).await.unwrap());
    assert!(!s.delete_webhook_secrets(t1).await.unwrap());
    assert!(s.webhook_secrets(t1).await.unwrap().is_none());
}

/// The installation's key/value table: the first value set wins (moved here from
/// `tenants_and_keys` when the traits were split; the assertion is unchanged).
pub async fn meta_is_set_once<S: SecretStore>(s: S) {
    let m1 = s.meta_get_or_init("fp", vec![1, 2]).await.unwrap();
    let m2 = s.meta_get_or_init("fp", vec![3]).await.unwrap();
    assert_eq!((m1, m2), (vec![1, 2], vec![1, 2]), "meta is set once");
    assert_eq!(s.meta_get("fp").await.unwrap(), Some(vec![1, 2]));
    assert_eq!(
        s.meta_get("absent").await.unwrap(),
        None,
        "a plain read sets nothing"
    );
    assert_eq!(s.meta_get("absent").await.unwrap(), None);
}
