//! Reader for PyTorch's legacy (pre-1.6, non-zip) `torch.save` format, the format of
//! facenet-pytorch's shipped `data/pnet.pt`, `rnet.pt`, `onet.pt` (MIT licence), and a converter
//! from those three files to the safetensors model folder [`crate::detect::Mtcnn::load`] reads.
//!
//! Layout (`torch/serialization.py::_legacy_save`): a pickled magic number (protocol 2, a
//! LONG1 of 10 bytes, STOP: 15 bytes, skipped by hand because candle's pickle reader overflows
//! on that LONG1), a pickled protocol version, a pickled sys-info dict, the pickled object (here
//! an `OrderedDict` of `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
//! whose storages are persistent ids `('storage', torch.FloatStorage, key, location, numel,
//! view_metadata)`), a pickled list of storage keys, and for each key in that order a
//! little-endian u64 element count followed by the raw little-endian data.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::detect::mtcnn::{ONET_FILE, PNET_FILE, RNET_FILE};
use crate::detect::{ONet, PNet, RNet};
use crate::{Error, Result};

/// `torch.serialization.MAGIC_NUMBER` (0x1950a86a20f9469cfc6c) as the LONG1 bytes.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// One tensor of the state dict before its storage is read.
struct TensorRef {
    key: String,
    dtype: DType,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// Reads every tensor of a PyTorch state dict saved in the legacy (non-zip) format, e.g.
/// facenet-pytorch's `pnet.pt`, as contiguous CPU tensors keyed by their state-dict names.
/// A zip-format (PyTorch ≥ 1.6) file is read with candle's own reader instead.
pub fn read_legacy_pt(path: impl AsRef<Path>) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(b"PK") {
        let tensors = candle_core::pickle::read_all(path).map_err(|e| Error::weights(path, e))?;
        return Ok(tensors.into_iter().collect());
    }
    parse(&bytes).map_err(|reason| Error::weights(path, reason))
}

