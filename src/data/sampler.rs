//! P×K batch sampling for triplet mining ("batch hard", Hermans, Beyer & Leibe 2017, *In
//! Defense of the Triplet Loss for Person Re-Identification*): each batch holds P people with
//! K images each, so every anchor has K−1 positives and (P−1)·K negatives in the batch.
//!
//! Rules:
//! - Only people with at least two images are *eligible*: a one-image person gives no
//!   positive pair, so the sampler skips them (they can still serve elsewhere, e.g. as
//!   negatives in evaluation).
//! - People are drawn without replacement within a cycle: the eligible list is shuffled and
//!   walked P at a time; when it runs out it is reshuffled (the people already in the batch
//!   being completed are not repeated). Every eligible person appears once per cycle.
//! - Within a person: K distinct images when the person has at least K; otherwise every image
//!   once plus `K − n` more drawn **with replacement**, so the group still has K entries.
//! - The whole stream is a function of the seed: [`PkSampler::skip`] fast-forwards to a step.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::{Error, Result};

/// Draws P×K batches of `(label, image index within person)`.
#[derive(Debug, Clone)]
pub struct PkSampler {
    counts: Vec<usize>,
    eligible: Vec<usize>,
    p: usize,
    k: usize,
    rng: StdRng,
    cycle: Vec<usize>,
    pos: usize,
    batches_drawn: u64,
}

impl PkSampler {
    /// A sampler over people with `images_per_person[label]` images.
    ///
    /// If fewer than `p` people are eligible, P is reduced to their number (see [`p`](Self::p)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `p < 2`, `k < 2`, or fewer than two people have two or
    /// more images.
    pub fn new(images_per_person: &[usize], p: usize, k: usize, seed: u64) -> Result<Self> {
        if p < 2 {
            return Err(Error::InvalidArgument(format!(
                "a P×K batch needs at least 2 people per batch to form negatives, got P = {p}"
            )));
        }
        if k < 2 {
            return Err(Error::InvalidArgument(format!(
                "a P×K batch needs at least 2 images per person to form positives, got K = {k}"
            )));
        }
        let eligible: Vec<usize> = images_per_person
            .iter()
            .enumerate()
            .filter(|(_, &n)| n >= 2)
            .map(|(i, _)| i)
            .collect();
        if eligible.len() < 2 {
            return Err(Error::InvalidArgument(format!(
                "triplet training needs at least 2 people with 2 or more images, found {} \
                 (of {} people); add images, or use a dataset with more repeated identities",
                eligible.len(),
                images_per_person.len()
            )));
        }
        let p = p.min(eligible.len());
        let mut rng = StdRng::seed_from_u64(seed);
        let mut cycle = eligible.clone();
        cycle.shuffle(&mut rng);
        Ok(PkSampler {
            counts: images_per_person.to_vec(),
            eligible,
            p,
            k,
            rng,
            cycle,
            pos: 0,
            batches_drawn: 0,
        })
    }

    /// People per batch (possibly reduced from the requested P).
    pub fn p(&self) -> usize {
        self.p
    }

    /// Images per person in a batch.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Batch size, P×K.
    pub fn batch_size(&self) -> usize {
        self.p * self.k
    }

    /// Labels of the people the sampler draws from (those with at least two images).
    pub fn eligible(&self) -> &[usize] {
        &self.eligible
    }

    /// Batches drawn so far (the step of the next batch).
    pub fn batches_drawn(&self) -> u64 {
        self.batches_drawn
    }

    /// `ceil(images of eligible people / (P·K))`: batches that show about as many images as
    /// the eligible part of the dataset holds.
    pub fn batches_per_epoch(&self) -> usize {
        let total: usize = self.eligible.iter().map(|&i| self.counts[i]).sum();
        total.div_ceil(self.batch_size()).max(1)
    }

    /// The next person of the cycle, reshuffling at its end; never one in `taken`.
    fn next_person(&mut self, taken: &[usize]) -> usize {
        loop {
            if self.pos >= self.cycle.len() {
                self.cycle.shuffle(&mut self.rng);
                self.pos = 0;
            }
            let person = self.cycle[self.pos];
            if !taken.contains(&person) {
                self.pos += 1;
                return person;
            }
            // Only after a reshuffle can a person of the current batch come up again: move it
            // to the end of the fresh cycle and continue (P ≤ eligible people, so this ends).
            let item = self.cycle.remove(self.pos);
            self.cycle.push(item);
        }
    }

