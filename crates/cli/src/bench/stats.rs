//! Small statistics for benchmark reports: nearest-rank percentiles and the spread of
//! repeated runs.

use std::time::Duration;

/// Nearest-rank percentile of an ascending slice; zero for an empty one.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Minimum, median and maximum of repeated measurements.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 };
        Some(Spread { min: v[0], median, max: v[v.len() - 1] })
    }

    /// The larger distance of min or max from the median, in percent of the median:
    /// "±x %".
    pub fn deviation_pct(&self) -> f64 {
        if self.median == 0.0 {
            return 0.0;
        }
        (self.max - self.median).max(self.median - self.min) / self.median * 100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn spread_reports_min_median_max_and_deviation() {
        let s = Spread::of(&[90.0, 100.0, 120.0]).unwrap();
        assert_eq!(s, Spread { min: 90.0, median: 100.0, max: 120.0 });
        assert_eq!(s.deviation_pct(), 20.0);
        assert_eq!(Spread::of(&[1.0, 3.0]).unwrap().median, 2.0);
        assert_eq!(Spread::of(&[]), None);
    }
}
