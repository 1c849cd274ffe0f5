//! `TenantStore`: tenants, keys, authentication and revocation.

use ezt_core::{ApiKeyId, TenantId};

use super::fixtures::*;
use crate::*;

/// Tenants, keys, authentication and revocation.
pub async fn tenants_and_keys<S: TenantStore>(s: S) {
    s.create_tenant(tenant(1, "a")).await.unwrap();
    assert!(
        matches!(
            s.create_tenant(tenant(2, "a")).await,
            Err(Error::Conflict(_))
        ),
        "names are unique"
    );
    s.create_tenant(tenant(3, "b")).await.unwrap();
    assert_eq!(s.list_tenants().await.unwrap().len(), 2);
    assert_eq!(
        s.tenant_by_name("b").await.unwrap().unwrap().id,
        TenantId(3)
    );
    let digest = [7u8; 32];
    let key = ApiKeyRecord {
        id: ApiKeyId(9),
        tenant_id: TenantId(1),
        digest,
        prefix: "ezt_live_abcd".into(),
        created_at: 1,
        revoked_at: None,
    };
    s.create_api_key(key).await.unwrap();
    let (t, k) = s
        .authenticate(digest)
        .await
        .unwrap()
        .expect("active key authenticates");
    assert_eq!((t.id, k), (TenantId(1), ApiKeyId(9)));
    assert!(
        s.authenticate([8u8; 32]).await.unwrap().is_none(),
        "unknown digest"
    );
    assert_eq!(
        s.list_api_keys(Some(TenantId(3))).await.unwrap().len(),
        0,
        "keys are per tenant"
    );
    s.revoke_api_key(ApiKeyId(9), 5).await.unwrap();
    assert!(
        s.authenticate(digest).await.unwrap().is_none(),
        "revoked key fails"
    );
    assert_eq!(s.list_api_keys(None).await.unwrap()[0].revoked_at, Some(5));
    assert!(matches!(
        s.revoke_api_key(ApiKeyId(10), 5).await,
        Err(Error::NotFound)
    ));
}
