//! dlib's face-recognition ResNet file (`dlib_face_recognition_resnet_model_v1.dat`) into
//! [`DlibResNet`](crate::model::DlibResNet) tensors.
//!
//! dlib serializes a network as nested layers: the loss layer, then one version number per
//! layer from the output end inwards (2 for a computational layer, 1 for the `tag`/`skip`
//! markers that carry no data, 3 for the layer that owns the input), the input layer, and then
//! each computational layer's details **from the input end outwards**, each followed by its
//! training state (three bools and three empty tensors; the innermost one also by an integer).
//! Which tag a residual sum refers to is part of the C++ type, not of the file, so the layers
//! read here are checked against the one topology this crate implements (see
//! [`crate::model::dlib_resnet`]): any other network is refused with the offset of the first
//! layer that does not fit.

use super::dlib_format::{DlibFormatError, DlibReader, Result as ReadResult};
use crate::model::dlib_resnet::{DlibResNetConfig, DlibStage};

/// One computational layer as stored in the file.
#[derive(Debug, Clone)]
enum Layer {
    Con {
        filters: usize,
        c_in: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: (usize, usize),
        weight: Vec<f32>,
        bias: Vec<f32>,
    },
    Affine {
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
    Relu,
    MaxPool(PoolSpec),
    AvgPool(PoolSpec),
    AddPrev,
    Fc {
        outputs: usize,
        inputs: usize,
        /// Row-major (inputs, outputs), as dlib multiplies `x · W`.
        weight: Vec<f32>,
    },
}

/// A pooling layer's window, stride and padding (a 0×0 window: the whole image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PoolSpec {
    window: (usize, usize),
    stride: (usize, usize),
    padding: (usize, usize),
}

/// Tensors by name, each with its shape and values.
pub type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// What a dlib ResNet file holds, ready to be saved as a model folder.
#[derive(Debug, Clone)]
pub struct DlibResNetFile {
    /// The architecture read from the file.
    pub config: DlibResNetConfig,
    /// The input layer's per-channel means (R, G, B); dlib divides by 256 after subtracting them.
    pub mean_rgb: [f32; 3],
    /// The distance threshold stored in the loss layer (`loss_metric`): same person below it.
    pub distance_threshold: f32,
    /// The metric loss's margin.
    pub margin: f32,
    /// Tensors by name, each with its shape, in [`crate::model::DlibResNet`]'s naming.
    pub tensors: NamedTensors,
}

/// Parses a dlib face-recognition ResNet from the bytes of its `.dat` file.
pub fn parse_dlib_resnet(bytes: &[u8]) -> ReadResult<DlibResNetFile> {
    let mut r = DlibReader::new(bytes);
    r.expect_i64(1, "loss layer version (not a dlib network file?)")?;
    r.expect_string("loss_metric_2")?;
    let margin = r.read_f32()?;
    let distance_threshold = r.read_f32()?;
    let computational = read_nesting(&mut r)?;
    r.expect_string("input_rgb_image_sized")?;
    let mean_rgb = [r.read_f32()?, r.read_f32()?, r.read_f32()?];
    let (rows, cols) = (r.read_usize("input rows")?, r.read_usize("input columns")?);
    if rows != cols || rows == 0 {
        return Err(r.err(format!(
            "input size {rows}×{cols}: only square inputs are supported"
        )));
    }
    let mut layers = Vec::with_capacity(computational);
    for i in 0..computational {
        let start = r.offset();
        layers.push((start, read_layer(&mut r)?));
        skip_training_state(&mut r, i == 0)?;
    }
    if !r.is_at_end() {
        return Err(r.err("unexpected bytes after the last layer"));
    }
    let (config, tensors) = assemble(&layers, bytes.len(), rows)?;
    Ok(DlibResNetFile {
        config,
        mean_rgb,
        distance_threshold,
        margin,
        tensors,
    })
}

