//! `selene bench net`: private generation as it ships, `selene serve` and `selene
//! client` as two processes talking TLS over TCP, through an emulated link
//! ([`super::emulator`]) per profile.
//!
//! Per link and mode: the prompt (`testdata/prompt32.txt` by default) and `--tokens`
//! greedy tokens. The client writes a `--report` ([`crate::cmd::report`]) with round
//! trips, bytes and its own CPU time at the first token and at the end, so every decode
//! figure is (end - first token) / (tokens - 1). The server's CPU time is sampled from
//! `/proc/PID/stat` every 20 ms and read at the same two wall-clock moments. The tokens
//! are compared with `selene plain`'s, run first in the same benchmark.

use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use selene_linalg::{LinalgPreset, Link};
use serde_json::{json, Value};

use super::emulator::Emulator;
use crate::cmd::args::link_parser;
use crate::cmd::report::{unix_s, RunReport, Snapshot};

const PROMPT: &str = include_str!("../../../../../testdata/prompt32.txt");
/// The extraction workload (`--workload N` picks its N-th prompt).
const WORKLOAD: &str = include_str!("../../../../../testdata/extraction.txt");
/// The environment variable the bench hands the token through (never on a command line).
const TOKEN_VAR: &str = "SELENE_BENCH_TOKEN";
/// How long a server may take to encode its weights and listen.
const SERVER_START: Duration = Duration::from_secs(900);

/// Options of `selene bench net`.
#[derive(Debug, Args)]
pub struct NetOpts {
    /// Worker threads of the server and of the client, each.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Links to emulate (repeat the flag): lan (1 Gbit/s, 1 ms RTT), wan (100 Mbit/s,
    /// 20 ms), home (20 Mbit/s up, 100 down, 30 ms) or RTT_MS,UP_MBIT,DOWN_MBIT.
    #[arg(long = "link", value_parser = link_parser, default_values = ["lan", "wan", "home"])]
    links: Vec<Link>,
    /// Modes to run (repeat the flag).
    #[arg(long = "mode", value_enum, default_values = ["strict", "packed", "k4"])]
    modes: Vec<Mode>,
    /// Greedy tokens generated per run (the first ends the prefill; the rest are decode).
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// The prompt file (default: the committed 32-token testdata/prompt32.txt).
    #[arg(long, value_name = "FILE", conflicts_with = "workload")]
    prompt: Option<PathBuf>,
    /// Run the N-th prompt (from 1) of the committed extraction workload
    /// (testdata/extraction.txt) as a chat turn instead of the prompt file: answers
    /// that quote their input, where prompt-lookup drafts pay.
    #[arg(long, value_name = "N")]
    workload: Option<usize>,
    /// Run the strict and packed modes with prompt-lookup drafts of up to K tokens per
    /// pass (k4 and the fused modes run without: they refuse drafts). `selene plain` stays
    /// undrafted, so "same" checks that drafts change nothing; compare with a run
    /// without the flag for the undrafted figures.
    #[arg(long, value_name = "prompt-lookup:K", value_parser = crate::cmd::args::draft_parser)]
    draft: Option<selene_model::PromptLookup>,
    /// Start the servers with `--prefill-rows N`: the stages also tiled for N rows per
    /// ciphertext, which prompts' passes take (0: off).
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = crate::cmd::serve::prefill_rows_parser)]
    prefill_rows: usize,
    /// Keep the servers', clients' and reports' files here (default: a temporary
    /// directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also plot decode s/token per link and mode as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    #[command(flatten)]
    model: crate::cmd::args::ModelArg,
}

