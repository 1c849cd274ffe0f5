//! The PostgreSQL store passes the conformance suite, each case in a fresh schema of a real
//! server (`ezt_store_postgres::testing`: EZT_TEST_DATABASE_URL, or one started by
//! scripts/pg.sh for this test process). No PostgreSQL fails these tests; it never skips them.
ezt_store::conformance_tests!({
    let url = ezt_store_postgres::testing::database_url().await;
    ezt_store_postgres::PgStore::connect(&url)
        .await
        .expect("connect and migrate")
});