/// Reads the per-layer version numbers down to the input layer; returns how many computational
/// layers (versions 2 and 3) there are.
fn read_nesting(r: &mut DlibReader) -> ReadResult<usize> {
    let mut computational = 0;
    loop {
        let start = r.offset();
        match r.read_i64()? {
            1 => {}
            2 => computational += 1,
            3 => return Ok(computational + 1),
            v => {
                return Err(DlibFormatError::new(
                    start,
                    format!("layer version {v}: expected 1, 2 or 3"),
                ))
            }
        }
        if computational > 10_000 {
            return Err(r.err("more than 10000 nested layers"));
        }
    }
}

/// After each layer's details: three bools and three (empty) tensors, plus the sample expansion
/// factor for the layer that owns the input.
fn skip_training_state(r: &mut DlibReader, innermost: bool) -> ReadResult<()> {
    for _ in 0..3 {
        r.read_bool()?;
    }
    for _ in 0..3 {
        r.read_tensor()?;
    }
    if innermost {
        r.read_i64()?;
    }
    Ok(())
}

fn read_layer(r: &mut DlibReader) -> ReadResult<Layer> {
    let start = r.offset();
    let name = r.read_string()?;
    Ok(match name.as_str() {
        "con_4" => read_con(r)?,
        "affine_" => read_affine(r)?,
        "relu_" => Layer::Relu,
        "add_prev_" => Layer::AddPrev,
        "max_pool_2" => Layer::MaxPool(read_pool(r)?),
        "avg_pool_2" => Layer::AvgPool(read_pool(r)?),
        "fc_2" => read_fc(r)?,
        other => {
            return Err(DlibFormatError::new(
                start,
                format!("layer {other:?} is not part of dlib's face-recognition ResNet"),
            ))
        }
    })
}

fn read_con(r: &mut DlibReader) -> ReadResult<Layer> {
    let (_, params) = r.read_tensor()?;
    let mut v = [0usize; 7];
    for (x, what) in v.iter_mut().zip([
        "filters",
        "rows",
        "columns",
        "stride y",
        "stride x",
        "padding y",
        "padding x",
    ]) {
        *x = r.read_usize(what)?;
    }
    let [filters, kh, kw, sy, sx, py, px] = v;
    let fdims = r.read_alias_tensor()?;
    let bdims = r.read_alias_tensor()?;
    for _ in 0..4 {
        r.read_f64()?; // learning-rate and weight-decay multipliers
    }
    let c_in = fdims[1];
    let n_w = filters * c_in * kh * kw;
    if fdims != [filters, c_in, kh, kw]
        || bdims != [1, filters, 1, 1]
        || params.len() != n_w + filters
    {
        return Err(r.err(format!(
            "convolution of {filters} filters: parameter shapes {fdims:?} / {bdims:?} / {} values disagree",
            params.len()
        )));
    }
    Ok(Layer::Con {
        filters,
        c_in,
        kernel: (kh, kw),
        stride: (sy, sx),
        padding: (py, px),
        bias: params[n_w..].to_vec(),
        weight: params[..n_w].to_vec(),
    })
}

fn read_affine(r: &mut DlibReader) -> ReadResult<Layer> {
    let (_, params) = r.read_tensor()?;
    let g = r.read_alias_tensor()?;
    let b = r.read_alias_tensor()?;
    let mode = r.read_i64()?;
    let c = g[1];
    if mode != 0 || g != [1, c, 1, 1] || b != g || params.len() != 2 * c {
        return Err(r.err(format!(
            "affine layer: expected per-channel (convolution mode) scale and shift, found mode {mode}, shapes {g:?} / {b:?}, {} values",
            params.len()
        )));
    }
    Ok(Layer::Affine {
        gamma: params[..c].to_vec(),
        beta: params[c..].to_vec(),
    })
}

fn read_pool(r: &mut DlibReader) -> ReadResult<PoolSpec> {
    let mut v = [0usize; 6];
    for x in &mut v {
        *x = r.read_usize("pooling parameter")?;
    }
    Ok(PoolSpec {
        window: (v[0], v[1]),
        stride: (v[2], v[3]),
        padding: (v[4], v[5]),
    })
}