/// What a run encrypts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Strict mode (every layer encrypted) at coeff12.
    Strict,
    /// Strict mode with packed outputs (coeff12pack), the server's plan made for the link.
    Packed,
    /// Selective mode, the first 4 layers encrypted (coeff12wide, flooded releases).
    K4,
    /// Selective mode, the first 4 layers encrypted with packed outputs
    /// (coeff12widepack, flooded releases, the plan made for the link).
    K4Packed,
    /// Strict mode at coeff12 with fused stage pairs: two round trips per layer (the
    /// client reads the full model to pin the fused matrices' scales).
    Fused,
    /// Packed outputs (coeff12pack, the plan made for the link) with fused stage pairs:
    /// two round trips per layer, one packed download per product.
    PackedFused,
    /// `k4-packed` with fused stage pairs over the 4 encrypted layers (the server holds
    /// fused matrices for every preset it serves; the client reads the full model).
    K4PackedFused,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Packed => "packed",
            Mode::K4 => "k4",
            Mode::K4Packed => "k4-packed",
            Mode::Fused => "fused",
            Mode::PackedFused => "packed-fused",
            Mode::K4PackedFused => "k4-packed-fused",
        }
    }

    /// The server's preset and whether its plan depends on the link.
    fn server_preset(self) -> LinalgPreset {
        match self {
            Mode::Packed | Mode::PackedFused => LinalgPreset::Coeff12Pack,
            Mode::Strict | Mode::K4 | Mode::K4Packed | Mode::K4PackedFused | Mode::Fused => {
                LinalgPreset::Coeff12
            }
        }
    }

    /// Whether the server's plan depends on the link (packed outputs).
    fn per_link(self) -> bool {
        matches!(
            self,
            Mode::Packed | Mode::PackedFused | Mode::K4Packed | Mode::K4PackedFused
        )
    }

    /// Selective mode: the server prepares its layers at the flooding presets.
    fn selective(self) -> bool {
        matches!(self, Mode::K4 | Mode::K4Packed | Mode::K4PackedFused)
    }

    /// The client's policy flags.
    fn client_flags(self) -> Vec<String> {
        match self {
            Mode::Strict => vec![],
            Mode::Packed => vec!["--preset".into(), "coeff12pack".into()],
            Mode::K4 => vec![
                "--encrypted-layers".into(),
                "4".into(),
                "--preset".into(),
                "coeff12wide".into(),
            ],
            Mode::K4Packed => vec![
                "--encrypted-layers".into(),
                "4".into(),
                "--preset".into(),
                "coeff12widepack".into(),
            ],
            Mode::K4PackedFused => vec![
                "--encrypted-layers".into(),
                "4".into(),
                "--preset".into(),
                "coeff12widepack".into(),
                "--fuse".into(),
                "--full-model".into(),
            ],
            Mode::Fused => vec!["--fuse".into(), "--full-model".into()],
            Mode::PackedFused => vec![
                "--preset".into(),
                "coeff12pack".into(),
                "--fuse".into(),
                "--full-model".into(),
            ],
        }
    }
}

