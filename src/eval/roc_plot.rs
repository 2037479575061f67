//! ROC curve plot as a PNG: the exact ROC of [`roc`](crate::eval::metrics::roc) on linear axes
//! and again with a logarithmic FAR axis (where face-verification operating points such as
//! FAR = 10⁻³ live), with the AUC in the title and an optional operating point marked.
//!
//! Drawn with `plotters` into an in-memory RGB buffer, with the DejaVu Sans font embedded (the
//! `dejavu` crate; no system font libraries needed), encoded with the `image` crate and written
//! atomically.

use crate::eval::metrics::RocPoint;
use crate::{Error, Result};
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::OnceLock;

/// Width and height, in pixels, of the PNG written by [`plot_roc_png`].
pub const ROC_PNG_SIZE: (u32, u32) = (1200, 600);

/// The font family name under which DejaVu Sans is registered with plotters.
const FONT: &str = "sans-serif";

/// Registers the embedded font once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Msg(
            "could not load the embedded DejaVu Sans font".into(),
        ))
    }
}

fn plot_err(e: impl std::fmt::Display) -> Error {
    Error::Msg(format!("drawing the ROC plot: {e}"))
}

/// Draws one ROC panel on `area` with the given FAR axis.
fn panel<X>(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    x_range: X,
    curve: &[(f32, f32)],
    diagonal: &[(f32, f32)],
    operating_point: Option<(f32, f32)>,
) -> Result<()>
where
    X: AsRangedCoord<Value = f32>,
    X::CoordDescType: ValueFormatter<f32> + Ranged<ValueType = f32>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(x_range, 0f32..1f32)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("false accept rate (FAR)")
        .y_desc("true accept rate (TAR)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(LineSeries::new(
            diagonal.iter().copied(),
            ShapeStyle::from(RGBColor(170, 170, 170)).stroke_width(1),
        ))
        .map_err(plot_err)?;
    chart
        .draw_series(LineSeries::new(
            curve.iter().copied(),
            ShapeStyle::from(RGBColor(31, 119, 180)).stroke_width(2),
        ))
        .map_err(plot_err)?;
    if let Some((far, tar)) = operating_point {
        let red = RGBColor(214, 39, 40);
        chart
            .draw_series(std::iter::once(Circle::new(
                (far, tar),
                6,
                ShapeStyle::from(red).filled(),
            )))
            .map_err(plot_err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                format!("  FAR {far:.4}, TAR {tar:.4}"),
                (far, tar),
                (FONT, 15)
                    .into_font()
                    .color(&red)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Left,
                        plotters::style::text_anchor::VPos::Top,
                    )),
            )))
            .map_err(plot_err)?;
    }
    Ok(())
}

/// Writes a PNG of [`ROC_PNG_SIZE`] showing the ROC curve `roc` (points in ascending threshold
/// order, as [`roc`](crate::eval::metrics::roc) returns them): on the left with linear axes, on
/// the right with a logarithmic FAR axis from 10⁻⁴ (or lower, down to the smallest non-zero FAR)
/// to 1. The title gives `auc`; `operating_point` = `(far, tar)` is marked with a red dot and
/// its values on both panels. The file is written atomically.
pub fn plot_roc_png(
    path: &Path,
    roc: &[RocPoint],
    auc: f32,
    operating_point: Option<(f32, f32)>,
) -> Result<()> {
    check_roc(roc, operating_point)?;
    ensure_font()?;
    let (w, h) = ROC_PNG_SIZE;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let title = format!("ROC curve, AUC = {auc:.4}");
        let root = root.titled(&title, (FONT, 26)).map_err(plot_err)?;
        let (left, right) = root.split_horizontally(w / 2);

        let curve: Vec<(f32, f32)> = roc.iter().map(|p| (p.far, p.tar)).collect();
        panel(
            &left,
            "linear FAR axis",
            0f32..1f32,
            &curve,
            &[(0.0, 0.0), (1.0, 1.0)],
            operating_point,
        )?;

        let (x_min, log_curve, diagonal) = log_axis(&curve, operating_point);
        panel(
            &right,
            "logarithmic FAR axis",
            (x_min..1f32).log_scale(),
            &log_curve,
            &diagonal,
            operating_point.map(|(f, t)| (f.max(x_min), t)),
        )?;
        root.present().map_err(plot_err)?;
    }
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::Msg("ROC plot buffer has the wrong size".into()))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::image(path, e))?;
    crate::fsutil::write_atomic(path, &png)
}

