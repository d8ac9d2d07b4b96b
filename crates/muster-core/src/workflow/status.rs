//! Process and step statuses, with orchestrator-core's strings (`orchestrator/workflow.py`: `ProcessStatus`, `StepStatus`), and the one
//! table of process transitions that the store's conditional updates and the API read.

use serde::{Deserialize, Serialize};

crate::named_enum! {
    /// Where a process is. The strings are orchestrator-core's, so its UI and clients read them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ProcessStatus {
        /// Started, queued, not yet claimed by a worker.
        Created = "created",
        /// Claimed by a worker that is running its steps.
        Running = "running",
        /// Waiting for a person's input (an input step's form).
        Suspended = "suspended",
        /// A retry step failed; the process is queued again after a back-off.
        Waiting = "waiting",
        /// Waiting for an outside system to post to its callback URL.
        AwaitingCallback = "awaiting_callback",
        /// A step failed; resume retries it from the last good state.
        Failed = "failed",
        /// Stopped for good by an operator; compensation ran.
        Aborted = "aborted",
        /// Ran to `done`.
        Completed = "completed",
        /// Resumed by an operator or a callback and queued again.
        Resumed = "resumed",
    }
}

impl ProcessStatus {
    /// The statuses this one may move to. Claiming a queued process makes it `running`; a
    /// running process moves on with each step's outcome.
    pub fn next(self) -> &'static [ProcessStatus] {
        use ProcessStatus::*;
        match self {
            Created => &[Running, Aborted],
            Running => &[Running, Suspended, Waiting, AwaitingCallback, Failed, Completed],
            Suspended => &[Resumed, Aborted],
            Waiting => &[Running, Resumed, Aborted],
            AwaitingCallback => &[Resumed, Failed, Aborted],
            Failed => &[Resumed, Aborted],
            Resumed => &[Running, Aborted],
            Aborted | Completed => &[],
        }
    }

    /// The statuses from which `to` may be reached.
    pub fn sources(to: ProcessStatus) -> Vec<ProcessStatus> {
        Self::ALL.into_iter().filter(|s| s.next().contains(&to)).collect()
    }

    /// An operator may resume a process in these statuses (`PUT /resume`).
    pub const RESUMABLE: [ProcessStatus; 3] = [Self::Suspended, Self::Waiting, Self::Failed];

    /// The process is finished and will never run again.
    pub fn is_final(self) -> bool {
        self.next().is_empty()
    }

    /// Every final status ([`ProcessStatus::is_final`]; a test keeps the two equal).
    pub const FINAL: [ProcessStatus; 2] = [Self::Completed, Self::Aborted];

    /// A worker may claim a queued process in these statuses (an expired lease of a
    /// `running` one included: its worker died).
    pub const CLAIMABLE: [ProcessStatus; 4] = [Self::Created, Self::Running, Self::Waiting, Self::Resumed];
}

crate::named_enum! {
    /// The outcome of one executed step, as logged.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum StepStatus {
        Success = "success",
        Skipped = "skipped",
        Suspend = "suspend",
        Waiting = "waiting",
        AwaitingCallback = "awaiting_callback",
        Failed = "failed",
        Abort = "abort",
        Complete = "complete",
    }
}

impl StepStatus {
    /// The process status a step outcome leads to (orchestrator-core's `overall_status`).
    pub fn process_status(self) -> ProcessStatus {
        match self {
            Self::Success | Self::Skipped => ProcessStatus::Running,
            Self::Suspend => ProcessStatus::Suspended,
            Self::Waiting => ProcessStatus::Waiting,
            Self::AwaitingCallback => ProcessStatus::AwaitingCallback,
            Self::Failed => ProcessStatus::Failed,
            Self::Abort => ProcessStatus::Aborted,
            Self::Complete => ProcessStatus::Completed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip() {
        for s in ProcessStatus::ALL {
            assert_eq!(ProcessStatus::parse(s.as_str()), Some(s));
        }
        for s in StepStatus::ALL {
            assert_eq!(StepStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(ProcessStatus::parse("Running"), None);
    }

    #[test]
    fn final_statuses_go_nowhere() {
        assert!(ProcessStatus::Completed.is_final());
        for status in ProcessStatus::ALL {
            assert_eq!(ProcessStatus::FINAL.contains(&status), status.is_final(), "{status:?}");
        }
        assert!(ProcessStatus::Aborted.is_final());
        assert!(!ProcessStatus::Failed.is_final());
        assert!(ProcessStatus::sources(ProcessStatus::Aborted).contains(&ProcessStatus::Failed));
        assert!(!ProcessStatus::sources(ProcessStatus::Aborted).contains(&ProcessStatus::Completed));
    }

    #[test]
    fn every_step_outcome_is_a_legal_move_from_running() {
        for s in StepStatus::ALL {
            let to = s.process_status();
            if to != ProcessStatus::Aborted {
                assert!(ProcessStatus::Running.next().contains(&to), "{s:?}");
            }
        }
    }

    #[test]
    fn resumable_statuses_can_be_resumed() {
        for s in ProcessStatus::RESUMABLE {
            assert!(s.next().contains(&ProcessStatus::Resumed));
        }
    }
}
