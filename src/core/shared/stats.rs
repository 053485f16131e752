//! Order statistics over samples of `f64`: the median and the two percentile definitions
//! Phoenix reports. Each caller keeps the definition its figures were always given in, so
//! that no printed or stored number changes: the bench reports nearest-rank percentiles of
//! measured latencies, the collector's analysis numpy's linear interpolation ("type 7").

/// Median; NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile (`p` in 0..=1) of unsorted values: the smallest value with at
/// least `p` of the sample at or below it. NaN for no values.
pub fn nearest_rank_percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = (p * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Percentile `p` (0..=1) of a sorted, non-empty sample by linear interpolation between the
/// closest ranks (numpy's default, "type 7").
pub fn linear_percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    let h = p.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let frac = h - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    let value = a + frac * (b - a);
    if value.is_finite() {
        value
    } else {
        a * (1.0 - frac) + b * frac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn median_and_percentile() {
        assert!(median(&[]).is_nan());
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        let v: Vec<f64> = (1..=21).map(f64::from).collect();
        assert_eq!(nearest_rank_percentile(&v, 0.95), 20.0);
        assert_eq!(nearest_rank_percentile(&v, 1.0), 21.0);
        assert_eq!(nearest_rank_percentile(&[7.0], 0.5), 7.0);
    }

    #[test]
    fn percentiles_follow_numpy_linear_interpolation() {
        // numpy.percentile([1, 2, 3, 4], [50, 95, 99]) = [2.5, 3.85, 3.97]
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!(close(linear_percentile_sorted(&v, 0.5), 2.5));
        assert!(close(linear_percentile_sorted(&v, 0.95), 3.85));
        assert!(close(linear_percentile_sorted(&v, 0.99), 3.97));
        assert_eq!(linear_percentile_sorted(&[7.0], 0.99), 7.0);
    }

    #[test]
    fn the_two_definitions_differ_where_expected() {
        // Nearest rank picks a sample value; linear interpolation lands between two.
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(nearest_rank_percentile(&v, 0.5), 2.0);
        assert!(close(linear_percentile_sorted(&v, 0.5), 2.5));
    }
}