    /// The next batch: P groups of K `(label, image index)` pairs, group by group.
    pub fn next_batch(&mut self) -> Vec<(usize, usize)> {
        let mut batch = Vec::with_capacity(self.batch_size());
        let mut taken = Vec::with_capacity(self.p);
        for _ in 0..self.p {
            let person = self.next_person(&taken);
            taken.push(person);
            let n = self.counts[person];
            if n >= self.k {
                for idx in rand::seq::index::sample(&mut self.rng, n, self.k) {
                    batch.push((person, idx));
                }
            } else {
                let mut all: Vec<usize> = (0..n).collect();
                all.shuffle(&mut self.rng);
                for _ in n..self.k {
                    all.push(self.rng.random_range(0..n));
                }
                batch.extend(all.into_iter().map(|idx| (person, idx)));
            }
        }
        self.batches_drawn += 1;
        batch
    }

    /// Draws and discards `steps` batches (resuming a run at a given step; index work only).
    pub fn skip(&mut self, steps: u64) {
        for _ in 0..steps {
            self.next_batch();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn shape_groups_and_distinct_labels() {
        let counts = [5, 1, 3, 8, 2, 0, 4, 6];
        let mut s = PkSampler::new(&counts, 3, 4, 1).unwrap();
        assert_eq!(s.p(), 3);
        for _ in 0..50 {
            let b = s.next_batch();
            assert_eq!(b.len(), 12);
            let mut labels = HashSet::new();
            for g in b.chunks(4) {
                let l = g[0].0;
                assert!(g.iter().all(|&(x, _)| x == l));
                assert!(counts[l] >= 2, "ineligible person {l} sampled");
                assert!(g.iter().all(|&(_, i)| i < counts[l]));
                if counts[l] >= 4 {
                    // Without replacement when the person has ≥ K images.
                    let idx: HashSet<_> = g.iter().map(|&(_, i)| i).collect();
                    assert_eq!(idx.len(), 4);
                } else {
                    // Fewer than K: every image appears at least once.
                    let idx: HashSet<_> = g.iter().map(|&(_, i)| i).collect();
                    assert_eq!(idx.len(), counts[l]);
                }
                assert!(labels.insert(l), "label {l} twice in one batch");
            }
        }
    }

    #[test]
    fn deterministic_by_seed_and_skip_resumes() {
        let counts: Vec<usize> = (0..30).map(|i| 2 + i % 5).collect();
        let draw = |seed, n| {
            let mut s = PkSampler::new(&counts, 4, 3, seed).unwrap();
            (0..n).map(|_| s.next_batch()).collect::<Vec<_>>()
        };
        assert_eq!(draw(9, 20), draw(9, 20));
        assert_ne!(draw(9, 20), draw(10, 20));
        let full = draw(9, 20);
        let mut s = PkSampler::new(&counts, 4, 3, 9).unwrap();
        s.skip(13);
        assert_eq!(s.batches_drawn(), 13);
        assert_eq!(s.next_batch(), full[13]);
    }

    #[test]
    fn every_eligible_person_each_cycle() {
        // 10 eligible people, P = 3: batches 0..3 cover 9 of the first cycle and one more; over
        // the first 10 people drawn, all 10 distinct people appear.
        let counts = [2usize; 10];
        let mut s = PkSampler::new(&counts, 3, 2, 5).unwrap();
        let mut order = Vec::new();
        for _ in 0..10 {
            for g in s.next_batch().chunks(2) {
                order.push(g[0].0);
            }
        }
        for cycle in 0..3 {
            let seen: HashSet<_> = order[cycle * 10..cycle * 10 + 10].iter().collect();
            assert_eq!(seen.len(), 10, "cycle {cycle}: {order:?}");
        }
    }

    #[test]
    fn p_reduced_and_errors() {
        let s = PkSampler::new(&[3, 3, 1, 1], 8, 2, 0).unwrap();
        assert_eq!(s.p(), 2);
        assert_eq!(s.batches_per_epoch(), 2); // 6 images / 4 per batch
        let e = PkSampler::new(&[3, 1, 1], 8, 2, 0).unwrap_err().to_string();
        assert!(e.contains("at least 2 people with 2 or more images"), "{e}");
        let e = PkSampler::new(&[3, 3, 3], 1, 2, 0).unwrap_err().to_string();
        assert!(e.contains("P = 1"), "{e}");
        assert!(PkSampler::new(&[3, 3, 3], 2, 1, 0).is_err());
        // P equal to the number of eligible people: every batch holds all of them.
        let mut s = PkSampler::new(&[2, 2, 2], 3, 2, 4).unwrap();
        for _ in 0..10 {
            let mut l: Vec<_> = s.next_batch().iter().map(|x| x.0).collect();
            l.dedup();
            l.sort();
            assert_eq!(l, vec![0, 1, 2]);
        }
    }
}
