//! The real-time interval timer (`ITIMER_REAL`, SIGALRM): the one timer
//! that survives `exec`, so a deadline armed before exec'ing a command
//! fires in that command.

use std::io;
use std::time::Duration;

/// Arms (`Some`) or disarms (`None`) this process's real-time interval
/// timer, `ITIMER_REAL`, which sends SIGALRM once when it expires and
/// replaces whatever was armed before. Unlike POSIX timers it survives
/// `exec`: a deadline armed before exec'ing a command fires in that command.
/// A duration below one microsecond is rounded up to one, since zero would
/// disarm the timer.
pub fn set_alarm_timer(after: Option<Duration>) -> io::Result<()> {
    let value = match after {
        Some(d) => {
            let micros = if d.as_secs() == 0 {
                d.subsec_micros().max(1)
            } else {
                d.subsec_micros()
            };
            libc::timeval {
                tv_sec: saturating_secs(d),
                tv_usec: micros.into(),
            }
        }
        None => libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    let timer = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: value,
    };
    // SAFETY: setitimer reads `timer` and, with a null pointer, writes nothing.
    if unsafe { libc::setitimer(libc::ITIMER_REAL, &timer, std::ptr::null_mut()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The time left on this process's `ITIMER_REAL`; `None` when it is not
/// armed.
pub fn alarm_timer() -> io::Result<Option<Duration>> {
    // SAFETY: getitimer only writes into the stack-local `timer`.
    let timer = unsafe {
        let mut timer: libc::itimerval = std::mem::zeroed();
        if libc::getitimer(libc::ITIMER_REAL, &mut timer) != 0 {
            return Err(io::Error::last_os_error());
        }
        timer
    };
    let left = Duration::new(
        u64::try_from(timer.it_value.tv_sec).unwrap_or(0),
        u32::try_from(timer.it_value.tv_usec).unwrap_or(0) * 1000,
    );
    Ok((!left.is_zero()).then_some(left))
}

/// Whole seconds of `d` as the C library's `time_t`, at most its largest
/// value (`i64::MAX`, or `i32::MAX` where `time_t` has 32 bits). Written
/// without naming `libc::time_t`, which the libc crate marks as about to
/// change on musl.
pub(super) fn saturating_secs<T: TryFrom<u64> + TryFrom<i64> + From<i32>>(d: Duration) -> T {
    T::try_from(d.as_secs())
        .or_else(|_| T::try_from(i64::MAX))
        .unwrap_or_else(|_| T::from(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alarm_timer_is_armed_read_back_and_disarmed() {
        // An hour is long enough never to fire during the test run.
        assert_eq!(alarm_timer().unwrap(), None);
        set_alarm_timer(Some(Duration::from_secs(3600))).unwrap();
        let left = alarm_timer().unwrap().expect("armed");
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
        set_alarm_timer(None).unwrap();
        assert_eq!(alarm_timer().unwrap(), None);
    }
}
