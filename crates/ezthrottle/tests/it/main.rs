//! System tests: the real `ezthrottle` binary over loopback, with a local mock target.
// Helpers are shared between the modules of this one test binary; `pub` there is not API.
#![allow(unreachable_pub)]
// These tests measure real time against a real process: they read the system clock.
#![allow(clippy::disallowed_methods)]

mod support;

mod e2e_at_rest;
mod e2e_chains;
mod e2e_cli;
mod e2e_config;
mod e2e_conn;
mod e2e_crash;
mod e2e_dialects;
mod e2e_jobs;
mod e2e_lanes_bounded;
mod e2e_limits;
mod e2e_logging;
mod e2e_openapi;
mod e2e_postgres;
mod e2e_proxy;
mod e2e_security;
mod e2e_strict;
mod e2e_webhooks;
mod e2e_workflows;
mod fault_clock;
mod fault_cluster;
mod fault_cluster_join;
mod fault_common;
mod fault_disk;
mod fault_hostile;
mod fault_kill;
mod fault_race;
mod fault_regions;
mod fault_reroute;
mod fault_sigterm;
mod fault_spool;
mod fault_webhook_regions;
