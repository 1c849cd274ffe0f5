//! The job state machine.

use serde::{Deserialize, Serialize};

/// Where a job is in its life. Final states never change again, except through an explicit
/// `retry` (replay) of a `failed` or `expired` job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in its lane for the limiter.
    Queued,
    /// Waiting for a future time (delayed start or backoff before a retry).
    Scheduled,
    /// An attempt is in flight under a lease.
    Running,
    /// A 2xx answer was received.
    Succeeded,
    /// Ended without success: a non-retryable answer or retries exhausted.
    Failed,
    /// The deadline (`timeout`) passed before success.
    Expired,
    /// Cancelled by the caller.
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Scheduled,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Expired,
        JobState::Cancelled,
    ];

    /// True once the job can no longer change by itself.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Expired | JobState::Cancelled
        )
    }

    /// The wire and storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Scheduled => "scheduled",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Expired => "expired",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether a caller may cancel a job in this state.
    pub fn can_cancel(self) -> bool {
        !self.is_final()
    }

    /// Whether a caller may replay a job in this state.
    pub fn can_retry(self) -> bool {
        matches!(self, JobState::Failed | JobState::Expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spelling_round_trips() {
        for s in JobState::ALL {
            assert_eq!(JobState::parse(s.as_str()), Some(s), "{s:?}");
        }
        assert!(JobState::parse("done").is_none());
    }

    #[test]
    fn only_failed_and_expired_replay() {
        let replayable: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| s.can_retry())
            .collect();
        assert_eq!(replayable, vec![JobState::Failed, JobState::Expired]);
        assert!(JobState::ALL.iter().all(|s| s.can_cancel() != s.is_final()));
    }
}