fn parse(bytes: &[u8]) -> std::result::Result<HashMap<String, Tensor>, String> {
    // Pickle 0: PROTO 2, LONG1 10 <magic>, STOP.
    if bytes.len() < 15
        || bytes[0..4] != [0x80, 0x02, 0x8a, 0x0a]
        || bytes[4..14] != MAGIC
        || bytes[14] != b'.'
    {
        return Err("not a PyTorch file (legacy magic number missing)".into());
    }
    let mut cur = Cursor::new(bytes);
    cur.set_position(15);
    let (state, keys) = read_pickles(&mut cur)?;
    // `state_dict()` carries a `_metadata` attribute (module versions); candle's pickle
    // reader merges it into the dict as one more entry.
    let refs = state
        .into_iter()
        .filter(|(name, _)| *name != Object::Unicode("_metadata".into()))
        .map(|(name, obj)| match name {
            Object::Unicode(name) => tensor_ref(obj).map(|r| (name, r)),
            other => Err(format!("state-dict key is not a string: {}", short(&other))),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let storages = read_storages(bytes, cur.position() as usize, &keys, &refs)?;
    let mut out = HashMap::new();
    for (name, r) in refs {
        let data = storages
            .get(r.key.as_str())
            .ok_or_else(|| format!("{name}: storage {} missing", r.key))?;
        let raw = gather(data, r.dtype.size_in_bytes(), r.offset, &r.shape, &r.stride).ok_or_else(
            || {
                format!(
                    "{name}: view {:?}/{:?} exceeds its storage",
                    r.shape, r.stride
                )
            },
        )?;
        let t = Tensor::from_raw_buffer(&raw, r.dtype, &r.shape, &Device::Cpu)
            .map_err(|e| format!("{name}: {e}"))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// The pickles after the magic number: protocol, system info, the state dict and the storage
/// keys (in the order their data follows).
#[allow(clippy::type_complexity)]
fn read_pickles(
    cur: &mut Cursor<&[u8]>,
) -> std::result::Result<(Vec<(Object, Object)>, Vec<String>), String> {
    let mut next = |what: &str| -> std::result::Result<Object, String> {
        let mut stack = Stack::empty();
        stack
            .read_loop(&mut *cur)
            .map_err(|e| format!("reading the {what} pickle: {e}"))?;
        stack
            .finalize()
            .map_err(|e| format!("reading the {what} pickle: {e}"))
    };
    let protocol = next("protocol")?;
    if !matches!(protocol, Object::Int(1001) | Object::Long(1001)) {
        return Err(format!("unsupported legacy protocol {protocol:?}"));
    }
    if let Object::Dict(info) = next("sys-info")? {
        let le = info.iter().any(|(k, v)| {
            *k == Object::Unicode("little_endian".into()) && *v == Object::Bool(true)
        });
        if !le {
            return Err("big-endian PyTorch files are not supported".into());
        }
    }
    let state = match next("state-dict")? {
        Object::Dict(entries) => entries,
        other => return Err(format!("expected a state dict, got {}", short(&other))),
    };
    let keys = match next("storage-keys")? {
        Object::List(keys) => keys
            .into_iter()
            .map(|k| match k {
                Object::Unicode(s) => Ok(s),
                other => Err(format!("storage key is not a string: {}", short(&other))),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        other => {
            return Err(format!(
                "expected the storage key list, got {}",
                short(&other)
            ))
        }
    };
    Ok((state, keys))
}

/// The raw storages from `pos` on: each a u64 element count, then the data; their element
/// size comes from the tensors that use them.
fn read_storages<'a>(
    bytes: &'a [u8],
    mut pos: usize,
    keys: &'a [String],
    refs: &[(String, TensorRef)],
) -> std::result::Result<HashMap<&'a str, &'a [u8]>, String> {
    let elem_size: HashMap<&str, usize> = refs
        .iter()
        .map(|(_, r)| (r.key.as_str(), r.dtype.size_in_bytes()))
        .collect();
    let mut storages: HashMap<&str, &[u8]> = HashMap::new();
    for key in keys {
        let count = bytes
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .ok_or_else(|| format!("truncated before storage {key}"))? as usize;
        pos += 8;
        let size = elem_size.get(key.as_str()).copied().unwrap_or(4);
        let len = count
            .checked_mul(size)
            .ok_or_else(|| format!("storage {key}: absurd element count {count}"))?;
        let data = pos
            .checked_add(len)
            .and_then(|end| bytes.get(pos..end))
            .ok_or_else(|| format!("truncated inside storage {key} ({count} elements)"))?;
        storages.insert(key.as_str(), data);
        pos += len;
    }
    Ok(storages)
}

/// A short description of a pickle object for error messages.
fn short(o: &Object) -> String {
    let s = format!("{o:?}");
    s.chars().take(80).collect()
}

fn usize_of(o: &Object) -> Option<usize> {
    match *o {
        Object::Int(v) if v >= 0 => Some(v as usize),
        Object::Long(v) if v >= 0 => Some(v as usize),
        _ => None,
    }
}

fn usizes(o: &Object) -> Option<Vec<usize>> {
    match o {
        Object::Tuple(v) => v.iter().map(usize_of).collect(),
        _ => None,
    }
}

/// Decodes `_rebuild_tensor_v2((persistent storage id), offset, size, stride, ...)`, also
/// inside `_rebuild_parameter`.
fn tensor_ref(obj: Object) -> std::result::Result<TensorRef, String> {
    let desc = short(&obj);
    let bad = || format!("unsupported tensor record {desc}");
    let Object::Reduce { callable, args } = obj else {
        return Err(bad());
    };
    let Object::Class {
        module_name,
        class_name,
    } = *callable
    else {
        return Err(bad());
    };
    let Object::Tuple(mut args) = *args else {
        return Err(bad());
    };
    if module_name == "torch._utils" && class_name == "_rebuild_parameter" && !args.is_empty() {
        return tensor_ref(args.swap_remove(0));
    }
    if module_name != "torch._utils" || class_name != "_rebuild_tensor_v2" || args.len() < 4 {
        return Err(bad());
    }
    let Object::PersistentLoad(pid) = &args[0] else {
        return Err(bad());
    };
    let Object::Tuple(pid) = pid.as_ref() else {
        return Err(bad());
    };
    let (
        Some(Object::Class {
            class_name: storage,
            ..
        }),
        Some(Object::Unicode(key)),
    ) = (pid.get(1), pid.get(2))
    else {
        return Err(bad());
    };
    let dtype = match storage.as_str() {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "ByteStorage" => DType::U8,
        other => return Err(format!("unsupported storage type {other}")),
    };
    Ok(TensorRef {
        key: key.clone(),
        dtype,
        offset: usize_of(&args[1]).ok_or_else(bad)?,
        shape: usizes(&args[2]).ok_or_else(bad)?,
        stride: usizes(&args[3]).ok_or_else(bad)?,
    })
}

/// Copies the strided view (`offset`, `shape`, `stride`, in elements of `elem` bytes) of
/// `data` into a contiguous row-major buffer; `None` if the view leaves the storage.
fn gather(
    data: &[u8],
    elem: usize,
    offset: usize,
    shape: &[usize],
    stride: &[usize],
) -> Option<Vec<u8>> {
    if shape.len() != stride.len() {
        return None;
    }
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n * elem);
    if n == 0 {
        return Some(out);
    }
    let last = offset
        + shape
            .iter()
            .zip(stride)
            .map(|(&d, &s)| (d - 1) * s)
            .sum::<usize>();
    if (last + 1) * elem > data.len() {
        return None;
    }
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        let src = offset + idx.iter().zip(stride).map(|(&i, &s)| i * s).sum::<usize>();
        out.extend_from_slice(&data[src * elem..(src + 1) * elem]);
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(out)
}

/// Converts facenet-pytorch's `pnet.pt`, `rnet.pt`, `onet.pt` into an MTCNN model folder
/// (`out_dir/pnet.safetensors`, `rnet.safetensors`, `onet.safetensors`, same tensor names),
/// checking first that each file holds every tensor its network needs with the right shape.
pub fn convert_mtcnn_pt(
    pnet: impl AsRef<Path>,
    rnet: impl AsRef<Path>,
    onet: impl AsRef<Path>,
    out_dir: impl AsRef<Path>,
) -> Result<()> {
    let out_dir = out_dir.as_ref();
    let nets: [(&Path, &str); 3] = [
        (pnet.as_ref(), PNET_FILE),
        (rnet.as_ref(), RNET_FILE),
        (onet.as_ref(), ONET_FILE),
    ];
    let mut loaded = Vec::new();
    for (src, file) in nets {
        let tensors = read_legacy_pt(src)?;
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu);
        let check = match file {
            PNET_FILE => PNet::new(vb).map(|_| ()),
            RNET_FILE => RNet::new(vb).map(|_| ()),
            _ => ONet::new(vb).map(|_| ()),
        };
        check.map_err(|e| Error::weights(src, e))?;
        loaded.push((file, tensors));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    for (file, tensors) in loaded {
        let dst = out_dir.join(file);
        crate::fsutil::write_atomic_with(&dst, |tmp| {
            candle_core::safetensors::save(&tensors, tmp).map_err(|e| Error::weights(tmp, e))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_reads_fortran_strides() {
        // A 2×3 tensor stored column-major: storage [a00, a10, a01, a11, a02, a12].
        let storage: Vec<u8> = [0f32, 3., 1., 4., 2., 5.]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let raw = gather(&storage, 4, 0, &[2, 3], &[1, 2]).unwrap();
        let vals: Vec<f32> = raw
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(vals, vec![0., 1., 2., 3., 4., 5.]);
        assert!(gather(&storage, 4, 1, &[2, 3], &[1, 2]).is_none());
    }

    #[test]
    fn rejects_non_torch_bytes() {
        assert!(parse(b"hello world, this is not a pickle").is_err());
    }
}
