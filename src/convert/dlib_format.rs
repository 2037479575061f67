//! Reader for dlib's binary serialization format (`dlib/serialize.h`).
//!
//! The format, as written by `dlib::serialize`:
//!
//! * **Integers** (every integral type except the `char` types): one control byte, then the
//!   absolute value in little-endian order. The low 4 bits of the control byte give the number
//!   of value bytes that follow (0 for zero); bit `0x80` marks a negative number. Bits `0x70`
//!   are always zero. dlib rejects a value with more bytes than the destination type has, and
//!   for unsigned types keeps the sign bit in the size (`size &= 0x8F`), so a "negative"
//!   unsigned value is an error.
//! * **Floating point** (`float`, `double`): a `float_details` pair, the signed 64-bit
//!   *mantissa* first, then the signed 16-bit *exponent*, both as integers; the value is
//!   `mantissa * 2^exponent`, except exponents 32000, 32001, 32002 meaning `+inf`, `-inf`,
//!   `NaN`. (A pre-2013 ASCII format is recognised by bits `0x70` of the first byte; it is
//!   reported as an error here.)
//! * **`bool`**: one ASCII byte, `'1'` or `'0'`. **`char` types**: one raw byte.
//! * **`std::string`**: integer length, then the raw bytes.
//! * **`std::vector<T>`**: integer length, then the items.
//! * **`dlib::matrix<T,NR,NC>`**: rows and columns as *negated* `long`s (the "new" format;
//!   non-negative values are the legacy format and are read as-is), then the elements in
//!   row-major order.
//! * **`dlib::vector<T,2>`**: `x` then `y`.
//!
//! Every read checks bounds and fails with a [`DlibFormatError`] naming the byte offset and
//! what was being read; nothing here panics on malformed input, and lengths are checked
//! against the remaining bytes before anything is allocated.

use std::fmt;

/// A malformed or truncated dlib stream: where it went wrong and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlibFormatError {
    /// Byte offset in the input at which the offending item starts.
    pub offset: usize,
    /// What was being read and why it failed, innermost first, e.g.
    /// `"truncated integer (needs 3 more bytes, 1 left) / element 17 of a matrix of 136x1"`.
    pub what: String,
}

impl DlibFormatError {
    /// An error at `offset` described by `what`.
    pub fn new(offset: usize, what: impl Into<String>) -> Self {
        Self {
            offset,
            what: what.into(),
        }
    }

    /// Appends an outer context (`"while reading ..."`) to the description.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.what = format!("{} / {}", self.what, ctx);
        self
    }
}

impl fmt::Display for DlibFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "dlib format error at byte {}: {}",
            self.offset, self.what
        )
    }
}

impl std::error::Error for DlibFormatError {}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, DlibFormatError>;

/// A dense row-major matrix as deserialized from a `dlib::matrix`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` elements, row-major.
    pub data: Vec<T>,
}

/// `float_details` exponent values that encode non-finite numbers.
const IS_INF: i64 = 32000;
const IS_NINF: i64 = 32001;
const IS_NAN: i64 = 32002;

