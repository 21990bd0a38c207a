use std::time::Duration;

use rand::Rng;

/// Exponential backoff with jitter between attempts: attempt `n` (1-based) waits a random
/// time in `[d/2, d]` where `d = min(base * 2^(n-1), max)`. The jitter spreads retries of
/// tasks that failed together (a downstream outage) instead of stampeding back at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(1), max: Duration::from_secs(3600) }
    }
}

impl Backoff {
    /// Delay before the retry that follows failed attempt `attempt`.
    pub fn delay(&self, attempt: i32) -> Duration {
        let exp = attempt.clamp(1, 31) as u32 - 1;
        let full = self.base.saturating_mul(2u32.saturating_pow(exp)).min(self.max);
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rand::rng().random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_bounds_and_caps() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(2) };
        for _ in 0..200 {
            let d1 = b.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100), "{d1:?}");
            let d3 = b.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400), "{d3:?}");
            let d20 = b.delay(20);
            assert!(d20 >= Duration::from_secs(1) && d20 <= Duration::from_secs(2), "{d20:?}");
        }
    }

    #[test]
    fn jitter_actually_varies() {
        let b = Backoff { base: Duration::from_secs(10), max: Duration::from_secs(60) };
        let samples: std::collections::HashSet<_> = (0..20).map(|_| b.delay(2)).collect();
        assert!(samples.len() > 10);
    }
}
