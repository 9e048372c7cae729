//! The CPU time a rule's evaluation used, on whichever threads polled it.
//!
//! An evaluation timed by the wall clock also counts whatever else ran
//! meanwhile: other tasks of the runtime while the plan yielded (DataFusion
//! operators yield to tokio once their cooperative budget is spent) and
//! other threads the OS scheduled on the core. On a busy core that inflates
//! long evaluations most. [`CpuTimed`] sums, over the polls of a future, the
//! CPU time of the thread doing each poll: the work of that evaluation
//! alone, wherever the runtime moved it between polls.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// A future that also returns the CPU time its polls used.
pub struct CpuTimed<F> {
    inner: Pin<Box<F>>,
    used: Duration,
}

impl<F: Future> CpuTimed<F> {
    pub fn new(inner: F) -> Self {
        CpuTimed {
            inner: Box::pin(inner),
            used: Duration::ZERO,
        }
    }
}

impl<F: Future> Future for CpuTimed<F> {
    type Output = (F::Output, Duration);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let started = thread_cpu_time();
        let poll = self.inner.as_mut().poll(cx);
        let used = thread_cpu_time().saturating_sub(started);
        self.used += used;
        poll.map(|output| (output, self.used))
    }
}

/// CPU time of the calling thread (zero where the OS cannot tell).
#[cfg(unix)]
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to write.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Duration {
    Duration::ZERO
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Spin until this thread has used `cpu` more CPU time.
    fn burn(cpu: Duration) {
        let until = thread_cpu_time() + cpu;
        while thread_cpu_time() < until {
            std::hint::spin_loop();
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_work_of_other_tasks_while_it_yields_is_not_counted() {
        let other = tokio::spawn(async { burn(Duration::from_millis(60)) });
        let started = Instant::now();
        let ((), used) = CpuTimed::new(async {
            // The other task runs here, on this thread.
            tokio::task::yield_now().await;
            burn(Duration::from_millis(5));
        })
        .await;
        let wall = started.elapsed();
        other.await.unwrap();
        assert!(wall >= Duration::from_millis(60), "{wall:?}");
        assert!(used >= Duration::from_millis(5), "{used:?}");
        assert!(used < Duration::from_millis(40), "{used:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_work_of_every_poll_is_summed() {
        let ((), used) = CpuTimed::new(async {
            for _ in 0..3 {
                burn(Duration::from_millis(10));
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(used >= Duration::from_millis(30), "{used:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiting_uses_no_cpu_time() {
        let ((), used) = CpuTimed::new(tokio::time::sleep(Duration::from_millis(100))).await;
        assert!(used < Duration::from_millis(50), "{used:?}");
    }
}
