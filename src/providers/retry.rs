//! Bounded retries with exponential backoff and jitter, honouring the server's `Retry-After`.
//!
//! Delay before retry `n` (1-based): `base * 2^(n-1)`, capped at `max_delay`, then scaled by a random
//! factor in [0.5, 1) (so concurrent clients spread out). A `Retry-After` replaces that backoff: the
//! wait is what the server asked for, but never less than the minimum backoff (the first retry's), so
//! `Retry-After: 0` or a date in the past retries soon without hammering. A `Retry-After` longer than
//! the provider's budget (`max_retry_after`: its request timeout) is not waited for: the call fails at
//! once, and the error ([`Retryable::wait_refused`]) says how long the service asked to wait.
//! Only errors that say they are retryable are retried; the last error is returned as is.
//! `on_retry` runs (and its future is awaited) before each wait, so a caller can record a warning
//! event per retry.

use std::future::Future;
use std::time::Duration;

/// An error that knows whether another attempt may succeed.
pub trait Retryable {
    fn retryable(&self) -> bool;
    /// A delay the server asked for.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
    /// This error, now saying that the service asked to wait `asked`, more than `budget`.
    fn wait_refused(self, _asked: Duration, _budget: Duration) -> Self
    where
        Self: Sized,
    {
        self
    }
}

