//! `config.json` parsing and validation: any text gives a config or an error naming the file.
#![no_main]

use candle_face::model::ModelConfig;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ModelConfig::from_json(text, Path::new("fuzz/config.json")) {
        Ok(cfg) => {
            // A config that parses round-trips through its own JSON.
            let again = serde_json::to_string(&cfg).unwrap();
            ModelConfig::from_json(&again, Path::new("fuzz/config.json")).unwrap();
        }
        Err(e) => assert!(e.to_string().contains("config.json")),
    }
});
