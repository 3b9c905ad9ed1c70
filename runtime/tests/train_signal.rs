//! SIGUSR1 and SIGTERM set the stop flag (a test binary of its own: the handlers are
//! process-wide) and a stop with time left finishes the step, one without abandons it.

use std::time::Duration;

use sftctl_runtime::train::{StopReason, StopSignal};

#[test]
fn signals_set_the_stop_flag_and_grace_decides() {
    let stop = StopSignal::install(Duration::from_secs(30)).unwrap();
    assert_eq!(stop.requested(), None);
    assert!(!stop.should_abandon(Duration::from_secs(3600)));
    signal_hook::low_level::raise(signal_hook::consts::SIGUSR1).unwrap();
    assert_eq!(stop.requested(), Some(StopReason::Warning));
    // 10 s of work fit in 30 s of grace; an hour does not.
    assert!(!stop.should_abandon(Duration::from_secs(10)));
    assert!(stop.should_abandon(Duration::from_secs(3600)));
    // The process survived the signal (the default action of both would have killed it), and
    // a later SIGTERM is recorded too.
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    assert_eq!(stop.requested(), Some(StopReason::Terminate));
}
