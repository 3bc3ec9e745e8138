//! CPU time of the load generator's own process, to show that its overhead
//! does not limit what it measures.

use std::io;
use std::time::Duration;

/// User and system CPU time of the whole process (all threads) so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTime {
    /// Reads the process's CPU time with `getrusage(RUSAGE_SELF)`, which
    /// counts every thread, including those that have exited.
    ///
    /// Returns the OS error if the call fails.
    pub fn now() -> io::Result<CpuTime> {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: the pointer is valid for writes of one `rusage`, which
        // getrusage fills completely when it returns 0.
        let status = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
        if status != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: getrusage returned 0, so it initialized the struct; the
        // zeroed start also makes every field a valid integer.
        let usage = unsafe { usage.assume_init() };
        Ok(CpuTime {
            user: from_timeval(usage.ru_utime),
            system: from_timeval(usage.ru_stime),
        })
    }

    /// CPU time spent since `earlier`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

fn from_timeval(value: libc::timeval) -> Duration {
    Duration::from_secs(value.tv_sec as u64) + Duration::from_micros(value.tv_usec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let start = CpuTime::now().unwrap();
        let mut hash = 0u64;
        let begun = std::time::Instant::now();
        while begun.elapsed() < Duration::from_millis(50) {
            hash = hash.wrapping_mul(31).wrapping_add(1);
        }
        std::hint::black_box(hash);
        let spent = CpuTime::now().unwrap().since(start);
        assert!(
            spent.user + spent.system >= Duration::from_millis(20),
            "{spent:?}"
        );
    }
}