/// Runs `selene bench net`.
pub fn run(opts: &NetOpts) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.tokens >= 2,
        "--tokens must be at least 2 (one prefill, one decode)"
    );
    anyhow::ensure!(opts.threads >= 1, "--threads must be at least 1");
    let prompt = match (&opts.prompt, opts.workload) {
        (Some(p), _) => {
            std::fs::read_to_string(p).with_context(|| format!("could not read {}", p.display()))?
        }
        (None, Some(n)) => {
            let prompts = selene_model::draft::workload_prompts(WORKLOAD);
            n.checked_sub(1)
                .and_then(|i| prompts.get(i))
                .with_context(|| {
                    format!(
                        "--workload {n}: the workload has prompts 1 to {}",
                        prompts.len()
                    )
                })?
                .clone()
        }
        (None, None) => PROMPT.to_string(),
    };
    let prompt = prompt.trim_end().to_string();
    let tmp = tempfile::tempdir().context("could not make a temporary directory")?;
    let dir = match &opts.keep {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("could not make {}", d.display()))?;
            d.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let exe = std::env::current_exe().context("could not find the selene binary")?;
    let bench = Bench {
        exe: &exe,
        dir: &dir,
        opts,
        prompt: &prompt,
        token: selene_protocol::new_token(),
    };

    eprintln!("[bench net: selene plain, the reference tokens]");
    let plain = bench.plain()?;
    let plain_decode = plain.decode_s_per_token();
    let mut rows = Vec::new();
    let mut refused = Vec::new();
    for &mode in &opts.modes {
        // One server per preset, and per link where the plan depends on it.
        let mut server: Option<(Link, Server)> = None;
        for &link in &opts.links {
            let reuse = matches!(&server, Some((l, _)) if *l == link || !mode.per_link());
            if !reuse {
                drop(server.take()); // stop the previous one first: 2 cores
                server = Some((link, bench.server(mode, link)?));
            }
            let (_, srv) = server.as_ref().context("a server was started")?;
            let draft = opts
                .draft
                .filter(|_| matches!(mode, Mode::Strict | Mode::Packed));
            eprintln!("[bench net: {} on {link}: client running]", mode.name());
            let row = match bench.client(srv, mode, link, draft) {
                Ok(row) => row,
                // Selective mode's flooding refuses a context it cannot carry at
                // its preset's precision: a finding to report, not a failed bench.
                Err(e) if mode.selective() => {
                    let why = format!("{e:#}");
                    let why = why.lines().last().unwrap_or_default().to_string();
                    eprintln!("[bench net: {} on {link}: refused: {why}]", mode.name());
                    refused.push(json!({
                        "mode": mode.name(), "link": link.to_string(), "refused": why,
                    }));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let row = Row {
                differs_at: first_difference(&row.report.ids, &plain.ids),
                ..row
            };
            eprintln!("{}", row.line());
            rows.push(row);
        }
    }

    print_table(&rows, plain_decode, opts);
    for r in &refused {
        println!(
            "{} on {}: refused ({})",
            r["mode"].as_str().unwrap_or_default(),
            r["link"].as_str().unwrap_or_default(),
            r["refused"].as_str().unwrap_or_default()
        );
    }
    if let Some(path) = &opts.json {
        let doc = json!({
            "benchmark": "net",
            "threads_each": opts.threads,
            "tokens": opts.tokens,
            "prompt_tokens": plain.prompt_tokens,
            "workload": opts.workload,
            "plain": {
                "decode_s_per_token": plain_decode,
                "prefill_s": plain.prefill_s,
                "ids": plain.ids,
            },
            "rows": rows.iter().map(|r| r.json(plain_decode)).collect::<Vec<_>>(),
            "refused": refused,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    if let Some(path) = &opts.plot {
        std::fs::write(path, plot_svg(&rows, opts))
            .with_context(|| format!("could not write {}", path.display()))?;
    }
    Ok(())
}

/// What every run shares.
struct Bench<'a> {
    exe: &'a Path,
    dir: &'a Path,
    opts: &'a NetOpts,
    prompt: &'a str,
    token: String,
}

/// A running `selene serve`, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    fingerprint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client run's measured figures.
struct Row {
    mode: Mode,
    /// The prompt-lookup draft the client ran with, if any.
    draft: Option<selene_model::PromptLookup>,
    link: Link,
    report: RunReport,
    /// Server CPU seconds at the first token and at the end.
    server_cpu: (f64, f64),
    /// Where the generated tokens first differ from `plain`'s (`None`: identical).
    differs_at: Option<usize>,
}

/// The first index at which `got` and `want` differ, counting a missing token as a
/// difference; `None` when they are equal.
fn first_difference(got: &[u32], want: &[u32]) -> Option<usize> {
    let at = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    (at < got.len().max(want.len())).then_some(at)
}

impl<'a> Bench<'a> {
    fn model_flags(&self) -> Vec<String> {
        match &self.opts.model.model {
            Some(p) => vec!["--model".into(), p.clone()],
            None => vec![],
        }
    }

    /// The generation flags `plain` and `client` share: `--chat` for a workload prompt.
    fn prompt_flags(&self) -> Vec<String> {
        if self.opts.workload.is_some() {
            vec!["--chat".into()]
        } else {
            vec![]
        }
    }

    /// `selene plain` on the prompt: the reference ids and the plaintext decode time.
    fn plain(&self) -> anyhow::Result<RunReport> {
        let report = self.dir.join("plain.json");
        let mut cmd = Command::new(self.exe);
        cmd.arg("plain")
            .arg(self.prompt)
            .args(["--max-tokens", &self.opts.tokens.to_string()])
            .arg("--report")
            .arg(&report)
            .args(self.model_flags())
            .args(self.prompt_flags())
            .env("RAYON_NUM_THREADS", self.opts.threads.to_string());
        run_logged(cmd, &self.dir.join("plain"))?;
        RunReport::read(&report)
    }

    /// Starts `selene serve` for `mode` with its plan made for `link`.
    fn server(&self, mode: Mode, link: Link) -> anyhow::Result<Server> {
        let log = self
            .dir
            .join(format!("serve-{}-{}.log", mode.name(), sanitize(&link)));
        let mut cmd = Command::new(self.exe);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--self-signed"])
            .args(["--token-env", TOKEN_VAR])
            .args(["--preset", &mode.server_preset().to_string()])
            .args(["--threads", &self.opts.threads.to_string()])
            .args(["--link", &link.to_string()])
            .args(self.model_flags())
            .env(TOKEN_VAR, &self.token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                File::create(&log)
                    .with_context(|| format!("could not create {}", log.display()))?,
            );
        if !mode.selective() {
            cmd.args(["--selective-layers", "0"]);
        }
        if matches!(mode, Mode::Fused | Mode::PackedFused | Mode::K4PackedFused) {
            cmd.arg("--fuse");
        }
        if self.opts.prefill_rows > 1 {
            cmd.args(["--prefill-rows", &self.opts.prefill_rows.to_string()]);
        }
        eprintln!(
            "[bench net: starting selene serve for {} on {link} (encoding the weights)]",
            mode.name()
        );
        let mut child = cmd.spawn().context("could not start selene serve")?;
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let addr = find_after(&text, "listening on ");
            let fp = find_after(&text, "fingerprint ");
            if let (Some(addr), Some(fp)) = (addr, fp) {
                let addr = addr
                    .parse()
                    .with_context(|| format!("bad address {addr}"))?;
                return Ok(Server {
                    child,
                    addr,
                    fingerprint: fp.to_string(),
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!("selene serve exited ({status}):\n{}", tail(&text));
            }
            if start.elapsed() > SERVER_START {
                let _ = child.kill();
                bail!(
                    "selene serve did not listen within {SERVER_START:?}:\n{}",
                    tail(&text)
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `selene client` through an emulated `link` to `server`.
    fn client(
        &self,
        server: &Server,
        mode: Mode,
        link: Link,
        draft: Option<selene_model::PromptLookup>,
    ) -> anyhow::Result<Row> {
        let emu =
            Emulator::start(server.addr, link).context("could not start the link emulator")?;
        let suffix = draft.map_or(String::new(), |d| format!("-draft{}", d.k()));
        let name = format!("client-{}-{}{suffix}", mode.name(), sanitize(&link));
        let report = self.dir.join(format!("{name}.json"));
        let mut cmd = Command::new(self.exe);
        cmd.arg("client")
            .arg(self.prompt)
            .args(["--max-tokens", &self.opts.tokens.to_string()])
            .args(["--server", &emu.addr().to_string()])
            .args(["--fingerprint", &server.fingerprint])
            .args(["--token-env", TOKEN_VAR])
            .args(["--threads", &self.opts.threads.to_string()])
            .arg("--report")
            .arg(&report)
            .args(mode.client_flags())
            .args(self.model_flags())
            .args(self.prompt_flags())
            .args(draft.map_or(vec![], |d| {
                vec!["--draft".into(), format!("prompt-lookup:{}", d.k())]
            }))
            .env(TOKEN_VAR, &self.token);
        let samples = Arc::new(Mutex::new(Vec::<(f64, f64)>::new()));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (samples, done, pid) = (Arc::clone(&samples), Arc::clone(&done), server.child.id());
            thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if let Some(cpu) = proc_cpu_s(pid) {
                        samples.lock().map(|mut s| s.push((unix_s(), cpu))).ok();
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let out = run_logged(cmd, &self.dir.join(&name));
        done.store(true, Ordering::Relaxed);
        let _ = sampler.join();
        out?;
        let report = RunReport::read(&report)?;
        let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
        let server_cpu = (
            cpu_at(&samples, report.first_token.unix_s),
            cpu_at(&samples, report.end.unix_s),
        );
        Ok(Row {
            mode,
            draft,
            link,
            report,
            server_cpu,
            differs_at: None,
        })
    }
}

impl Row {
    /// `yes` when the tokens equal `plain`'s, else `NO@i`, `i` the first generated token
    /// (from 1) that differs.
    fn same(&self) -> String {
        self.differs_at
            .map_or_else(|| "yes".to_string(), |i| format!("NO@{}", i + 1))
    }

    /// The mode's name, `+dK` when it ran with drafts of up to K tokens.
    fn label(&self) -> String {
        match self.draft {
            Some(d) => format!("{}+d{}", self.mode.name(), d.k()),
            None => self.mode.name().to_string(),
        }
    }

    /// Generated tokens per model pass after the prompt's.
    fn tokens_per_pass(&self) -> f64 {
        let later = self.report.passes.saturating_sub(1).max(1) as f64;
        self.report.ids.len().saturating_sub(1) as f64 / later
    }

    fn decode_tokens(&self) -> f64 {
        self.report.ids.len().saturating_sub(1).max(1) as f64
    }

    fn per_token(&self, f: impl Fn(&Snapshot) -> f64) -> f64 {
        (f(&self.report.end) - f(&self.report.first_token)) / self.decode_tokens()
    }

    fn line(&self) -> String {
        format!(
            "[bench net: {} on {}: {:.2} s/token decode, prefill {:.1} s, {:.0} round trips \
             per token, tokens identical to plain: {}]",
            self.label(),
            self.link,
            self.report.decode_s_per_token(),
            self.report.prefill_s,
            self.per_token(|s| s.exchanges as f64),
            self.same()
        )
    }

    fn json(&self, plain_decode: f64) -> Value {
        let r = &self.report;
        let server = (self.server_cpu.1 - self.server_cpu.0) / self.decode_tokens();
        let client = self.per_token(|s| s.cpu_s);
        json!({
            "mode": self.mode.name(),
            "draft_k": self.draft.map(|d| d.k()),
            "tokens_per_pass": self.tokens_per_pass(),
            "link": self.link.to_string(),
            "rtt_ms": self.link.rtt_ms,
            "up_mbit": self.link.up_mbit,
            "down_mbit": self.link.down_mbit,
            "decode_s_per_token": r.decode_s_per_token(),
            "token_s": r.token_s,
            "prefill_s": r.prefill_s,
            "prompt_tokens": r.prompt_tokens,
            "generated": r.ids.len(),
            "round_trips_per_token": self.per_token(|s| s.exchanges as f64),
            "prefill_round_trips": r.first_token.exchanges - r.start.exchanges,
            "mb_up_per_token": self.per_token(|s| s.bytes_up as f64) / 1e6,
            "mb_down_per_token": self.per_token(|s| s.bytes_down as f64) / 1e6,
            "prefill_mb": (r.first_token.bytes_up + r.first_token.bytes_down
                - r.start.bytes_up - r.start.bytes_down) as f64 / 1e6,
            "client_cpu_s_per_token": client,
            "server_cpu_s_per_token": server,
            "client_cpu_over_plain_decode": client / plain_decode,
            "identical_to_plain": self.differs_at.is_none(),
            "first_difference": self.differs_at,
            "ids": r.ids,
        })
    }
}

fn print_table(rows: &[Row], plain_decode: f64, opts: &NetOpts) {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "selene bench net: serve + client over TLS through an emulated link, {} threads each, \
         {} tokens (plain decode {:.3} s/token in the same run)",
        opts.threads, opts.tokens, plain_decode
    );
    let _ = writeln!(
        t,
        "{:<10} {:<14} {:>9} {:>9} {:>7} {:>6} {:>8} {:>8} {:>9} {:>9} {:>6}",
        "mode",
        "link",
        "s/token",
        "prefill",
        "trips",
        "t/pass",
        "MB up",
        "MB down",
        "client s",
        "server s",
        "same"
    );
    for r in rows {
        let j = r.json(plain_decode);
        let f = |k: &str| j[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            t,
            "{:<10} {:<14} {:>9.2} {:>9.1} {:>7.0} {:>6.2} {:>8.2} {:>8.2} {:>9.3} {:>9.3} {:>6}",
            r.label(),
            r.link.to_string(),
            f("decode_s_per_token"),
            f("prefill_s"),
            f("round_trips_per_token"),
            f("tokens_per_pass"),
            f("mb_up_per_token"),
            f("mb_down_per_token"),
            f("client_cpu_s_per_token"),
            f("server_cpu_s_per_token"),
            r.same()
        );
    }
    let _ = writeln!(
        t,
        "s/token, trips, MB and CPU are per decoded token (end minus first token over the \
         tokens after the first); t/pass is generated tokens per model pass after the \
         prompt's (above 1 with drafts); prefill is the time to the first token, session \
         set-up included; server CPU is sampled from /proc every 20 ms."
    );
    print!("{t}");
}

/// Decode s/token per link (x, in the order given) and mode (one polyline each), SVG.
fn plot_svg(rows: &[Row], opts: &NetOpts) -> String {
    let (w, h, left, bottom, top, right) = (640.0, 400.0, 60.0, 60.0, 30.0, 110.0);
    let ymax = rows
        .iter()
        .map(|r| r.report.decode_s_per_token())
        .fold(0.1f64, f64::max)
        * 1.1;
    let n = opts.links.len().max(1) as f64;
    let x = |i: usize| left + (i as f64 + 0.5) * (w - left - right) / n;
    let y = |v: f64| h - bottom - v / ymax * (h - bottom - top);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{left}\" y=\"18\">decode s/token per emulated link \
         (selene bench net)</text>\n"
    );
    let _ = writeln!(
        s,
        "<line x1=\"{left}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"black\"/>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{0}\" stroke=\"black\"/>",
        h - bottom,
        w - right
    );
    for k in 0..=4 {
        let v = ymax * k as f64 / 4.0;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
            left - 6.0,
            y(v) + 4.0
        );
    }
    for (i, l) in opts.links.iter().enumerate() {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{l}</text>\
             <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{} ms, {}/{} \
             Mbit/s</text>",
            x(i),
            h - bottom + 18.0,
            x(i),
            h - bottom + 34.0,
            l.rtt_ms,
            l.up_mbit,
            l.down_mbit
        );
    }
    let colours = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let mut series: Vec<String> = Vec::new();
    for r in rows {
        if !series.contains(&r.label()) {
            series.push(r.label());
        }
    }
    for (m, label) in series.iter().enumerate() {
        let c = colours[m % colours.len()];
        let pts: Vec<String> = opts
            .links
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                rows.iter()
                    .find(|r| r.label() == *label && r.link == *l)
                    .map(|r| format!("{:.1},{:.1}", x(i), y(r.report.decode_s_per_token())))
            })
            .collect();
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"/>",
            pts.join(" ")
        );
        for p in &pts {
            let (px, py) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, "<circle cx=\"{px}\" cy=\"{py}\" r=\"4\" fill=\"{c}\"/>");
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{}</text>",
            w - right + 10.0,
            top + 16.0 * (m as f64 + 1.0),
            label
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Runs `cmd` with stdout and stderr to `stem.out` / `stem.err`; an error with the
/// stderr's tail when it fails.
fn run_logged(mut cmd: Command, stem: &Path) -> anyhow::Result<()> {
    let (out, err) = (stem.with_extension("out"), stem.with_extension("err"));
    let status = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out)?)
        .stderr(File::create(&err)?)
        .status()
        .with_context(|| format!("could not run {cmd:?}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(&err).unwrap_or_default();
        bail!("{} failed ({status}):\n{}", stem.display(), tail(&text));
    }
    Ok(())
}

/// The whitespace-delimited word after `marker` in `text` (without a closing `]`).
fn find_after<'t>(text: &'t str, marker: &str) -> Option<&'t str> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let word = rest.split_whitespace().next()?;
    Some(word.trim_end_matches(']'))
}

/// The last lines of a log, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A link as a file-name part.
fn sanitize(link: &Link) -> String {
    link.to_string().replace([',', '.'], "_")
}

/// CPU seconds (user + system) of process `pid` so far, from `/proc/PID/stat`.
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at the state, field 3;
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| ticks / hz as f64)
}

