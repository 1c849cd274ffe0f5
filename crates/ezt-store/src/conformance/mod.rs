//! The conformance suite: every backend must pass every case.
//!
//! Split like the store traits, one module per capability, and each case asks only for the
//! traits it exercises, so a backend under construction can run the parts it has:
//!
//! ```text
//! ezt_store::conformance_tests!(async { MyStore::new() }.await);          // everything
//! ezt_store::conformance_tests!(tenants: async { MyStore::new() }.await); // one capability
//! ```
//!
//! The capability names are `tenants`, `jobs`, `recovery`, `deliveries`, `secrets`, `lanes`
//! `maintenance`, `workflows` and `cluster`. Each expands to one `#[tokio::test]` per case (named after the case),
//! each with a fresh store made by evaluating the expression again.

mod fixtures;

pub mod cluster;
pub mod deliveries;
pub mod jobs;
pub mod lanes;
pub mod maintenance;
pub mod recovery;
pub mod secrets;
pub mod tenants;
pub mod workflows;

pub use fixtures::new_job;

/// Expands to one `#[tokio::test]` per conformance case for the store made by `$make` (an
/// async expression evaluated afresh for each case): all cases, or those of one capability
/// (`conformance_tests!(jobs: $make)`).
#[macro_export]
macro_rules! conformance_tests {
    (@case $make:expr; $module:ident: $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() {
                $crate::conformance::$module::$case($make).await;
            }
        )*
    };
    (tenants: $make:expr) => {
        $crate::conformance_tests!(@case $make; tenants: tenants_and_keys);
    };
    (jobs: $make:expr) => {
        $crate::conformance_tests!(@case $make; jobs: jobs_are_tenant_scoped, idempotency_dedups,
            lease_fences_completion, retry_schedules_next_attempt, cancel_wins_over_late_completion,
            replay_and_expire, list_paginates_and_filters, chain_children_are_created_with_the_outcome,
            chain_children_render_their_parents_answer, attempts_keep_region_node_and_reason);
    };
    (recovery: $make:expr) => {
        $crate::conformance_tests!(@case $make; recovery: recover_releases_running,
            recover_records_interrupted_attempt, recover_releases_only_that_holders_leases);
    };
    (deliveries: $make:expr) => {
        $crate::conformance_tests!(@case $make; deliveries: final_states_create_webhook_deliveries,
            deliveries_end_and_redeliver, delivery_regions_round_trip);
    };
    (secrets: $make:expr) => {
        $crate::conformance_tests!(@case $make; secrets: webhook_secrets_rotate, meta_is_set_once);
    };
    (lanes: $make:expr) => {
        $crate::conformance_tests!(@case $make; lanes: lane_states_persist, a_pin_changes_only_the_pin);
    };
    (maintenance: $make:expr) => {
        $crate::conformance_tests!(@case $make; maintenance: purge_removes_old_finished_jobs);
    };
    (workflows: $make:expr) => {
        $crate::conformance_tests!(@case $make; workflows: a_step_end_advances_its_run_once);
        $crate::conformance_tests!(@case $make; workflows: a_run_end_creates_its_webhook_deliveries_in_the_same_commit);
        $crate::conformance_tests!(@case $make; workflows: a_runs_key_admits_it_once_per_tenant);
        $crate::conformance_tests!(@case $make; workflows: cancel_and_resume_change_the_run_and_its_jobs_at_once);
    };
    (cluster: $make:expr) => {
        $crate::conformance_tests!(@case $make; cluster: membership_epochs_and_leases,
            lane_claims_fence_the_attempt_lease, an_owner_reads_what_the_lane_learned,
            an_adopter_is_handed_the_pin, dead_members_are_forgotten_and_epochs_stay_monotonic,
            dead_holders_are_listed,
            waiting_jobs_after_an_id, concurrent_claims_make_one_owner);
    };
    ($make:expr) => {
        $crate::conformance_tests!(tenants: $make);
        $crate::conformance_tests!(jobs: $make);
        $crate::conformance_tests!(recovery: $make);
        $crate::conformance_tests!(deliveries: $make);
        $crate::conformance_tests!(secrets: $make);
        $crate::conformance_tests!(lanes: $make);
        $crate::conformance_tests!(maintenance: $make);
        $crate::conformance_tests!(workflows: $make);
        $crate::conformance_tests!(cluster: $make);
    };
}
