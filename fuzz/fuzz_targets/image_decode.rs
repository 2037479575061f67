//! Image decoding (with the crate's decoder limits and EXIF handling) followed by the
//! preprocessing recipes and augmentation: any bytes must give an image or an error, never a
//! panic, a hang or an unbounded allocation.
#![no_main]

use candle_face::data::augment::Augment;
use candle_face::data::image_io::decode_image_bytes;
use candle_face::image::preprocess::Preprocess;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = decode_image_bytes(data, None) {
        let small = Preprocess {
            image_size: 16,
            ..Preprocess::compact_default()
        };
        let out = small.prepare(&img);
        assert_eq!((out.width(), out.height()), (16, 16));
        let src = small.prepare_source(&img, 0.15);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(data.len() as u64);
        let aug = Augment::default().apply(&src, 16, &mut rng);
        assert_eq!((aug.width(), aug.height()), (16, 16));
    }
});
