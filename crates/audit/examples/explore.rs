use selene_audit::probe::Similarity;
use selene_audit::*;
use std::time::Instant;
fn main() -> anyhow_free::R {
    let path = std::path::PathBuf::from(std::env::var("HOME").unwrap())
        .join(".cache/selene/SmolLM2-135M-Instruct.Q4_1.gguf");
    let t0 = Instant::now();
    let w = selene_model::Weights::load(&path).unwrap();
    let tok = selene_model::Tokenizer::from_gguf(w.gguf()).unwrap();
    eprintln!("load {:?}", t0.elapsed());
    let ks: Vec<usize> = std::env::args()
        .nth(1)
        .unwrap_or("0,1,8,29".into())
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let nprompts: usize = std::env::args()
        .nth(2)
        .unwrap_or("6".into())
        .parse()
        .unwrap();
    let maxk = *ks.iter().max().unwrap();
    let emb = probe::EmbeddingTable::from_weights(&w).unwrap();
    let mut dense = dense::DenseLinear::new(&w, maxk).unwrap();
    let t0 = Instant::now();
    let tr = runner::train_probes(&w, &tok, &mut dense, &emb, &ks, &mut |_| {}).unwrap();
    eprintln!("train {:?} rows {}", t0.elapsed(), tr.rows());
    let prompts = runner::tokenize(&tok, &corpus::evaluation_prompts()[..nprompts]).unwrap();
    for (ki, &k) in ks.iter().enumerate() {
        for &sigma in &[0.0, 0.01] {
            for lam in [1e-3] {
                if std::env::var("GRID").is_err() {
                    continue;
                }
                for sim in [Similarity::Dot, Similarity::Cosine, Similarity::L2] {
                    let pr = tr.probe(k, lam, sigma, sim).unwrap();
                    let (mut hit, mut n, mut top8) = (0, 0, 0);
                    for p in &prompts {
                        let st = view::clean_states(&w, &p.tokens, &[k]).unwrap();
                        let mut rng =
                            <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
                        let v = view::AttackerView::from_clean(&st[0], 576, k, sigma, &mut rng)
                            .unwrap();
                        let r = pr.rank(&v.hidden, &emb, 8).unwrap();
                        for (t, rr) in r.iter().enumerate() {
                            n += 1;
                            if rr[0] == p.tokens[t] {
                                hit += 1;
                            }
                            if rr.contains(&p.tokens[t]) {
                                top8 += 1;
                            }
                        }
                    }
                    println!(
                        "k={k} sigma={sigma} lam={lam} {sim:?}: top1 {:.3} top8 {:.3}",
                        hit as f64 / n as f64,
                        top8 as f64 / n as f64
                    );
                }
            }
        }
        let _ = ki;
        let pr = tr.probe(k, 1e-3, 0.0, Similarity::Cosine).unwrap();
        let t0 = Instant::now();
        let (mut ok, mut n, mut tried) = (0, 0, 0);
        let mut maxrel: f64 = 0.0;
        for p in &prompts {
            let st = view::clean_states(&w, &p.tokens, &[k]).unwrap();
            let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
            let v = view::AttackerView::from_clean(&st[0], 576, k, 0.0, &mut rng).unwrap();
            let inv = inversion::invert(
                &w,
                &mut dense,
                &pr,
                &emb,
                &v,
                &inversion::InversionConfig::default(),
            )
            .unwrap();
            let bad: Vec<_> = (0..p.tokens.len())
                .filter(|&t| inv.tokens[t] != p.tokens[t] || !inv.matched[t])
                .map(|t| {
                    (
                        t,
                        inv.tried[t],
                        inv.matched[t],
                        tok.decode(&[p.tokens[t]]).unwrap(),
                    )
                })
                .collect();
            if !bad.is_empty() {
                println!("  miss {bad:?}");
            }
            for t in 0..p.tokens.len() {
                n += 1;
                if inv.tokens[t] == p.tokens[t] {
                    ok += 1;
                }
            }
            tried += inv.tried.iter().sum::<usize>();
            // consistency: run truth through candidates
            let mut cache = selene_model::KvCache::new(w.config(), p.tokens.len());
            let mut cs = candidates::CandidateStates::default();
            for t in 0..p.tokens.len() {
                candidates::run_candidates(
                    &w,
                    &mut dense,
                    &cache,
                    k,
                    &p.tokens[t..t + 1],
                    &mut cs,
                    &mut |_, _| {},
                )
                .unwrap();
                let h = cs.hidden(0);
                let o = v.state(t);
                let d: f64 = h
                    .iter()
                    .zip(o)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let nn: f64 = o.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
                maxrel = maxrel.max(d / nn);
                cs.kv_of(0).unwrap().append_to(&mut cache).unwrap();
            }
        }
        println!(
            "k={k} inversion {ok}/{n} tried/token {:.1} time/token {:.4}s maxrel {maxrel:.2e}",
            tried as f64 / n as f64,
            t0.elapsed().as_secs_f64() / n as f64
        );
    }
    Ok(())
}
mod anyhow_free {
    pub type R = Result<(), Box<dyn std::error::Error>>;
}
