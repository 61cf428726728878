//! Merging rankings from retrievers whose scores do not compare.

use crate::Hit;
use std::collections::HashMap;

/// Reciprocal rank fusion of ranked lists (k = 60 usual): a passage's score is the sum over the lists of 1/(k + rank), rank from 1; dedupe by id; sorted by fused score desc, ties by id.
///
/// Ranks rather than scores, because BM25 and cosine similarity live on
/// unrelated scales; `k` damps the lead of the very first ranks. An id
/// listed twice in one list counts once there, at its best rank. The
/// passage kept is the first one met.
pub fn reciprocal_rank_fusion(lists: &[Vec<Hit>], k: f32) -> Vec<Hit> {
    let mut fused: Vec<Hit> = Vec::new();
    // Summed in f64 so equal rank sets tie exactly whatever the list order.
    let mut sums: Vec<f64> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for list in lists {
        let mut seen = std::collections::HashSet::new();
        for (i, hit) in list.iter().enumerate() {
            let id = hit.passage.id.as_str();
            if !seen.insert(id) {
                continue;
            }
            let score = 1.0 / (f64::from(k) + (i + 1) as f64);
            match at.get(id) {
                Some(&slot) => sums[slot] += score,
                None => {
                    at.insert(id, fused.len());
                    sums.push(score);
                    fused.push(Hit {
                        passage: hit.passage.clone(),
                        score: 0.0,
                    });
                }
            }
        }
    }
    for (hit, sum) in fused.iter_mut().zip(sums) {
        hit.score = sum as f32;
    }
    fused.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.passage.id.cmp(&b.passage.id))
    });
    fused
}
