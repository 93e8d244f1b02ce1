//! Overlapping windows for sequences longer than the model limit.

/// Start offsets of windows of `window` residues covering `length` residues with at least
/// `overlap` residues shared between neighbours. The last window ends at the sequence end.
pub fn plan_windows(length: usize, window: usize, overlap: usize) -> Vec<usize> {
    if length <= window {
        return vec![0];
    }
    let stride = window.saturating_sub(overlap).max(1);
    let mut starts = Vec::new();
    let mut start = 0;
    while start + window < length {
        starts.push(start);
        start += stride;
    }
    starts.push(length - window);
    starts
}

/// Averages per-residue rows of overlapping windows into one `(length × dim)` matrix.
///
/// `windows` holds, for each start offset, a row-major `(window_len × dim)` block.
pub fn merge_windows(length: usize, dim: usize, windows: &[(usize, &[f32])]) -> Vec<f32> {
    let mut sum = vec![0f32; length * dim];
    let mut count = vec![0u32; length];
    for (start, block) in windows {
        let rows = block.len() / dim.max(1);
        for r in 0..rows {
            let pos = start + r;
            if pos >= length {
                break;
            }
            count[pos] += 1;
            let dst = &mut sum[pos * dim..(pos + 1) * dim];
            for (d, s) in dst.iter_mut().zip(&block[r * dim..(r + 1) * dim]) {
                *d += s;
            }
        }
    }
    for (pos, c) in count.iter().enumerate() {
        if *c > 1 {
            let inv = 1.0 / *c as f32;
            sum[pos * dim..(pos + 1) * dim]
                .iter_mut()
                .for_each(|v| *v *= inv);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_sequence_with_overlap() {
        assert_eq!(plan_windows(100, 200, 50), vec![0]);
        let starts = plan_windows(2500, 1022, 256);
        assert_eq!(starts.first(), Some(&0));
        assert_eq!(starts.last(), Some(&(2500 - 1022)));
        for w in starts.windows(2) {
            assert!(w[1] > w[0]);
            assert!(w[0] + 1022 - w[1] >= 256, "overlap too small: {w:?}");
        }
    }

    #[test]
    fn merge_averages_overlaps() {
        // length 5, dim 1, windows of 3 at 0 and 2: position 2 is covered twice.
        let a = [1.0, 1.0, 1.0];
        let b = [3.0, 3.0, 3.0];
        let merged = merge_windows(5, 1, &[(0, &a), (2, &b)]);
        assert_eq!(merged, vec![1.0, 1.0, 2.0, 3.0, 3.0]);
    }
}