/// A cursor over a byte slice holding dlib-serialized data.
#[derive(Debug, Clone)]
pub struct DlibReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> DlibReader<'a> {
    /// A reader positioned at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    /// Current byte offset.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Number of bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// True when every byte has been consumed.
    pub fn is_at_end(&self) -> bool {
        self.remaining() == 0
    }

    /// Fails unless every byte has been consumed (`what` names the object just read).
    pub fn expect_end(&self, what: &str) -> Result<()> {
        if self.is_at_end() {
            Ok(())
        } else {
            Err(self.err(format!("{} trailing bytes after {what}", self.remaining())))
        }
    }

    /// An error at the current offset.
    pub fn err(&self, what: impl Into<String>) -> DlibFormatError {
        DlibFormatError::new(self.pos, what)
    }

    /// Takes the next `n` raw bytes.
    pub fn read_bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated {what} (needs {n} bytes, {} left)",
                self.remaining()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// One raw byte (dlib's `char`, `signed char` and `unsigned char`).
    pub fn read_byte(&mut self) -> Result<u8> {
        Ok(self.read_bytes(1, "byte")?[0])
    }

    /// A `bool`, stored as the ASCII byte `'1'` or `'0'`.
    pub fn read_bool(&mut self) -> Result<bool> {
        let start = self.pos;
        match self.read_byte()? {
            b'1' => Ok(true),
            b'0' => Ok(false),
            b => Err(DlibFormatError::new(
                start,
                format!("expected a bool ('0' or '1'), found byte 0x{b:02x}"),
            )),
        }
    }

    /// Reads an integer as (is_negative, magnitude), accepting at most `max_bytes` value bytes.
    fn read_int_parts(&mut self, max_bytes: u8, ty: &str) -> Result<(bool, u64)> {
        let start = self.pos;
        let control = self.read_byte().map_err(|_| {
            DlibFormatError::new(start, format!("truncated {ty} (no control byte)"))
        })?;
        if control & 0x70 != 0 {
            return Err(DlibFormatError::new(
                start,
                format!(
                    "expected a {ty} but found control byte 0x{control:02x} (reserved bits set)"
                ),
            ));
        }
        let size = control & 0x0F;
        if size > max_bytes {
            return Err(DlibFormatError::new(
                start,
                format!("{ty} too large: {size} bytes (at most {max_bytes})"),
            ));
        }
        let body = self
            .read_bytes(size as usize, ty)
            .map_err(|e| DlibFormatError::new(start, e.what))?;
        let mag = body
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        Ok((control & 0x80 != 0, mag))
    }

    /// An unsigned integer of at most `bytes` bytes (dlib's `unpack_int` for unsigned types).
    fn read_unsigned(&mut self, bytes: u8, ty: &str) -> Result<u64> {
        let start = self.pos;
        let (neg, mag) = self.read_int_parts(bytes, ty)?;
        if neg {
            return Err(DlibFormatError::new(
                start,
                format!("negative value for {ty}"),
            ));
        }
        Ok(mag)
    }

    /// A signed integer of at most `bytes` bytes, wrapping like dlib's `item *= -1`.
    fn read_signed(&mut self, bytes: u8, ty: &str) -> Result<i64> {
        let (neg, mag) = self.read_int_parts(bytes, ty)?;
        let v = mag as i64;
        Ok(if neg { v.wrapping_neg() } else { v })
    }

    /// `uint64` / `unsigned long` (LP64).
    pub fn read_u64(&mut self) -> Result<u64> {
        self.read_unsigned(8, "unsigned 64-bit integer")
    }

    /// `unsigned int` / `uint32`.
    pub fn read_u32(&mut self) -> Result<u32> {
        Ok(self.read_unsigned(4, "unsigned 32-bit integer")? as u32)
    }

    /// `int64` / `long` (LP64).
    pub fn read_i64(&mut self) -> Result<i64> {
        self.read_signed(8, "signed 64-bit integer")
    }

    /// `int` / `int32`.
    pub fn read_i32(&mut self) -> Result<i32> {
        Ok(self.read_signed(4, "signed 32-bit integer")? as i32)
    }

    /// `short` / `int16`.
    pub fn read_i16(&mut self) -> Result<i16> {
        Ok(self.read_signed(2, "signed 16-bit integer")? as i16)
    }

    /// Reads a `float_details` pair (mantissa, exponent) after checking for the ASCII format.
    fn read_float_details(&mut self, ty: &str) -> Result<(i64, i64)> {
        let start = self.pos;
        if let Some(&b) = self.bytes.get(self.pos) {
            if b & 0x70 != 0 {
                return Err(self.err(format!(
                    "{ty} in dlib's legacy ASCII float format (byte 0x{b:02x}) is not supported"
                )));
            }
        }
        let wrap = |e: DlibFormatError| e.context(format!("{ty} starting at byte {start}"));
        let mantissa = self.read_i64().map_err(wrap)?;
        let exponent = i64::from(self.read_i16().map_err(wrap)?);
        Ok((mantissa, exponent))
    }

    /// A `double`.
    pub fn read_f64(&mut self) -> Result<f64> {
        let (m, e) = self.read_float_details("double")?;
        Ok(match e {
            IS_INF => f64::INFINITY,
            IS_NINF => f64::NEG_INFINITY,
            IS_NAN => f64::NAN,
            e if e < IS_INF => ldexp(m as f64, e),
            _ => f64::NAN,
        })
    }

    /// A `float` (dlib converts with `ldexpf((float)mantissa, exponent)`).
    pub fn read_f32(&mut self) -> Result<f32> {
        let (m, e) = self.read_float_details("float")?;
        Ok(match e {
            IS_INF => f32::INFINITY,
            IS_NINF => f32::NEG_INFINITY,
            IS_NAN => f32::NAN,
            // (m as f32) is exact in f64, and m*2^e is exact in f64 for every finite f32
            // result, so the final cast is ldexpf's single rounding.
            e if e < IS_INF => ldexp(f64::from(m as f32), e) as f32,
            _ => f32::NAN,
        })
    }

    /// A length prefix (`unsigned long`) for a container whose items take at least
    /// `min_item_bytes` bytes each; rejects lengths the remaining input cannot hold.
    pub fn read_len(&mut self, min_item_bytes: usize, what: &str) -> Result<usize> {
        let start = self.pos;
        let n = self
            .read_u64()
            .map_err(|e| e.context(format!("length of {what}")))?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_item_bytes.max(1)) <= self.remaining());
        fits.ok_or_else(|| {
            DlibFormatError::new(
                start,
                format!(
                    "length {n} of {what} exceeds the {} remaining bytes",
                    self.remaining()
                ),
            )
        })
    }

    /// A `std::string` (length, then raw bytes); invalid UTF-8 is an error.
    pub fn read_string(&mut self) -> Result<String> {
        let start = self.pos;
        let n = self.read_len(1, "string")?;
        let raw = self.read_bytes(n, "string")?;
        String::from_utf8(raw.to_vec())
            .map_err(|_| DlibFormatError::new(start, "string is not valid UTF-8"))
    }

    /// Reads a `std::string` and fails unless it equals `name` (dlib's object tags).
    pub fn expect_string(&mut self, name: &str) -> Result<()> {
        let start = self.pos;
        let found = self
            .read_string()
            .map_err(|e| e.context(format!("expected the string {name:?}")))?;
        if found == name {
            Ok(())
        } else {
            Err(DlibFormatError::new(
                start,
                format!("expected the string {name:?}, found {found:?}"),
            ))
        }
    }

    /// A `std::vector<T>`: length, then `n` items read by `item` (each at least 1 byte).
    pub fn read_vec<T>(
        &mut self,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = self.read_len(1, what)?;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            out.push(
                item(self).map_err(|e| e.context(format!("item {i} of {what} (length {n})")))?,
            );
        }
        Ok(out)
    }

    /// The `(rows, cols)` header of a `dlib::matrix`, validated against the remaining bytes.
    pub fn read_matrix_header(&mut self) -> Result<(usize, usize)> {
        let start = self.pos;
        let mut nr = self.read_i64().map_err(|e| e.context("matrix row count"))?;
        let mut nc = self
            .read_i64()
            .map_err(|e| e.context("matrix column count"))?;
        if nr < 0 || nc < 0 {
            nr = nr.wrapping_neg();
            nc = nc.wrapping_neg();
        }
        let dims = usize::try_from(nr).ok().zip(usize::try_from(nc).ok());
        let ok = dims.filter(|&(r, c)| r.checked_mul(c).is_some_and(|n| n <= self.remaining()));
        ok.ok_or_else(|| {
            DlibFormatError::new(
                start,
                format!(
                    "matrix of {nr}x{nc} does not fit in the {} remaining bytes",
                    self.remaining()
                ),
            )
        })
    }

    /// A `dlib::matrix` of elements read by `item`; `cols`, when given, is the compile-time
    /// column count (`NC`) the destination requires.
    pub fn read_matrix<T>(
        &mut self,
        cols: Option<usize>,
        mut item: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Matrix<T>> {
        let start = self.pos;
        let (rows, nc) = self.read_matrix_header()?;
        if let Some(want) = cols.filter(|&c| c != nc) {
            return Err(DlibFormatError::new(
                start,
                format!("expected a matrix with {want} columns, found {rows}x{nc}"),
            ));
        }
        let mut data = Vec::with_capacity(rows * nc);
        for i in 0..rows * nc {
            data.push(item(self).map_err(|e| {
                e.context(format!(
                    "element {i} of a matrix of {rows}x{nc} at byte {start}"
                ))
            })?);
        }
        Ok(Matrix {
            rows,
            cols: nc,
            data,
        })
    }

    /// A `dlib::matrix<float>` (optionally with a fixed column count).
    pub fn read_matrix_f32(&mut self, cols: Option<usize>) -> Result<Matrix<f32>> {
        self.read_matrix(cols, Self::read_f32)
    }

    /// A `dlib::matrix<double>` (optionally with a fixed column count).
    pub fn read_matrix_f64(&mut self, cols: Option<usize>) -> Result<Matrix<f64>> {
        self.read_matrix(cols, Self::read_f64)
    }

    /// A `dlib::vector<float,2>` as `[x, y]`.
    pub fn read_point_f32(&mut self) -> Result<[f32; 2]> {
        Ok([self.read_f32()?, self.read_f32()?])
    }
}

