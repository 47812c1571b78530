//! `selene audit`: measures what each selective-mode policy leaks, the table `run`,
//! `client` and `openai` quote before a session starts.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use selene_audit::corpus::{evaluation_prompts, prompts_from_lines};
use selene_audit::inversion::InversionConfig;
use selene_audit::runner::{run_audit, AuditConfig, Progress, DEFAULT_LAYERS};
use selene_audit::view::DEFAULT_FLOOD_SIGMA;

/// Arguments of `selene audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// K values to audit: layers run encrypted before the residual stream is released.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_LAYERS)]
    pub layers: Vec<usize>,
    /// Flooding sigmas (value units) of the released states.
    #[arg(long, value_delimiter = ',', default_values_t = [0.0, DEFAULT_FLOOD_SIGMA])]
    pub flood: Vec<f64>,
    /// Prompts to attack, one a line (default: the repo's evaluation corpus, whose
    /// sensitive fields are scored too).
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Attack only the first N prompts.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Most candidate tokens tried per position before falling back to the closest.
    #[arg(long, default_value_t = InversionConfig::default().budget)]
    pub budget: usize,
    /// Write the table as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the recovery/latency plot as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Worker threads (rayon); default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    model: super::args::ModelArg,
}

/// Runs `selene audit`.
pub fn run(args: &AuditArgs) -> anyhow::Result<()> {
    super::threads::init_on_main(args.threads)?;
    let (w, tok) = super::args::load(args.model.model.as_deref())?;
    let mut prompts = match &args.prompts {
        Some(p) => prompts_from_lines(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => evaluation_prompts(),
    };
    prompts.truncate(args.limit);
    anyhow::ensure!(!prompts.is_empty(), "no prompts to attack");
    let cfg = AuditConfig {
        layers: args.layers.clone(),
        sigmas: args.flood.clone(),
        inversion: InversionConfig {
            budget: args.budget,
            ..InversionConfig::default()
        },
        ..AuditConfig::default()
    };
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:32} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta})",
        )
        .context("progress bar template")?
        .progress_chars("=> "),
    );
    let mut partial = selene_audit::report::AuditReport::default();
    let report = run_audit(&w, &tok, &prompts, &cfg, &mut |p| match p {
        Progress::Training { done, total } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message("training probes");
        }
        Progress::Attacking {
            k,
            sigma,
            done,
            total,
        } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("attacking K={k} sigma={sigma}"));
        }
        Progress::Cell(row) => {
            bar.println(format!(
                "K={} sigma={}: token recovery {:.3}, probe top-1 {:.3}, {:.4} s/token",
                row.k, row.flood_sigma, row.token_recovery, row.probe_top1, row.s_per_token
            ));
            partial.results.push(row);
            // Save what is measured so far: a long audit interrupted keeps its rows.
            if let (Some(path), Ok(j)) = (&args.json, partial.to_json()) {
                if let Err(e) = std::fs::write(path, j + "\n") {
                    bar.println(format!("warning: could not write {}: {e}", path.display()));
                }
            }
        }
    })?;
    bar.finish_and_clear();
    println!(
        "{} prompts, {} K values x {} sigmas",
        prompts.len(),
        cfg.layers.len(),
        cfg.sigmas.len()
    );
    print!("{}", report.markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json()? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        selene_audit::plot::write_svg(&report, path)?;
    }
    Ok(())
}
