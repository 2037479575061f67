//! Custom tensor operations that candle 0.11 lacks or gets wrong (see `shared/CANDLE-NOTES.md`).

pub mod maxpool;

pub use maxpool::max_pool2d;