fn read_fc(r: &mut DlibReader) -> ReadResult<Layer> {
    let outputs = r.read_usize("fc outputs")?;
    let inputs = r.read_usize("fc inputs")?;
    let (_, params) = r.read_tensor()?;
    let w = r.read_alias_tensor()?;
    let _bias = r.read_alias_tensor()?;
    let bias_mode = r.read_i64()?;
    for _ in 0..4 {
        r.read_f64()?;
    }
    if bias_mode != 1 || w != [inputs, outputs, 1, 1] || params.len() != inputs * outputs {
        return Err(r.err(format!(
            "fc layer: expected {inputs}×{outputs} weights without bias, found bias mode {bias_mode}, shape {w:?}, {} values",
            params.len()
        )));
    }
    Ok(Layer::Fc {
        outputs,
        inputs,
        weight: params,
    })
}

/// Walks the layers (input end first) against the network's topology.
struct Walker<'a> {
    layers: &'a [(usize, Layer)],
    pos: usize,
    end: usize,
}

impl<'a> Walker<'a> {
    fn next(&mut self, what: &str) -> ReadResult<&'a Layer> {
        match self.layers.get(self.pos) {
            Some((_, l)) => {
                self.pos += 1;
                Ok(l)
            }
            None => Err(DlibFormatError::new(
                self.end,
                format!("the network ends where {what} was expected"),
            )),
        }
    }

    fn mismatch(&self, what: &str) -> DlibFormatError {
        let (offset, layer) = match self.layers.get(self.pos.saturating_sub(1)) {
            Some((o, l)) => (*o, layer_name(l)),
            None => (self.end, "nothing"),
        };
        DlibFormatError::new(
            offset,
            format!("found {layer} where {what} was expected: not dlib's face-recognition ResNet"),
        )
    }

    /// A convolution with a square kernel `k` and `stride`, its affine map, and optionally the
    /// ReLU after them: the folded (weight, scale, shift) tensors under `name`.
    fn conv_affine(
        &mut self,
        name: &str,
        c_in: usize,
        k: usize,
        stride: usize,
        relu: bool,
        out: &mut NamedTensors,
    ) -> ReadResult<usize> {
        let pad = if stride == 1 { k / 2 } else { 0 };
        let what = format!(
            "a {k}×{k} convolution with stride {stride}, padding {pad} and {c_in} input channels"
        );
        let Layer::Con {
            filters,
            c_in: ci,
            kernel,
            stride: s,
            padding,
            weight,
            bias,
        } = self.next(&what)?
        else {
            return Err(self.mismatch(&what));
        };
        if *ci != c_in || *kernel != (k, k) || *s != (stride, stride) || *padding != (pad, pad) {
            return Err(self.mismatch(&what));
        }
        let Layer::Affine { gamma, beta } = self.next("an affine layer")? else {
            return Err(self.mismatch("an affine layer"));
        };
        if gamma.len() != *filters {
            return Err(self.mismatch(&format!("an affine layer over {filters} channels")));
        }
        if relu && !matches!(self.next("a relu")?, Layer::Relu) {
            return Err(self.mismatch("a relu"));
        }
        // scale·(conv + bias) + shift = scale·conv + (scale·bias + shift)
        let shift: Vec<f32> = (0..*filters)
            .map(|o| gamma[o] * bias[o] + beta[o])
            .collect();
        out.push((
            format!("{name}.weight"),
            vec![*filters, c_in, k, k],
            weight.clone(),
        ));
        out.push((format!("{name}.scale"), vec![*filters], gamma.clone()));
        out.push((format!("{name}.shift"), vec![*filters], shift));
        Ok(*filters)
    }

    /// One residual unit; returns its output channels and whether it downsamples.
    fn unit(&mut self, i: usize, c_in: usize, out: &mut NamedTensors) -> ReadResult<(usize, bool)> {
        let down = matches!(
            self.layers.get(self.pos),
            Some((_, Layer::Con { stride: (2, 2), .. }))
        );
        let stride = if down { 2 } else { 1 };
        let c = self.conv_affine(&format!("units.{i}.conv1"), c_in, 3, stride, true, out)?;
        self.conv_affine(&format!("units.{i}.conv2"), c, 3, 1, false, out)?;
        if down {
            let two = PoolSpec {
                window: (2, 2),
                stride: (2, 2),
                padding: (0, 0),
            };
            if !matches!(self.next("a 2×2 average pool")?, Layer::AvgPool(p) if *p == two) {
                return Err(self.mismatch("a 2×2 average pool with stride 2"));
            }
        }
        if !matches!(self.next("add_prev")?, Layer::AddPrev) {
            return Err(self.mismatch("add_prev (the residual sum)"));
        }
        if !matches!(self.next("a relu")?, Layer::Relu) {
            return Err(self.mismatch("a relu"));
        }
        if !down && c != c_in {
            return Err(self.mismatch(&format!("a unit keeping {c_in} channels")));
        }
        Ok((c, down))
    }
}

