//! Model and optimizer set-up: the network's variables, the starting weights of a fine-tune,
//! frozen parameters, the identity head, and the state a resumed run continues from.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::checkpoint::{self, Checkpoint, TrainState};
use super::id_head::IdHead;
use super::optim::AdamW;
use super::options::TrainOptions;
use super::seeded_init::SeededVarMap;
use crate::model::{EmbeddingNet, ModelConfig, TRAINING_ONLY_PREFIX};
use crate::{Error, Result};

/// The model a fine-tune starts from: its config and weights.
pub(crate) type InitModel = (ModelConfig, HashMap<String, Tensor>);

/// The network, its variables and optimizer, ready for the next step.
pub(crate) struct Model {
    /// Every variable: the network's and the identity head's.
    pub varmap: VarMap,
    /// The network being trained.
    pub net: EmbeddingNet,
    /// The starting model, fixed, for `keep_init`.
    pub reference: Option<EmbeddingNet>,
    /// The identity-loss head, with `id_loss`.
    pub id_head: Option<IdHead>,
    /// The optimizer over the trainable, unfrozen variables.
    pub opt: AdamW,
    /// Step counts and figures carried between runs.
    pub state: TrainState,
    /// The checkpoint resumed from.
    pub resumed_from: Option<PathBuf>,
}

impl Model {
    /// Builds the network (and the identity head) for `opts`, starts it from `init`'s weights
    /// unless it resumes, and restores the weights, optimizer moments and state of `resume`.
    pub fn build(
        opts: &TrainOptions,
        init: Option<&InitModel>,
        resume: Option<&Checkpoint>,
        images_per_person: &[usize],
        device: &Device,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        // Fresh weights drawn from the run's seed: the same options give the same run.
        let vb = SeededVarMap::new(varmap.clone(), opts.seed).var_builder(DType::F32, device);
        let net = EmbeddingNet::new(&opts.architecture, vb.clone())?;
        let reference = match init {
            Some((_, tensors)) if opts.keep_init > 0.0 => {
                let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
                Some(EmbeddingNet::new(&opts.architecture, vb)?)
            }
            _ => None,
        };
        let dim = opts.architecture.embedding_dim();
        let id_head = match &opts.id_loss {
            Some(id) => Some(IdHead::new(id, images_per_person, dim, &vb)?),
            None => None,
        };
        if let (Some((_, tensors)), None) = (init, resume) {
            init_varmap(&varmap, tensors, opts.init.as_deref().unwrap_or_default())?;
        }
        let mut opt = AdamW::new(unfrozen(opts, trainable_vars(&varmap)?)?, opts.optimizer)?;
        let mut state = TrainState {
            options: opts.resume_key(),
            ..Default::default()
        };
        let mut resumed_from = None;
        if let Some(c) = resume {
            checkpoint::restore_model(c, &varmap)?;
            opt.load_state(&c.optimizer, c.state.step)
                .map_err(|e| Error::weights(&c.path, e))?;
            state = c.state.clone();
            resumed_from = Some(c.path.clone());
        }
        Ok(Self {
            varmap,
            net,
            reference,
            id_head,
            opt,
            state,
            resumed_from,
        })
    }
}

/// `trainable` without the parameters `opts.freeze` names; an error when a prefix matches no
/// parameter or nothing is left to train.
fn unfrozen(
    opts: &TrainOptions,
    mut trainable: Vec<(String, Var, bool)>,
) -> Result<Vec<(String, Var, bool)>> {
    for prefix in &opts.freeze {
        if !trainable
            .iter()
            .any(|(n, _, _)| n.starts_with(prefix.as_str()))
        {
            return Err(Error::InvalidArgument(format!(
                "--freeze {prefix}: no parameter of the {} model starts with it",
                opts.architecture.name()
            )));
        }
    }
    trainable.retain(|(n, _, _)| !opts.freeze.iter().any(|p| n.starts_with(p.as_str())));
    if trainable.is_empty() {
        return Err(Error::InvalidArgument(
            "--freeze leaves no parameter to train".into(),
        ));
    }
    Ok(trainable)
}

/// Copies the starting weights `tensors` into every variable of `varmap` (fine-tuning); a
/// missing tensor or a shape that differs is an error naming it and `source`.
pub fn init_varmap(varmap: &VarMap, tensors: &HashMap<String, Tensor>, source: &str) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Msg("variable map lock poisoned".into()))?;
    for (name, var) in data.iter() {
        if name.starts_with(TRAINING_ONLY_PREFIX) {
            continue;
        }
        let t = tensors.get(name).ok_or_else(|| {
            Error::weights(
                source,
                format!("has no tensor {name} for the model to start from"),
            )
        })?;
        if t.dims() != var.dims() {
            return Err(Error::weights(
                source,
                format!(
                    "tensor {name} has shape {:?}, the model needs {:?}",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

/// The trainable variables of `varmap` (BatchNorm running statistics excluded), with whether
/// weight decay applies (convolution and linear weights only).
pub fn trainable_vars(varmap: &VarMap) -> Result<Vec<(String, Var, bool)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Msg("variable map lock poisoned".into()))?;
    let mut vars: Vec<(String, Var, bool)> = data
        .iter()
        .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
        .map(|(n, v)| {
            // The identity classifier's rows are normalized in the loss: decay would only
            // shrink them and raise their effective learning rate.
            let decay = n.ends_with(".weight")
                && !n.contains(".bn.")
                && v.rank() > 1
                && !n.starts_with(TRAINING_ONLY_PREFIX);
            (n.clone(), v.clone(), decay)
        })
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// Copies of the BatchNorm running statistics, to put back after a skipped step.
pub(crate) fn bn_stats(varmap: &VarMap) -> Result<Vec<(Var, Tensor)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Msg("variable map lock poisoned".into()))?;
    let mut out = Vec::new();
    for (n, v) in data.iter() {
        if n.ends_with("running_mean") || n.ends_with("running_var") {
            out.push((v.clone(), v.as_tensor().copy()?));
        }
    }
    Ok(out)
}
