//! The memory store passes the conformance suite.
ezt_store::conformance_tests!(async { ezt_store::MemoryStore::new() }.await);
