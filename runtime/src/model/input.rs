//! Building the `[B, T]` token, position and sequence-id tensors of a packed batch: several
//! samples concatenated in each row, positions restarting at 0, padding as its own sequence.

use burn::tensor::{Device, Int, Tensor, TensorData};

/// One row of a packed batch, built sample by sample on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackedRow {
    pub tokens: Vec<i64>,
    pub positions: Vec<i64>,
    pub seq_ids: Vec<i64>,
    /// Aligned targets (already shifted), `IGNORE_INDEX` where no loss.
    pub targets: Vec<i64>,
}

impl PackedRow {
    /// Appends one sample. `labels` follows transformers (same length as `tokens`, `-100` where
    /// no loss); it is shifted within the sample, so no loss crosses into the next sample.
    pub fn push(&mut self, tokens: &[i64], labels: &[i64]) {
        assert_eq!(tokens.len(), labels.len(), "one label per token");
        let id = self.seq_ids.last().map_or(0, |s| s + 1);
        self.tokens.extend_from_slice(tokens);
        self.positions.extend(0..tokens.len() as i64);
        self.seq_ids.extend(std::iter::repeat_n(id, tokens.len()));
        self.targets.extend(super::shift_labels(labels));
    }

    /// Pads to `len` with `pad` tokens that form their own sequence and carry no loss.
    pub fn pad_to(&mut self, len: usize, pad: i64) {
        let n = len.saturating_sub(self.tokens.len());
        if n == 0 {
            return;
        }
        let id = self.seq_ids.last().map_or(0, |s| s + 1);
        self.tokens.extend(std::iter::repeat_n(pad, n));
        self.positions.extend(0..n as i64);
        self.seq_ids.extend(std::iter::repeat_n(id, n));
        self.targets
            .extend(std::iter::repeat_n(super::IGNORE_INDEX, n));
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Per-token sequence ids `[cu[last]]` from cumulative sample boundaries (`cu_seqlens`, starting
/// at 0): tokens `cu[i]..cu[i+1]` get id `i`.
pub fn seq_ids_from_cu_seqlens(cu_seqlens: &[u32]) -> Vec<i64> {
    cu_seqlens
        .windows(2)
        .enumerate()
        .flat_map(|(i, w)| std::iter::repeat_n(i as i64, (w[1] - w[0]) as usize))
        .collect()
}

/// Positions restarting at 0 at every boundary of `cu_seqlens`.
pub fn positions_from_cu_seqlens(cu_seqlens: &[u32]) -> Vec<i64> {
    cu_seqlens
        .windows(2)
        .flat_map(|w| 0..(w[1] - w[0]) as i64)
        .collect()
}

/// The tensors [`super::CausalLm::forward`] and [`super::loss_sum`] take.
#[derive(Debug, Clone)]
pub struct PackedBatch {
    pub tokens: Tensor<2, Int>,
    pub positions: Tensor<2, Int>,
    pub seq_ids: Tensor<2, Int>,
    pub targets: Tensor<2, Int>,
    /// Tokens whose target is not `IGNORE_INDEX`.
    pub loss_tokens: usize,
}

impl PackedBatch {
    /// Stacks rows of equal length (pad them first with [`PackedRow::pad_to`]).
    pub fn new(rows: &[PackedRow], device: &Device) -> PackedBatch {
        let b = rows.len();
        let t = rows.first().map_or(0, PackedRow::len);
        assert!(
            rows.iter().all(|r| r.len() == t),
            "all rows of a packed batch must have the same length"
        );
        let stack = |f: fn(&PackedRow) -> &Vec<i64>| -> Tensor<2, Int> {
            let v: Vec<i64> = rows.iter().flat_map(|r| f(r).iter().copied()).collect();
            Tensor::from_data(TensorData::new(v, [b, t]), device)
        };
        PackedBatch {
            tokens: stack(|r| &r.tokens),
            positions: stack(|r| &r.positions),
            seq_ids: stack(|r| &r.seq_ids),
            targets: stack(|r| &r.targets),
            loss_tokens: rows
                .iter()
                .flat_map(|r| &r.targets)
                .filter(|&&x| x != super::IGNORE_INDEX)
                .count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cu_seqlens_table() {
        // (cu_seqlens, seq_ids, positions)
        let cases: &[(&[u32], &[i64], &[i64])] = &[
            (&[0, 3], &[0, 0, 0], &[0, 1, 2]),
            (&[0, 2, 5], &[0, 0, 1, 1, 1], &[0, 1, 0, 1, 2]),
            (&[0, 1, 2, 4], &[0, 1, 2, 2], &[0, 0, 0, 1]),
            (&[0], &[], &[]),
        ];
        for (cu, ids, pos) in cases {
            assert_eq!(seq_ids_from_cu_seqlens(cu), *ids, "{cu:?}");
            assert_eq!(positions_from_cu_seqlens(cu), *pos, "{cu:?}");
        }
    }

    #[test]
    fn push_shifts_labels_within_each_sample_and_pads_as_its_own_sequence() {
        let mut r = PackedRow::default();
        r.push(&[5, 6, 7], &[-100, 6, 7]);
        r.push(&[8, 9], &[-100, 9]);
        r.pad_to(7, 0);
        assert_eq!(r.tokens, [5, 6, 7, 8, 9, 0, 0]);
        assert_eq!(r.positions, [0, 1, 2, 0, 1, 0, 1]);
        assert_eq!(r.seq_ids, [0, 0, 0, 1, 1, 2, 2]);
        assert_eq!(r.targets, [6, 7, -100, 9, -100, -100, -100]);
    }
}
