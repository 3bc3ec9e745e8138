//! `bench-chart`: turns the results of `scripts/bench-report` into the
//! Markdown table and the PNG chart of the serving benchmark.
//!
//! Input: a JSON Lines file, one object per bench run:
//! `{"model": "...", "mode": "continuous", "concurrency": 4, "report": {...}}`
//! where `report` is the output of `wick-bench --json`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Parser;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde::Deserialize;
use wick_bench::Report;

/// Renders the serving benchmark's table and chart from its results.
#[derive(Parser)]
struct Cli {
    /// JSON Lines file of results, one bench run per line.
    #[arg(long)]
    results: PathBuf,
    /// Output path of the Markdown table and the target checks.
    #[arg(long)]
    table: PathBuf,
    /// Output path of the PNG chart.
    #[arg(long)]
    png: PathBuf,
    /// TrueType font for the chart's text. Default: the first of a few
    /// common DejaVu and Liberation paths that exists.
    #[arg(long)]
    font: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Run {
    model: String,
    mode: String,
    concurrency: usize,
    report: Report,
}

/// The batching modes in the order the table and legend show them.
const MODES: [&str; 3] = ["continuous", "static", "sequential"];

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runs = read_runs(&cli.results)?;
    std::fs::write(&cli.table, markdown(&runs))
        .with_context(|| format!("failed to write {}", cli.table.display()))?;
    register_font(cli.font.as_deref())?;
    draw_chart(&runs, &cli.png)?;
    Ok(())
}

fn read_runs(path: &Path) -> anyhow::Result<Vec<Run>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let mut runs = Vec::new();
    for (number, line) in text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
    {
        let run = serde_json::from_str(line).with_context(|| {
            format!("invalid result in {}, line {}", path.display(), number + 1)
        })?;
        runs.push(run);
    }
    if runs.is_empty() {
        bail!("{} contains no result", path.display());
    }
    Ok(runs)
}

fn models(runs: &[Run]) -> Vec<&str> {
    let mut seen = Vec::new();
    for run in runs {
        if !seen.contains(&run.model.as_str()) {
            seen.push(run.model.as_str());
        }
    }
    seen
}

fn find<'a>(runs: &'a [Run], model: &str, mode: &str, concurrency: usize) -> Option<&'a Report> {
    runs.iter()
        .find(|run| run.model == model && run.mode == mode && run.concurrency == concurrency)
        .map(|run| &run.report)
}

fn cell(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |value| format!("{value:.1}"))
}

fn markdown(runs: &[Run]) -> String {
    let mut out = String::new();
    out.push_str("| model | mode | concurrency | requests/s | output tokens/s | TTFT p50 (ms) | TTFT p90 (ms) | TTFT p99 (ms) | TPOT p50 (ms) | TPOT p99 (ms) | ITL p50 (ms) | ITL p99 (ms) | e2e p50 (ms) | e2e p99 (ms) | failed | load generator CPU (% of one core) |\n");
    out.push_str("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for run in runs {
        let report = &run.report;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            run.model,
            run.mode,
            run.concurrency,
            report.requests_per_s,
            report.output_tokens_per_s,
            cell(report.ttft_ms.p50),
            cell(report.ttft_ms.p90),
            cell(report.ttft_ms.p99),
            cell(report.tpot_ms.p50),
            cell(report.tpot_ms.p99),
            cell(report.itl_ms.p50),
            cell(report.itl_ms.p99),
            cell(report.e2e_ms.p50),
            cell(report.e2e_ms.p99),
            report.requests_failed,
            report.load_generator_cpu.percent_of_one_core,
        );
    }
    out.push('\n');
    out.push_str(&target_checks(runs));
    out
}