impl Retryable for super::http::HttpError {
    fn retryable(&self) -> bool {
        super::http::HttpError::retryable(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        super::http::HttpError::retry_after(self)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry, before jitter.
    pub base: Duration,
    /// Longest computed backoff.
    pub max_delay: Duration,
    /// Longest wait a `Retry-After` may ask for (the provider's budget); a longer one fails the
    /// call at once.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// `retries` retries after the first attempt, 1 s base, 30 s cap, `Retry-After` up to 60 s.
    pub fn with_retries(retries: u32) -> RetryPolicy {
        RetryPolicy {
            attempts: retries.saturating_add(1),
            base: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(60),
        }
    }

    /// `retries` retries, and a `Retry-After` waited for only up to `budget` (the provider's
    /// request timeout: a longer wait would outlast what the call may take).
    pub fn for_provider(retries: u32, budget: Duration) -> RetryPolicy {
        RetryPolicy {
            max_retry_after: budget,
            ..RetryPolicy::with_retries(retries)
        }
    }

    /// The wait before retry number `retry` (1-based) after `error`: the server's `Retry-After`
    /// (at least the minimum backoff, at most the budget), else the backoff.
    pub fn delay<E: Retryable>(&self, retry: u32, error: &E) -> Duration {
        match error.retry_after() {
            Some(asked) => asked.min(self.max_retry_after).max(self.backoff(1)),
            None => self.backoff(retry),
        }
    }

    /// The `Retry-After` of `error` when it is longer than the budget: not to be waited for.
    pub fn refuses<E: Retryable>(&self, error: &E) -> Option<Duration> {
        error
            .retry_after()
            .filter(|asked| *asked > self.max_retry_after)
    }

    /// `base * 2^(retry-1)`, capped at `max_delay`, times a random factor in [0.5, 1).
    fn backoff(&self, retry: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(
                1u32.checked_shl(retry.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(self.max_delay);
        exp.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::with_retries(3)
    }
}

/// Runs `op(attempt)` (attempt is 1-based) until it succeeds, fails with an error that is not
/// retryable, or the attempts run out. Before each wait, `on_retry(retry, &error, delay)` is called
/// (retry is 1-based) and its future awaited.
pub async fn retry<T, E, Op, Fut, N, NFut>(
    policy: &RetryPolicy,
    mut op: Op,
    mut on_retry: N,
) -> Result<T, E>
where
    E: Retryable,
    Op: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    N: FnMut(u32, &E, Duration) -> NFut,
    NFut: Future<Output = ()>,
{
    let attempts = policy.attempts.max(1);
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable() => {
                if let Some(asked) = policy.refuses(&e) {
                    return Err(e.wait_refused(asked, policy.max_retry_after));
                }
                if attempt >= attempts {
                    return Err(e);
                }
                let delay = policy.delay(attempt, &e);
                on_retry(attempt, &e, delay).await;
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// An `on_retry` that does nothing.
#[cfg(test)]
fn quietly<E>(_retry: u32, _error: &E, _delay: Duration) -> std::future::Ready<()> {
    std::future::ready(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Debug)]
    struct E {
        retryable: bool,
        after: Option<Duration>,
    }

    impl Retryable for E {
        fn retryable(&self) -> bool {
            self.retryable
        }
        fn retry_after(&self) -> Option<Duration> {
            self.after
        }
    }

    fn tiny(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_retry_after: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn retries_until_success_and_reports_each_retry() {
        let seen = RefCell::new(Vec::new());
        let out = retry(
            &tiny(5),
            |attempt| async move {
                if attempt < 3 {
                    Err(E {
                        retryable: true,
                        after: None,
                    })
                } else {
                    Ok(attempt)
                }
            },
            |n, _e: &E, d| {
                seen.borrow_mut().push((n, d));
                std::future::ready(())
            },
        )
        .await;
        assert_eq!(out.unwrap(), 3);
        let seen = seen.into_inner();
        assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2]);
        // Backoff doubles: retry 1 waits within [0.5, 1) ms, retry 2 within [1, 2) ms.
        assert!(seen[0].1 >= Duration::from_micros(500) && seen[0].1 < Duration::from_millis(1));
        assert!(seen[1].1 >= Duration::from_millis(1) && seen[1].1 < Duration::from_millis(2));
    }

    #[tokio::test]
    async fn stops_at_the_attempt_bound_and_on_non_retryable_errors() {
        let calls = RefCell::new(0);
        let out: Result<(), E> = retry(
            &tiny(3),
            |_| {
                *calls.borrow_mut() += 1;
                async {
                    Err(E {
                        retryable: true,
                        after: None,
                    })
                }
            },
            quietly,
        )
        .await;
        assert!(out.is_err());
        assert_eq!(*calls.borrow(), 3);

        *calls.borrow_mut() = 0;
        let out: Result<(), E> = retry(
            &tiny(3),
            |_| {
                *calls.borrow_mut() += 1;
                async {
                    Err(E {
                        retryable: false,
                        after: None,
                    })
                }
            },
            quietly,
        )
        .await;
        assert!(out.is_err());
        assert_eq!(*calls.borrow(), 1);
    }

    #[test]
    fn retry_after_raises_the_delay_but_is_capped() {
        let p = tiny(3);
        let asked = E {
            retryable: true,
            after: Some(Duration::from_millis(20)),
        };
        assert!(p.delay(1, &asked) >= Duration::from_millis(20));
        let greedy = E {
            retryable: true,
            after: Some(Duration::from_secs(3600)),
        };
        assert_eq!(p.delay(1, &greedy), Duration::from_millis(50));
        assert_eq!(p.refuses(&greedy), Some(Duration::from_secs(3600)));
        assert_eq!(p.refuses(&asked), None);
        let none = E {
            retryable: true,
            after: None,
        };
        assert!(p.delay(10, &none) <= Duration::from_millis(4));
    }

    #[test]
    fn a_retry_after_of_zero_waits_the_minimum_backoff_whatever_the_retry() {
        let p = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(5),
        };
        let now = E {
            retryable: true,
            after: Some(Duration::ZERO),
        };
        let plain = E {
            retryable: true,
            after: None,
        };
        for _ in 0..50 {
            // Retry 6 would back off 3.2 s; the server said "now": the first retry's 50..100 ms.
            let d = p.delay(6, &now);
            assert!(
                d >= Duration::from_millis(50) && d < Duration::from_millis(100),
                "{d:?}"
            );
            assert!(p.delay(6, &plain) >= Duration::from_millis(1600));
        }
    }

    #[derive(Debug, PartialEq)]
    enum Refusable {
        Busy(Duration),
        Refused { asked: Duration, budget: Duration },
    }

    impl Retryable for Refusable {
        fn retryable(&self) -> bool {
            matches!(self, Refusable::Busy(_))
        }
        fn retry_after(&self) -> Option<Duration> {
            match self {
                Refusable::Busy(d) => Some(*d),
                Refusable::Refused { .. } => None,
            }
        }
        fn wait_refused(self, asked: Duration, budget: Duration) -> Self {
            Refusable::Refused { asked, budget }
        }
    }

    #[tokio::test]
    async fn a_retry_after_over_the_budget_fails_at_once_saying_how_long() {
        let calls = RefCell::new(0);
        let retries = RefCell::new(0);
        let out: Result<(), Refusable> = retry(
            &tiny(5),
            |_| {
                *calls.borrow_mut() += 1;
                async { Err(Refusable::Busy(Duration::from_secs(3600))) }
            },
            |_, _: &Refusable, _| {
                *retries.borrow_mut() += 1;
                std::future::ready(())
            },
        )
        .await;
        assert_eq!(
            out,
            Err(Refusable::Refused {
                asked: Duration::from_secs(3600),
                budget: Duration::from_millis(50)
            })
        );
        assert_eq!((*calls.borrow(), *retries.borrow()), (1, 0));
    }
}