/// The sampled CPU time at wall-clock time `t`, interpolated linearly between samples.
fn cpu_at(samples: &[(f64, f64)], t: f64) -> f64 {
    let i = samples.partition_point(|&(ts, _)| ts < t);
    match (
        i.checked_sub(1).and_then(|j| samples.get(j)),
        samples.get(i),
    ) {
        (Some(&(t0, c0)), Some(&(t1, c1))) if t1 > t0 => c0 + (c1 - c0) * (t - t0) / (t1 - t0),
        (Some(&(_, c)), _) | (None, Some(&(_, c))) => c,
        (None, None) => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_counts_a_missing_token() {
        assert_eq!(first_difference(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_difference(&[1, 2, 3], &[1, 5, 3]), Some(1));
        assert_eq!(first_difference(&[1, 2], &[1, 2, 3]), Some(2));
        assert_eq!(first_difference(&[1, 2, 3], &[1, 2]), Some(2));
        assert_eq!(first_difference(&[], &[]), None);
    }

    #[test]
    fn cpu_is_interpolated_between_samples() {
        let s = [(10.0, 1.0), (12.0, 3.0), (14.0, 3.5)];
        assert!((cpu_at(&s, 11.0) - 2.0).abs() < 1e-12);
        assert!((cpu_at(&s, 13.0) - 3.25).abs() < 1e-12);
        assert_eq!(cpu_at(&s, 20.0), 3.5);
        assert_eq!(cpu_at(&s, 5.0), 1.0);
        assert!(cpu_at(&[], 1.0).is_nan());
    }

    #[test]
    fn this_process_cpu_is_read_from_proc() {
        let me = proc_cpu_s(std::process::id()).unwrap();
        assert!(me >= 0.0 && me.is_finite());
    }

    #[test]
    fn server_log_lines_are_parsed() {
        let log = "[server: ...]\n[serve: listening on 127.0.0.1:4431]\n\
                   [serve: self-signed certificate, SHA-256 fingerprint abcd01]\n";
        assert_eq!(find_after(log, "listening on "), Some("127.0.0.1:4431"));
        assert_eq!(find_after(log, "fingerprint "), Some("abcd01"));
        assert_eq!(find_after(log, "nothing "), None);
    }
}
