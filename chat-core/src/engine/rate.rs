//! Token buckets, as the generic cell rate algorithm (GCRA): one `Instant` per bucket,
//! exact integer time arithmetic, no floating point and no clock of its own.

use std::time::{Duration, Instant};

use super::config::Rate;

/// One token bucket. `None` rate means unlimited.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    rate: Option<Rate>,
    /// Theoretical arrival time: when the bucket would be full again.
    tat: Option<Instant>,
}

impl Bucket {
    pub(crate) fn new(rate: Option<Rate>) -> Self {
        Self { rate, tat: None }
    }

    /// Takes one token at `now`, or says how long until one is available.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let tat = self.tat.map_or(now, |t| t.max(now));
        let new_tat = tat + rate.interval;
        let allowance = rate.interval * rate.burst;
        let ahead = new_tat.saturating_duration_since(now);
        if ahead > allowance {
            return Err(ahead - allowance);
        }
        self.tat = Some(new_tat);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // tests need a base instant
    fn burst_then_steady_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Some(Rate::per_second(10, 1)));
        for _ in 0..10 {
            assert!(b.take(t0).is_ok());
        }
        let wait = b.take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert_eq!(
            b.take(t0 + Duration::from_millis(400)).unwrap_err(),
            Duration::from_millis(600)
        );
        assert!(b.take(t0 + Duration::from_secs(1)).is_ok());
        assert!(b.take(t0 + Duration::from_secs(1)).is_err());
        // After a long pause the burst is available again, not more.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..10 {
            assert!(b.take(later).is_ok());
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    #[allow(clippy::disallowed_methods)]
    fn unlimited_never_refuses() {
        let t0 = Instant::now();
        let mut b = Bucket::new(None);
        for _ in 0..10_000 {
            assert!(b.take(t0).is_ok());
        }
    }
}
