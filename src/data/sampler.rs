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
//! - Optionally ([`PkSampler::with_singletons`]) S of the P groups come from one-image people:
//!   the group is K copies of that one image, which the loader augments independently, so its
//!   "positives" are views of one photo (as in SimCLR-style self-supervision) while the person
//!   still serves as a negative for everyone else. One-image people are usually most of a
//!   folder (2872 of LFW View 1's 4038), so this multiplies the identities a run sees.

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
    singles: Vec<usize>,
    singles_per_batch: usize,
    single_rng: StdRng,
    single_pos: usize,
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
            singles: Vec::new(),
            singles_per_batch: 0,
            single_rng: StdRng::seed_from_u64(seed ^ 0x5349_4e47_4c45_5321),
            single_pos: 0,
        })
    }

    /// Makes `s` of every batch's P groups one-image people (K augmented copies of their one
    /// image); the other `P − s` groups stay people with two or more images. `s = 0` is the
    /// plain sampler. Call before drawing any batch. The first `P − s` groups of each batch are
    /// drawn exactly as a plain sampler with `P − s` people per batch would draw them, and
    /// an epoch ([`batches_per_epoch`](Self::batches_per_epoch)) stays one pass over the
    /// multi-image people.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `s ≥ P` (at least one group must hold real positives) or
    /// fewer than `s` people have exactly one image.
    pub fn with_singletons(mut self, s: usize) -> Result<Self> {
        if s == 0 {
            return Ok(self);
        }
        if s >= self.p {
            return Err(Error::InvalidArgument(format!(
                "--singletons {s} must be smaller than the people per batch ({}): at least one \
                 group needs real positives",
                self.p
            )));
        }
        let singles: Vec<usize> = self
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n == 1)
            .map(|(i, _)| i)
            .collect();
        if singles.len() < s {
            return Err(Error::InvalidArgument(format!(
                "--singletons {s}: only {} people have exactly one image",
                singles.len()
            )));
        }
        self.singles = singles;
        self.singles.shuffle(&mut self.single_rng);
        self.singles_per_batch = s;
        Ok(self)
    }

    /// One-image groups per batch (see [`with_singletons`](Self::with_singletons)).
    pub fn singletons(&self) -> usize {
        self.singles_per_batch
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

    /// `ceil(images of eligible people / ((P − S)·K))`: batches that show about as many images
    /// of people with two or more images as the dataset holds (S = singletons per batch).
    pub fn batches_per_epoch(&self) -> usize {
        let total: usize = self.eligible.iter().map(|&i| self.counts[i]).sum();
        total
            .div_ceil((self.p - self.singles_per_batch) * self.k)
            .max(1)
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
        for _ in 0..self.p - self.singles_per_batch {
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
        // A batch's singles are consecutive in their cycle, so none repeats within a batch;
        // when fewer than S remain in the cycle it is reshuffled (those few wait a cycle).
        if self.singles_per_batch > 0
            && self.single_pos + self.singles_per_batch > self.singles.len()
        {
            self.singles.shuffle(&mut self.single_rng);
            self.single_pos = 0;
        }
        for _ in 0..self.singles_per_batch {
            let person = self.singles[self.single_pos];
            self.single_pos += 1;
            batch.extend(std::iter::repeat_n((person, 0), self.k));
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
    fn singletons_fill_the_last_groups() {
        // People 0..6 have ≥ 2 images; 6..16 have one.
        let mut counts = vec![3usize, 2, 5, 4, 2, 6];
        counts.extend([1usize; 10]);
        let mut s = PkSampler::new(&counts, 4, 3, 7)
            .unwrap()
            .with_singletons(2)
            .unwrap();
        assert_eq!(s.singletons(), 2);
        let mut singles_seen = HashSet::new();
        for _ in 0..30 {
            let b = s.next_batch();
            assert_eq!(b.len(), 12);
            let groups: Vec<_> = b.chunks(3).collect();
            let labels: HashSet<_> = groups.iter().map(|g| g[0].0).collect();
            assert_eq!(labels.len(), 4, "a person twice in one batch: {b:?}");
            for g in &groups[..2] {
                assert!(counts[g[0].0] >= 2);
            }
            for g in &groups[2..] {
                assert_eq!(counts[g[0].0], 1);
                assert!(g.iter().all(|&x| x == (g[0].0, 0)));
                singles_seen.insert(g[0].0);
            }
        }
        // Every one-image person shows up over 30 batches of 2 (three cycles of 10).
        assert_eq!(singles_seen.len(), 10);
        // The multi-image groups follow their own stream: P − S = 2 groups per batch drawn
        // exactly as a plain P = 2 sampler with the same seed would.
        let mut two = PkSampler::new(&counts, 2, 3, 7).unwrap();
        let mut again = PkSampler::new(&counts, 4, 3, 7)
            .unwrap()
            .with_singletons(2)
            .unwrap();
        for _ in 0..10 {
            assert_eq!(two.next_batch(), again.next_batch()[..6].to_vec());
        }
        // Epochs count passes over the multi-image people: 22 images / (2 groups × 3).
        assert_eq!(again.batches_per_epoch(), 4);
        // Errors: S ≥ P, or not enough one-image people.
        let e = PkSampler::new(&counts, 4, 3, 7)
            .unwrap()
            .with_singletons(4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("smaller than the people per batch"), "{e}");
        let e = PkSampler::new(&[3, 3, 3, 1], 3, 2, 0)
            .unwrap()
            .with_singletons(2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only 1 people have exactly one image"), "{e}");
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
