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

/// A fixed piece of pure CPU work (a xorshift walk over a small table,
/// 4,096 steps), timed as [`per_op`] times an operation: the run's gauge of
/// how fast this shared machine is at the moment. Its median moves with
/// the host's load as every figure of the run does, so a goal in absolute
/// time can be read against it.
pub fn reference(name: &str) -> Sample {
    let mut table = [0u64; 256];
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for slot in table.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *slot = state;
    }
    let mut inputs = [state];
    let values = per_op(&mut inputs, 400, 4, |s| {
        let mut x = *s;
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x = x.wrapping_add(table.get((x & 0xff) as usize).copied().unwrap_or(0));
        }
        *s = std::hint::black_box(x);
    });
    Sample::new(name, values)
}