/// States, per model, how continuous batching compares with its two
/// baselines at the highest concurrency measured.
fn target_checks(runs: &[Run]) -> String {
    let mut out = String::new();
    let Some(top) = runs.iter().map(|run| run.concurrency).max() else {
        return out;
    };
    for model in models(runs) {
        let reports = MODES.map(|mode| find(runs, model, mode, top));
        let [Some(continuous), Some(fixed), Some(sequential)] = reports else {
            let _ = writeln!(
                out,
                "- {model}: not every mode has a result at concurrency {top}."
            );
            continue;
        };
        let ratio =
            continuous.output_tokens_per_s / sequential.output_tokens_per_s.max(f64::MIN_POSITIVE);
        let verdict = |passed: bool| if passed { "met" } else { "not met" };
        let _ = writeln!(
            out,
            "- {model}, concurrency {top}: continuous gives {ratio:.1}x the output tokens/s of sequential \
             (target at least 4x: {}); {:.1} against static's {:.1} tokens/s (target more: {}); \
             median TTFT {} ms against static's {} ms (target lower: {}); load generator at {:.1}% of one core.",
            verdict(ratio >= 4.0),
            continuous.output_tokens_per_s,
            fixed.output_tokens_per_s,
            verdict(continuous.output_tokens_per_s > fixed.output_tokens_per_s),
            cell(continuous.ttft_ms.p50),
            cell(fixed.ttft_ms.p50),
            verdict(continuous.ttft_ms.p50 < fixed.ttft_ms.p50),
            continuous.load_generator_cpu.percent_of_one_core,
        );
    }
    out
}

/// Registers the chart's font with plotters' pure-Rust text renderer, so
/// no system font library is needed, only a font file.
fn register_font(chosen: Option<&Path>) -> anyhow::Result<()> {
    let path = match chosen {
        Some(path) => path.to_path_buf(),
        None => FONT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .with_context(|| format!("no font found at {FONT_PATHS:?}; pass one with --font"))?,
    };
    let bytes =
        std::fs::read(&path).with_context(|| format!("failed to read font {}", path.display()))?;
    // plotters keeps the font for the life of the process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("invalid font file {}", path.display()))?;
    Ok(())
}

type Metric = fn(&Report) -> Option<f64>;

fn draw_chart(runs: &[Run], png: &Path) -> anyhow::Result<()> {
    let models = models(runs);
    let height = 420 * models.len() as u32;
    let root = BitMapBackend::new(png, (1400, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((models.len(), 2));
    let metrics: [(&str, Metric); 2] = [
        ("output tokens/s", |report| Some(report.output_tokens_per_s)),
        ("median time to first token (ms)", |report| {
            report.ttft_ms.p50
        }),
    ];
    for (row, model) in models.iter().enumerate() {
        for (column, (label, metric)) in metrics.iter().enumerate() {
            draw_panel(&panels[row * 2 + column], runs, model, label, *metric)?;
        }
    }
    root.present()
        .with_context(|| format!("failed to write {}", png.display()))?;
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &[Run],
    model: &str,
    label: &str,
    metric: Metric,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let concurrencies: BTreeSet<usize> = runs
        .iter()
        .filter(|run| run.model == model)
        .map(|run| run.concurrency)
        .collect();
    let highest = concurrencies.iter().copied().max().unwrap_or(1).max(2) as f64;
    let key_points: Vec<f64> = concurrencies
        .iter()
        .map(|&concurrency| concurrency as f64)
        .collect();
    let top = runs
        .iter()
        .filter(|run| run.model == model)
        .filter_map(|run| metric(&run.report))
        .fold(0.0_f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{model}: {label}"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (1.0..highest).log_scale().with_key_points(key_points),
            0.0..(top * 1.1).max(1.0),
        )?;
    chart
        .configure_mesh()
        .x_desc("concurrency (clients)")
        .y_desc(label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 15))
        .draw()?;
    let colors = [BLUE, RED, GREEN];
    for (mode, color) in MODES.iter().zip(colors) {
        let points: Vec<(f64, f64)> = concurrencies
            .iter()
            .filter_map(|&concurrency| {
                let report = find(runs, model, mode, concurrency)?;
                Some((concurrency as f64, metric(report)?))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*mode)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(
            points
                .into_iter()
                .map(|point| Circle::new(point, 4, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}
