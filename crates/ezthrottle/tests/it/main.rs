//! System tests: the real `ezthrottle` binary over loopback, with a local mock target.

mod support;

mod e2e_cli;
mod e2e_crash;
mod e2e_jobs;
mod e2e_limits;
mod e2e_security;
mod e2e_webhooks;