fn layer_name(l: &Layer) -> &'static str {
    match l {
        Layer::Con { .. } => "a convolution",
        Layer::Affine { .. } => "an affine layer",
        Layer::Relu => "a relu",
        Layer::MaxPool(_) => "a max pool",
        Layer::AvgPool(_) => "an average pool",
        Layer::AddPrev => "add_prev",
        Layer::Fc { .. } => "a fully connected layer",
    }
}

/// Matches the layer sequence to stem, residual units, pooling and the linear layer.
fn assemble(
    layers: &[(usize, Layer)],
    end: usize,
    image_size: usize,
) -> ReadResult<(DlibResNetConfig, NamedTensors)> {
    let mut w = Walker {
        layers,
        pos: 0,
        end,
    };
    let mut tensors = Vec::new();
    let stem = w.conv_affine("stem", 3, 7, 2, true, &mut tensors)?;
    let three = PoolSpec {
        window: (3, 3),
        stride: (2, 2),
        padding: (0, 0),
    };
    if !matches!(w.next("a 3×3 max pool")?, Layer::MaxPool(p) if *p == three) {
        return Err(w.mismatch("a 3×3 max pool with stride 2"));
    }
    let mut stages: Vec<DlibStage> = Vec::new();
    let mut c = stem;
    let mut i = 0;
    while matches!(w.layers.get(w.pos), Some((_, Layer::Con { .. }))) {
        let (c_out, down) = w.unit(i, c, &mut tensors)?;
        match stages.last_mut() {
            Some(s) if !down && s.channels == c_out => s.units += 1,
            _ => stages.push(DlibStage {
                channels: c_out,
                units: 1,
                downsample: down,
            }),
        }
        c = c_out;
        i += 1;
    }
    let global = PoolSpec {
        window: (0, 0),
        stride: (1, 1),
        padding: (0, 0),
    };
    if !matches!(w.next("a global average pool")?, Layer::AvgPool(p) if *p == global) {
        return Err(w.mismatch("a global average pool"));
    }
    let Layer::Fc {
        outputs,
        inputs,
        weight,
    } = w.next("an fc layer")?
    else {
        return Err(w.mismatch("an fc layer without bias"));
    };
    if *inputs != c || w.pos != layers.len() {
        return Err(w.mismatch(&format!("the last layer, an fc layer with {c} inputs")));
    }
    // dlib's (inputs, outputs) row-major → (outputs, inputs).
    let mut fc = vec![0f32; weight.len()];
    for (k, chunk) in weight.chunks_exact(*outputs).enumerate() {
        for (o, &v) in chunk.iter().enumerate() {
            fc[o * inputs + k] = v;
        }
    }
    tensors.push(("fc.weight".into(), vec![*outputs, *inputs], fc));
    let config = DlibResNetConfig {
        image_size,
        stem_channels: stem,
        stages,
        embedding_dim: *outputs,
    };
    Ok((config, tensors))
}
