//! Timing helpers: per-operation times from repeated batches, summarised by
//! median, p99 and spread.

use std::time::Instant;

use serde::Serialize;

/// Per-operation times in nanoseconds, one per batch.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub name: String,
    pub runs: usize,
    pub median_ns: f64,
    pub p99_ns: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
    #[serde(skip)]
    pub values: Vec<f64>,
}

impl Sample {
    pub fn new(name: &str, mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        let at = |q: f64| -> f64 {
            if values.is_empty() {
                return 0.0;
            }
            let i = ((values.len() - 1) as f64 * q).round() as usize;
            values.get(i).copied().unwrap_or(0.0)
        };
        Sample {
            name: name.to_string(),
            runs: values.len(),
            median_ns: at(0.5),
            p99_ns: at(0.99),
            p10_ns: at(0.1),
            p90_ns: at(0.9),
            values,
        }
    }
}

/// Times `op` over every input, `batch` times each, `rounds` rounds; one
/// value per (round, input): the mean of its batch.
pub fn per_op<T>(
    inputs: &mut [T],
    rounds: usize,
    batch: usize,
    mut op: impl FnMut(&mut T),
) -> Vec<f64> {
    let mut values = Vec::with_capacity(rounds * inputs.len());
    for _ in 0..rounds {
        for input in inputs.iter_mut() {
            let start = Instant::now();
            for _ in 0..batch {
                op(input);
            }
            values.push(start.elapsed().as_nanos() as f64 / batch as f64);
        }
    }
    values
}
