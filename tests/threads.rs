//! `Embedder` and `Verifier` are `Send + Sync`, and several threads sharing one give the same
//! results as one thread.

use candle_face::infer::{Embedder, Verifier};
use std::sync::Arc;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn shared_embedder_gives_identical_results_across_threads() {
    assert_send_sync::<Embedder>();
    assert_send_sync::<Verifier>();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    candle_face::synthetic::write_untrained_model(&model, 0.7, true).unwrap();
    let imgs: Vec<_> = (0..6)
        .map(|i| {
            let p = dir.path().join(format!("{i}.png"));
            candle_face::synthetic::Identity::new(3, i % 3)
                .render(48, i)
                .save(&p)
                .unwrap();
            p
        })
        .collect();

    let embedder = Arc::new(Embedder::load(&model).unwrap().with_batch_size(2));
    let want = embedder
        .embed_images(&imgs)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let verifier = Arc::new(Verifier::new(Embedder::load(&model).unwrap(), None).unwrap());
    let want_v = verifier.verify_paths(&imgs[0], &imgs[1]).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (e, v, imgs) = (embedder.clone(), verifier.clone(), imgs.clone());
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for _ in 0..3 {
                    out.push((
                        e.embed_images(&imgs).unwrap().to_vec2::<f32>().unwrap(),
                        v.verify_paths(&imgs[0], &imgs[1]).unwrap(),
                    ));
                }
                out
            })
        })
        .collect();
    for h in handles {
        for (emb, verdict) in h.join().unwrap() {
            assert_eq!(emb, want);
            assert_eq!(verdict, want_v);
        }
    }
}
