//! docs/bench.svg: horizontal bars (median) with min–max whiskers, four panels.
//!
//! plotters' SVG backend only: no bitmap backend, no font files, no fontconfig. Without the
//! `ttf` feature plotters estimates text extents itself and the SVG keeps every label as a
//! `<text>` element in a generic `sans-serif` family, which the viewer renders.

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::report::{Results, Throughput};
use crate::stats::{thousands, Summary};

/// A panel: caption, bars, value format.
type Panel<'a> = (&'a str, &'a [Bar], fn(f64) -> String);

/// One bar.
struct Bar {
    label: String,
    value: Summary,
    color: RGBColor,
}

const SATMQTT: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const RAW: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);
const RUMQTTC: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
const PAHO: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
const MOSQUITTO_PUB: RGBColor = RGBColor(0x94, 0x67, 0xbd);
const VARIANT: RGBColor = RGBColor(0x9e, 0xc5, 0xe8);
const TLS: RGBColor = RGBColor(0x17, 0xbe, 0xcf);

fn color(key: &str) -> RGBColor {
    if key.starts_with("satmqtt-tls-") {
        return TLS;
    }
    match key.split('-').next() {
        Some("satmqtt") => SATMQTT,
        Some("raw") => RAW,
        Some("rumqttc") => RUMQTTC,
        Some("paho") => PAHO,
        Some("variant") => VARIANT,
        _ => MOSQUITTO_PUB,
    }
}

fn tp_label(t: &Throughput) -> String {
    if t.qos == 1 && !t.label.contains("window") {
        format!("{}, window {}", t.label, t.window)
    } else {
        t.label.clone()
    }
}

/// Draws the chart to `path`.
pub fn write_svg(results: &Results, path: &Path) -> anyhow::Result<()> {
    let bars_tp = |qos: u8| -> Vec<Bar> {
        results
            .throughput
            .iter()
            .filter(|t| t.qos == qos)
            .filter_map(|t| {
                Some(Bar {
                    label: tp_label(t),
                    value: t.rate()?,
                    color: color(&t.key),
                })
            })
            .collect()
    };
    let cpu: Vec<Bar> = results
        .rates
        .iter()
        .filter(|r| r.rate == 100)
        .filter_map(|r| {
            Some(Bar {
                label: r.label.to_owned(),
                value: r.steady_ms()?,
                color: color(r.key),
            })
        })
        .collect();
    let rss: Vec<Bar> = results
        .throughput
        .iter()
        .filter(|t| t.qos == 1 && t.key.starts_with("satmqtt") || t.key == "rumqttc-q1")
        .filter_map(|t| {
            Some(Bar {
                label: t.label.clone(),
                value: t.rss_mib()?,
                color: color(&t.key),
            })
        })
        .collect();

    let root = SVGBackend::new(path, (1100, 820)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let title = format!(
        "satmqtt vs the wire limit and peers — one mosquitto, {} cores, median and min–max of {} runs",
        results.meta.cores, results.meta.reps
    );
    let root = root
        .titled(&title, ("sans-serif", 18))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((2, 2));
    let specs: [Panel<'_>; 4] = [
        ("QoS 0: delivered messages/s", &bars_tp(0), thousands),
        (
            "QoS 1: messages/s until the last PUBACK (delivery checked)",
            &bars_tp(1),
            thousands,
        ),
        (
            "CPU ms per 1000 messages at 100 msg/s, QoS 1 (lower is better)",
            &cpu,
            |x| format!("{x:.1}"),
        ),
        (
            "peak RSS, MiB, QoS 1 flat out (lower is better)",
            &rss,
            |x| format!("{x:.1}"),
        ),
    ];
    for (area, (caption, bars, fmt)) in panels.iter().zip(specs) {
        panel(area, caption, bars, fmt).map_err(anyhow::Error::msg)?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    caption: &str,
    bars: &[Bar],
    fmt: fn(f64) -> String,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    if bars.is_empty() {
        area.draw(&Text::new(
            format!("{caption}: not measured"),
            (20, 40),
            ("sans-serif", 14),
        ))
        .map_err(err)?;
        return Ok(());
    }
    let top = bars.iter().map(|b| b.value.max).fold(0.0, f64::max) * 1.3;
    let n = bars.len() as i32;
    let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(190)
        // A discrete i32 range includes its end: 0..n-1 gives exactly n rows.
        .build_cartesian_2d(0.0..top.max(1e-9), (0..n - 1).into_segmented())
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(5)
        .x_label_formatter(&|x| fmt(*x))
        .y_labels(bars.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(err)?;
    for (i, bar) in bars.iter().enumerate() {
        let i = i as i32;
        let mut rect = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (bar.value.median, SegmentValue::Exact(i + 1)),
            ],
            bar.color.filled(),
        );
        rect.set_margin(4, 4, 0, 0);
        chart.draw_series(std::iter::once(rect)).map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![
                    (bar.value.min, SegmentValue::CenterOf(i)),
                    (bar.value.max, SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                fmt(bar.value.median),
                (bar.value.max + top * 0.01, SegmentValue::CenterOf(i)),
                ("sans-serif", 12).into_font().color(&BLACK),
            )))
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Meta, RateRow, RateSample, TpSample};

    fn tp(key: &'static str, label: &'static str, qos: u8, e2e: &[f64]) -> Throughput {
        Throughput {
            key: key.into(),
            label: label.into(),
            qos,
            window: "10".into(),
            samples: e2e
                .iter()
                .map(|&e2e| TpSample {
                    e2e,
                    client: e2e,
                    cpu_s: 0.1,
                    rss_kib: 3000,
                    delivered: 100,
                    duplicates: 0,
                    count: 100,
                    window: None,
                })
                .collect(),
            errors: Vec::new(),
        }
    }

    #[test]
    fn labels_and_values_are_svg_text() {
        let results = Results {
            meta: Meta {
                cores: 2,
                reps: 3,
                ..Meta::default()
            },
            throughput: vec![
                tp(
                    "satmqtt-q0",
                    "satmqtt pod-publisher",
                    0,
                    &[1000.0, 1100.0, 900.0],
                ),
                tp("raw-q0", "raw (the limit)", 0, &[1200.0]),
                tp("satmqtt-q1", "satmqtt pod-publisher", 1, &[500.0]),
            ],
            rates: vec![RateRow {
                key: "satmqtt",
                label: "satmqtt pod-publisher",
                rate: 100,
                samples: vec![RateSample {
                    steady: 0.05,
                    total: 0.06,
                    rss_kib: 3000,
                }],
                errors: Vec::new(),
            }],
            ..Results::default()
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bench.svg");
        write_svg(&results, &path).expect("svg");
        let svg = std::fs::read_to_string(&path).expect("read svg");
        for text in [
            "satmqtt pod-publisher",
            "raw (the limit)",
            "1,000",
            "50.0",
            "QoS 1",
        ] {
            assert!(svg.contains(text), "{text} missing from the SVG");
        }
        assert!(svg.contains("<text"));
    }
}
