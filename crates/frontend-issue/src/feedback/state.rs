//! What a request's state shows on its issue: the state label and the
//! reactions.

use youops_core::model::State;

/// Labels that show the state of the latest request.
pub const STATE_LABELS: [&str; 4] = [
    "youops:pending-approval",
    "youops:running",
    "youops:succeeded",
    "youops:failed",
];

/// The state label for `state` (`None`: no state label, e.g. cancelled).
pub fn state_label(state: State) -> Option<&'static str> {
    match state {
        State::Received => None,
        State::PendingApproval => Some(STATE_LABELS[0]),
        State::Approved | State::Running => Some(STATE_LABELS[1]),
        State::Succeeded => Some(STATE_LABELS[2]),
        State::Failed
        | State::TimedOut
        | State::Interrupted
        | State::Invalid
        | State::Denied
        | State::Rejected
        | State::Expired => Some(STATE_LABELS[3]),
        State::Cancelled => None,
    }
}

/// Whether the request was accepted (👀): it got past validation and policy.
pub fn accepted(state: State) -> bool {
    !matches!(state, State::Received | State::Invalid | State::Denied)
}

/// The reaction for an end state: 🚀 on success, 👎 otherwise.
pub fn end_reaction(state: State) -> Option<&'static str> {
    if !state.is_terminal() {
        None
    } else if state == State::Succeeded {
        Some(crate::github::reaction::ROCKET)
    } else {
        Some(crate::github::reaction::MINUS_ONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_a_consistent_label_and_reaction() {
        for s in State::ALL {
            if s.is_terminal() {
                assert!(end_reaction(s).is_some());
            }
            if s == State::Succeeded {
                assert_eq!(state_label(s), Some("youops:succeeded"));
            }
        }
    }
}
