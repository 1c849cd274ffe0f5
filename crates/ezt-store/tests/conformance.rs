//! The memory store passes the conformance suite.
ezt_store::conformance_tests!(async { ezt_store::MemoryStore::new() }.await);

/// Capability methods resolve through a `Store` bound without importing the traits.
async fn through_the_supertrait<S: ezt_store::Store>(s: &S) -> bool {
    s.ping().await.is_ok() && s.list_tenants().await.is_ok()
}

#[tokio::test]
async fn a_store_bound_reaches_every_capability() {
    assert!(through_the_supertrait(&ezt_store::MemoryStore::new()).await);
}