/// Points of a curve, (FAR, TAR).
type Points = Vec<(f32, f32)>;

/// Refuses an empty curve and points (or an operating point) outside the unit square.
fn check_roc(roc: &[RocPoint], operating_point: Option<(f32, f32)>) -> Result<()> {
    if roc.is_empty() {
        return Err(Error::InvalidArgument(
            "cannot plot an empty ROC curve".into(),
        ));
    }
    if let Some(p) = roc
        .iter()
        .find(|p| !(0.0..=1.0).contains(&p.far) || !(0.0..=1.0).contains(&p.tar))
    {
        return Err(Error::InvalidArgument(format!(
            "ROC point with FAR {} and TAR {} is outside [0, 1]",
            p.far, p.tar
        )));
    }
    if let Some((far, tar)) = operating_point {
        if !(0.0..=1.0).contains(&far) || !(0.0..=1.0).contains(&tar) {
            return Err(Error::InvalidArgument(format!(
                "operating point FAR {far}, TAR {tar} is outside [0, 1]"
            )));
        }
    }
    Ok(())
}

/// The logarithmic panel's left edge (a power of ten at or below the smallest positive FAR,
/// at most 1e-4), the curve clamped to it, and the diagonal sampled along the axis.
fn log_axis(curve: &[(f32, f32)], operating_point: Option<(f32, f32)>) -> (f32, Points, Points) {
    let min_far = curve
        .iter()
        .map(|p| p.0)
        .chain(operating_point.map(|o| o.0))
        .filter(|&f| f > 0.0)
        .fold(1e-4f32, f32::min);
    let x_min = 10f32.powf(min_far.log10().floor());
    // On the log axis, FAR = 0 cannot be shown: those points sit on the left edge.
    let log_curve = curve.iter().map(|&(f, t)| (f.max(x_min), t)).collect();
    let diagonal = (0..=40)
        .map(|i| {
            let f = x_min * (1.0 / x_min).powf(i as f32 / 40.0);
            (f, f)
        })
        .collect();
    (x_min, log_curve, diagonal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::{auc, roc};

    #[test]
    fn roc_png_has_expected_size_and_content() {
        // 60 same pairs spread over [0, 1.2], 60 different over [0.6, 1.8]: a typical curve.
        let d: Vec<f32> = (0..120)
            .map(|i| (i % 60) as f32 * 0.02 + if i < 60 { 0.0 } else { 0.6 })
            .collect();
        let s: Vec<bool> = (0..120).map(|i| i < 60).collect();
        let r = roc(&d, &s).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roc.png");
        plot_roc_png(&path, &r, auc(&r), Some((0.05, 0.8))).unwrap();
        if let Some(keep) = std::env::var_os("CANDLE_FACE_PLOT_OUT") {
            std::fs::copy(&path, keep).unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), ROC_PNG_SIZE);
        let count = |c: [u8; 3]| img.pixels().filter(|p| p.0 == c).count();
        // The curve (blue), the operating point (red) and text/axes (black) are all drawn.
        assert!(count([31, 119, 180]) > 500, "curve missing");
        assert!(count([214, 39, 40]) > 100, "operating point missing");
        assert!(count([0, 0, 0]) > 1000, "axes and text missing");
        // Only the temporary file's rename target is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn roc_png_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        assert!(plot_roc_png(&p, &[], 0.5, None).is_err());
        let bad = [RocPoint {
            threshold: 0.0,
            tar: 1.5,
            far: 0.0,
        }];
        assert!(plot_roc_png(&p, &bad, 0.5, None).is_err());
        let ok = [RocPoint {
            threshold: 0.0,
            tar: 0.0,
            far: 0.0,
        }];
        assert!(plot_roc_png(&p, &ok, 0.5, Some((2.0, 0.5))).is_err());
        assert!(!p.exists());
    }
}
