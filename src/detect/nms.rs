//! Non-maximum suppression, the two variants facenet-pytorch's `detect_face.py` uses:
//! torchvision's `nms` (IoU without the +1 pixel convention, stages 1 and 2) and its own
//! `nms_numpy` (areas with +1, "Union" or "Min" overlap; stage 3 uses "Min").

/// How `nms_plus_one` measures overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Intersection over union.
    Union,
    /// Intersection over the smaller of the two areas.
    Min,
}

/// torchvision's `ops.nms`: keeps boxes greedily by descending score (stable for equal scores),
/// dropping any box whose IoU with a kept box is **greater** than `iou_threshold`.
///
/// Boxes are `[x1, y1, x2, y2]`, areas `(x2 − x1)(y2 − y1)`. Returns the kept indices in order
/// of decreasing score. Arithmetic is f32 like the reference; the threshold comparison is in f64
/// as in torchvision's CPU kernel.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou_threshold: f64) -> Vec<usize> {
    let n = boxes.len().min(scores.len());
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let area: Vec<f32> = boxes[..n]
        .iter()
        .map(|b| (b[2] - b[0]) * (b[3] - b[1]))
        .collect();
    let mut suppressed = vec![false; n];
    let mut keep = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = boxes[i];
        for &j in &order[oi + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            let ovr = inter / (area[i] + area[j] - inter);
            if f64::from(ovr) > iou_threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// facenet-pytorch's `nms_numpy`: areas and intersections with the +1 pixel convention, boxes
/// kept by descending score, a box survives while its overlap with every kept box is at most
/// `threshold`. Returns the kept indices in order of decreasing score (f32 arithmetic and
/// comparison, as numpy 2 does with a Python-float threshold).
pub fn nms_plus_one(
    boxes: &[[f32; 4]],
    scores: &[f32],
    threshold: f32,
    overlap: Overlap,
) -> Vec<usize> {
    let n = boxes.len().min(scores.len());
    // numpy takes the last index of an ascending argsort: the highest score first.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let area: Vec<f32> = boxes[..n]
        .iter()
        .map(|b| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0))
        .collect();
    let mut keep = Vec::new();
    while let Some(i) = order.pop() {
        keep.push(i);
        let bi = boxes[i];
        order.retain(|&j| {
            let bj = boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0]) + 1.0).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1]) + 1.0).max(0.0);
            let inter = w * h;
            let o = match overlap {
                Overlap::Min => inter / area[i].min(area[j]),
                Overlap::Union => inter / (area[i] + area[j] - inter),
            };
            o <= threshold
        });
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_nms_keeps_by_score_and_suppresses_iou_above_threshold() {
        // Box 1 overlaps box 0 with IoU 81/119 ≈ 0.68; box 2 is disjoint; box 3 equals box 2.
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 11.0, 11.0],
            [20.0, 20.0, 30.0, 30.0],
            [20.0, 20.0, 30.0, 30.0],
        ];
        let scores = [0.9, 0.95, 0.5, 0.6];
        assert_eq!(nms(&boxes, &scores, 0.7), vec![1, 0, 3]);
        assert_eq!(nms(&boxes, &scores, 0.5), vec![1, 3]);
        assert!(nms(&[], &[], 0.5).is_empty());
    }

    #[test]
    fn min_overlap_uses_plus_one_areas() {
        // A small box inside a big one: Min overlap 1.0 whatever the big box's size.
        let boxes = [
            [0.0, 0.0, 99.0, 99.0],
            [10.0, 10.0, 19.0, 19.0],
            [200.0, 0.0, 209.0, 9.0],
        ];
        let scores = [0.8, 0.9, 0.7];
        assert_eq!(nms_plus_one(&boxes, &scores, 0.7, Overlap::Min), vec![1, 2]);
        // IoU with +1 areas: 100 / 10000 = 0.01, so both survive under Union.
        assert_eq!(
            nms_plus_one(&boxes, &scores, 0.7, Overlap::Union),
            vec![1, 0, 2]
        );
        // Two boxes sharing exactly half: +1 convention makes [0,9]x[0,9] and [5,14]x[0,9]
        // overlap 50 px of 100 each → Min 0.5.
        let boxes = [[0.0, 0.0, 9.0, 9.0], [5.0, 0.0, 14.0, 9.0]];
        assert_eq!(
            nms_plus_one(&boxes, &[0.9, 0.8], 0.5, Overlap::Min),
            vec![0, 1]
        );
        assert_eq!(
            nms_plus_one(&boxes, &[0.9, 0.8], 0.49, Overlap::Min),
            vec![0]
        );
    }
}