/// `v * 2^e` like C's `ldexp`: exact whenever the result is a normal number (the only
/// case a dlib writer produces); results in the subnormal range may round twice.
fn ldexp(v: f64, e: i64) -> f64 {
    // |e| <= 3 * 767 keeps each factor 2^k a normal, exactly representable double.
    let e = e.clamp(-2300, 2300) as i32;
    let third = e / 3;
    v * 2f64.powi(third) * 2f64.powi(third) * 2f64.powi(e - 2 * third)
}

/// dlib's DNN tensors (`dlib/dnn/tensor.h`).
impl DlibReader<'_> {
    /// A non-negative integer that fits in `usize`, named `what` in errors.
    pub fn read_usize(&mut self, what: &str) -> Result<usize> {
        let start = self.offset();
        let v = self.read_i64().map_err(|e| e.context(what))?;
        usize::try_from(v).map_err(|_| {
            DlibFormatError::new(
                start,
                format!("{what}: expected a non-negative integer, got {v}"),
            )
        })
    }

    /// An integer that must equal `expected` (a version number).
    pub fn expect_i64(&mut self, expected: i64, what: &str) -> Result<()> {
        let start = self.offset();
        let v = self.read_i64().map_err(|e| e.context(what))?;
        if v == expected {
            Ok(())
        } else {
            Err(DlibFormatError::new(
                start,
                format!("{what}: expected {expected}, found {v}"),
            ))
        }
    }

    /// A `dlib::tensor` (version 2: four dimensions, then the values as raw little-endian
    /// `f32`): its dimensions (samples, channels, rows, columns) and values.
    pub fn read_tensor(&mut self) -> Result<([usize; 4], Vec<f32>)> {
        self.expect_i64(2, "tensor version")?;
        let dims = self.read_dims("tensor")?;
        let start = self.offset();
        let count = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|c| c.saturating_mul(4) <= self.remaining())
            .ok_or_else(|| {
                DlibFormatError::new(
                    start,
                    format!(
                        "a tensor of dimensions {dims:?} does not fit in the {} remaining bytes",
                        self.remaining()
                    ),
                )
            })?;
        let raw = self.read_bytes(count * 4, "tensor values")?;
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((dims, values))
    }

    /// A `dlib::alias_tensor` (version 1, then its four dimensions).
    pub fn read_alias_tensor(&mut self) -> Result<[usize; 4]> {
        self.expect_i64(1, "alias_tensor version")?;
        self.read_dims("alias_tensor")
    }

    fn read_dims(&mut self, what: &str) -> Result<[usize; 4]> {
        let mut dims = [0usize; 4];
        for d in &mut dims {
            *d = self.read_usize(&format!("{what} dimension"))?;
        }
        Ok(dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_bytes(v: i64) -> Vec<u8> {
        let mut mag = v.unsigned_abs();
        let mut body = Vec::new();
        while mag != 0 {
            body.push((mag & 0xFF) as u8);
            mag >>= 8;
        }
        if body.is_empty() {
            body.push(0); // dlib writes 0 as control 0x01 + one zero byte
        }
        let mut out = vec![body.len() as u8 | if v < 0 { 0x80 } else { 0 }];
        out.extend(body);
        out
    }

    #[test]
    fn integers_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            255,
            256,
            -70000,
            i64::from(i32::MAX),
            i64::MIN + 1,
        ] {
            assert_eq!(DlibReader::new(&int_bytes(v)).read_i64().unwrap(), v);
        }
        assert_eq!(DlibReader::new(&[0x00]).read_u64().unwrap(), 0);
        assert!(DlibReader::new(&[0x81, 0x01]).read_u64().is_err());
        assert!(DlibReader::new(&[0x05, 1, 2, 3, 4, 5]).read_i32().is_err());
        let e = DlibReader::new(&[0x03, 1]).read_u64().unwrap_err();
        assert_eq!(e.offset, 0);
    }

    #[test]
    fn floats_decode() {
        // 0x01 0x01 0x81 0x0a == mantissa 1, exponent -10
        let v = DlibReader::new(&[0x01, 0x01, 0x81, 0x0a])
            .read_f32()
            .unwrap();
        assert_eq!(v, 1.0 / 1024.0);
        let mut inf = vec![0x00];
        inf.extend(int_bytes(IS_INF));
        assert_eq!(DlibReader::new(&inf).read_f64().unwrap(), f64::INFINITY);
        let mut nan = vec![0x00];
        nan.extend(int_bytes(IS_NAN));
        assert!(DlibReader::new(&nan).read_f64().unwrap().is_nan());
        assert!(DlibReader::new(b"1.5 ").read_f64().is_err());
        assert_eq!(ldexp(1.0, -1074), f64::from_bits(1));
        assert_eq!(ldexp(1.0, 1023), 2f64.powi(1023));
    }

    #[test]
    fn strings_vectors_and_matrices() {
        let mut b = vec![0x01, 0x03];
        b.extend(b"fc_");
        assert!(DlibReader::new(&b).expect_string("fc_").is_ok());
        let e = DlibReader::new(&b).expect_string("con").unwrap_err();
        assert!(e.what.contains("\"fc_\""), "{e}");
        // matrix -2 x -1 of floats 1 (mantissa 1, exponent 0 -> control 0x00)
        let m = [0x81, 0x02, 0x81, 0x01, 0x01, 0x01, 0x00, 0x01, 0x02, 0x00];
        let mat = DlibReader::new(&m).read_matrix_f32(Some(1)).unwrap();
        assert_eq!((mat.rows, mat.cols, mat.data), (2, 1, vec![1.0, 2.0]));
        let e = DlibReader::new(&m[..8])
            .read_matrix_f32(Some(1))
            .unwrap_err();
        assert!(e.to_string().contains("matrix of 2x1"), "{e}");
        let huge = [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert!(DlibReader::new(&huge)
            .read_vec("v", |r| r.read_byte())
            .is_err());
    }
}
