//! Training checkpoints: model variables (BatchNorm running statistics included), optimizer
//! moments and the training state in one safetensors file, written atomically.
//!
//! Files are `checkpoints/step-{step:08}.safetensors`; the newest few are kept. Resuming takes the
//! newest checkpoint that reads back completely, so a file damaged by a crash (which the atomic
//! rename already prevents) would only cost one checkpoint interval.

use crate::train::optim::AdamW;
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Metadata key holding the JSON training state.
const STATE_KEY: &str = "candle_face_train_state";
/// Prefix of model variables inside a checkpoint.
const MODEL_PREFIX: &str = "model.";

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Training wall time so far, in seconds (summed over resumed runs).
    pub elapsed_s: f64,
    /// Images processed so far.
    pub images_seen: u64,
    /// Validation accuracy of the untrained model, once measured.
    pub val_accuracy_before: Option<f32>,
    /// Validation AUC of the untrained model, once measured.
    pub val_auc_before: Option<f32>,
    /// Steps skipped because the loss was not finite (`--nan-policy skip`).
    pub skipped_steps: u64,
    /// The training options of the run, as JSON, to detect a resume with different options.
    pub options: serde_json::Value,
}

/// The path of the checkpoint for `step` in `dir`.
pub fn checkpoint_path(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step:08}.safetensors"))
}

/// Checkpoint files in `dir`, oldest first (by step number in the name).
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(num) = name
            .strip_prefix("step-")
            .and_then(|r| r.strip_suffix(".safetensors"))
        {
            if let Ok(step) = num.parse::<u64>() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `name` looks like the `tempfile` crate's default `.tmpXXXXXX`: the safetensors writer
/// creates one beside the file it writes and renames it, so a kill during a save leaves it behind.
fn is_tempfile_name(name: &str) -> bool {
    name.len() == 10
        && name.starts_with(".tmp")
        && name[4..].chars().all(|c| c.is_ascii_alphanumeric())
}

/// Removes temporary files left by an interrupted write in `dir` (ours, `.<name>.tmp-<pid>`, and
/// the safetensors writer's `.tmpXXXXXX`).
pub fn remove_stale_temporaries(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if (name.starts_with('.') && name.contains(".tmp-")) || is_tempfile_name(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Writes a checkpoint for `state.step` into `dir` and keeps only the newest `keep` checkpoints.
pub fn save_checkpoint(
    dir: &Path,
    varmap: &VarMap,
    opt: &AdamW,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::Msg("variable map lock poisoned".into()))?;
        for (name, var) in data.iter() {
            tensors.insert(format!("{MODEL_PREFIX}{name}"), var.as_tensor().clone());
        }
    }
    let (opt_state, opt_step) = opt.state();
    if opt_step != state.step {
        return Err(Error::Msg(format!(
            "internal: optimizer step {opt_step} differs from training step {}",
            state.step
        )));
    }
    tensors.extend(opt_state);
    let json = serde_json::to_string(state).map_err(|e| Error::Msg(e.to_string()))?;
    let metadata: HashMap<String, String> = [(STATE_KEY.to_string(), json)].into();
    let path = checkpoint_path(dir, state.step);
    crate::fsutil::write_atomic_with(&path, |tmp| {
        safetensors::serialize_to_file(&tensors, Some(metadata), tmp)
            .map_err(|e| Error::weights(tmp, format!("cannot write checkpoint: {e}")))
    })?;
    let all = list_checkpoints(dir)?;
    if all.len() > keep {
        for (_, old) in &all[..all.len() - keep] {
            let _ = std::fs::remove_file(old);
        }
    }
    Ok(path)
}

/// A checkpoint read back from disk.
#[derive(Debug)]
pub struct Checkpoint {
    /// Where it was read from.
    pub path: PathBuf,
    /// The training state.
    pub state: TrainState,
    /// Model variables by name (without the `model.` prefix).
    pub model: HashMap<String, Tensor>,
    /// Optimizer tensors (`adam.m.*`, `adam.v.*`).
    pub optimizer: HashMap<String, Tensor>,
}

/// Reads one checkpoint file completely.
pub fn read_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::weights(path, format!("damaged checkpoint: {e}")))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get(STATE_KEY))
        .ok_or_else(|| Error::weights(path, "not a candle-face checkpoint (no training state)"))?;
    let state: TrainState = serde_json::from_str(json)
        .map_err(|e| Error::weights(path, format!("invalid training state: {e}")))?;
    let all = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::weights(path, format!("damaged checkpoint: {e}")))?;
    let mut model = HashMap::new();
    let mut optimizer = HashMap::new();
    for (name, t) in all {
        if let Some(n) = name.strip_prefix(MODEL_PREFIX) {
            model.insert(n.to_string(), t);
        } else {
            optimizer.insert(name, t);
        }
    }
    Ok(Checkpoint {
        path: path.to_path_buf(),
        state,
        model,
        optimizer,
    })
}

/// The newest checkpoint in `dir` that reads back completely, with the reasons the newer ones
/// (if any) were passed over.
pub fn latest_good_checkpoint(
    dir: &Path,
    device: &Device,
) -> Result<(Option<Checkpoint>, Vec<String>)> {
    let mut skipped = Vec::new();
    for (_, path) in list_checkpoints(dir)?.into_iter().rev() {
        match read_checkpoint(&path, device) {
            Ok(c) => return Ok((Some(c), skipped)),
            Err(e) => skipped.push(e.to_string()),
        }
    }
    Ok((None, skipped))
}

/// Copies the model variables of a checkpoint into `varmap`, checking names and shapes.
pub fn restore_model(ckpt: &Checkpoint, varmap: &VarMap) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Msg("variable map lock poisoned".into()))?;
    for (name, var) in data.iter() {
        let t = ckpt.model.get(name).ok_or_else(|| {
            Error::weights(&ckpt.path, format!("checkpoint has no tensor {name}"))
        })?;
        if t.shape() != var.shape() {
            return Err(Error::weights(
                &ckpt.path,
                format!(
                    "tensor {name} has shape {:?} in the checkpoint, the model expects {:?}",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
        var.set(&t.to_device(var.device())?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for n in [
            ".tmpAb12Cd",
            ".model.safetensors.tmp-42",
            "step-00000010.safetensors",
            ".tmpfile-long",
            "keep.txt",
        ] {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        remove_stale_temporaries(dir.path());
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".tmpfile-long", "keep.txt", "step-00000010.safetensors"]
        );
    }
}
