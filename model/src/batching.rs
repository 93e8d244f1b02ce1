//! Length bucketing: sort by length and cut batches under a token budget, so padding is small.

/// Groups sequence indices into batches. Each batch holds sequences of similar length and at
/// most `max_tokens` tokens counting padding (`batch size × (longest + 2)`); a sequence longer
/// than the budget forms a batch of its own. Longest batches come first.
pub fn plan_batches(lengths: &[usize], max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut longest = 0usize;
    for idx in order {
        let tokens = lengths[idx] + 2;
        let new_longest = longest.max(tokens);
        if !current.is_empty() && new_longest * (current.len() + 1) > max_tokens {
            batches.push(std::mem::take(&mut current));
            longest = tokens;
        } else {
            longest = new_longest;
        }
        current.push(idx);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_once_and_budget_respected() {
        let lengths = vec![10, 300, 50, 52, 1000, 7, 298, 51];
        let batches = plan_batches(&lengths, 700);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i] + 2).max().unwrap();
            assert!(b.len() == 1 || longest * b.len() <= 700, "{b:?}");
        }
        // The 1000-residue sequence is alone; similar lengths end up together.
        assert!(batches.iter().any(|b| b == &vec![4]));
        assert!(batches
            .iter()
            .any(|b| b.contains(&2) && b.contains(&3) && b.contains(&7)));
    }

    #[test]
    fn empty_input_gives_no_batches() {
        assert!(plan_batches(&[], 100).is_empty());
    }
}
