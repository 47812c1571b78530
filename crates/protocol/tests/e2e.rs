//! Private generation end to end on the real model: public prefix (strict and K = 1), length
//! padding (what the server saw), and quality under encryption on a text slice (strict
//! and K = 4). One prepared model serves every test. Every client here holds only the
//! client bundle (`Weights::client_bundle`: no layer matrix), the server the full model.

#![allow(clippy::unwrap_used, reason = "test helpers may panic")]

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use selene_ckks::Parameters;
use selene_linalg::{EncryptedInput, LinalgPreset, Link};
use selene_model::{
    forward, generate, store, KvCache, LinearStage, Logits, QuantLinear, Sampler, SamplingParams,
    Tokenizer, Weights,
};
use selene_protocol::wire::{self, Message};
use selene_protocol::{
    compare_logits, generate_after_prefix, generate_selective, InProcess, Limits, ModelServer,
    PaddedLinear, PlainTail, PrefixKv, PrefixLimits, PreparedModel, PublicPrefix, SelectiveClient,
    StrictLinear, Transport,
};

/// The protocol's default release flooding (the audit's DEFAULT_FLOOD_SIGMA).
const SIGMA: f64 = 0.01;

struct Fixture {
    /// The full model: the servers' weights and the plaintext reference.
    w: Weights,
    /// Its client bundle: what every client computes with.
    client: Weights,
    tok: Tokenizer,
    params: Arc<Parameters>,
    model: Arc<PreparedModel>,
    /// The first [`WIDE_LAYERS`] layers at `coeff12wide`, for selective clients.
    wide: Arc<PreparedModel>,
    /// The same at `coeff12widepack`, planned for `wan`.
    wide_pack: Arc<PreparedModel>,
}

/// Layers prepared at `coeff12wide` (the largest K the selective tests use).
const WIDE_LAYERS: usize = 4;

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let w = store::load(None).unwrap();
        let tok = Tokenizer::from_gguf(w.gguf()).unwrap();
        let params = LinalgPreset::Coeff12.build().unwrap();
        let layers = w.config().n_layers;
        let model = Arc::new(PreparedModel::new(&params, &w, layers, &mut || {}).unwrap());
        let wide_params = LinalgPreset::Coeff12Wide.build().unwrap();
        let wide = Arc::new(PreparedModel::new(&wide_params, &w, WIDE_LAYERS, &mut || {}).unwrap());
        let pack_params = LinalgPreset::Coeff12WidePack.build().unwrap();
        let wide_pack = Arc::new(
            PreparedModel::for_link(&pack_params, &w, WIDE_LAYERS, &Link::WAN, &mut || {}).unwrap(),
        );
        let client = w.client_bundle().unwrap();
        Fixture {
            w,
            client,
            tok,
            params,
            model,
            wide,
            wide_pack,
        }
    })
}

fn greedy() -> Sampler {
    Sampler::new(SamplingParams::default()).unwrap()
}

fn cont() -> impl FnMut(u32) -> selene_model::Result<ControlFlow<()>> {
    |_| Ok(ControlFlow::Continue(()))
}

/// What the server saw of one request: layer, stage, token count in the header, bytes.
type Seen = (usize, LinearStage, usize, usize);

/// A transport that records what the server saw, as a network peer would.
struct Recording {
    inner: InProcess,
    params: Arc<Parameters>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Transport for Recording {
    fn send(&mut self, request: &[u8]) -> selene_protocol::Result<()> {
        let frame = wire::decode(request, &Limits::default())?;
        if let Message::Product {
            layer,
            stage,
            ciphertext,
        } = frame.message
        {
            let n = EncryptedInput::from_bytes(&ciphertext, &self.params)?.tokens();
            self.seen
                .lock()
                .unwrap()
                .push((layer as usize, stage, n, request.len()));
        }
        self.inner.send(request)
    }

    fn receive(&mut self) -> selene_protocol::Result<Vec<u8>> {
        self.inner.receive()
    }

    fn token(&self) -> &[u8] {
        self.inner.token()
    }

    fn server_time(&self) -> Duration {
        self.inner.server_time()
    }
}

fn strict(f: &Fixture) -> StrictLinear<'_, InProcess> {
    StrictLinear::new(
        &f.client,
        &f.params,
        f.model.layouts(),
        InProcess::new(ModelServer::new(f.model.clone())),
    )
    .unwrap()
}

/// A selective client for layers `0..k` at `coeff12wide`, its decryptions flooded for
/// `capacity` released rows.
fn selective(f: &Fixture, k: usize, capacity: usize) -> SelectiveClient<'_, InProcess> {
    selective_on(f, &f.wide, k, capacity)
}

/// [`selective`] against the layers of `model` (a preset that floods).
fn selective_on<'f>(
    f: &'f Fixture,
    model: &Arc<PreparedModel>,
    k: usize,
    capacity: usize,
) -> SelectiveClient<'f, InProcess> {
    let strict = StrictLinear::new(
        &f.client,
        model.params(),
        model.layouts()[..k].to_vec(),
        InProcess::new(ModelServer::new(model.clone())),
    )
    .unwrap();
    SelectiveClient::new(&f.client, k, strict, SIGMA, capacity).unwrap()
}

#[test]
fn public_prefix_strict_and_k1_match_plain_on_the_concatenation() {
    let f = fixture();
    let c = f.w.config();
    // The guide's first two paragraphs, ending with a newline: a token boundary.
    let doc = include_str!("../../../testdata/public_context.txt");
    let cut = doc.match_indices("\n\n").nth(1).unwrap().0 + 1;
    let public = &doc[..cut];
    let private = "On Saturdays the library closes at";
    let pub_ids = f.tok.encode(public).unwrap();
    let priv_ids = f.tok.encode(private).unwrap();
    let all = f.tok.encode(&format!("{public}{private}")).unwrap();
    assert_eq!(all, [pub_ids.clone(), priv_ids.clone()].concat());
    let p = pub_ids.len();
    assert!((48..=96).contains(&p), "public prefix of {p} tokens");

    // The server's plaintext run; the client gets it as bytes.
    let kv = PublicPrefix::run(&f.w, &pub_ids).unwrap();
    assert_eq!((kv.positions(), kv.layers()), (p, 0..c.n_layers));
    let lim = PrefixLimits::for_config(c);
    let got = PrefixKv::from_bytes(&kv.to_bytes(), c, &lim).unwrap();
    assert_eq!(got, kv);

    // The rows equal the plaintext forward pass's own rows: exactly for the prefix run
    // alone, and to float rounding for the concatenation (batched products of another
    // row count may sum in another order).
    let mut cache = KvCache::new(c, p);
    forward(
        &f.w,
        &pub_ids,
        &mut cache,
        &mut QuantLinear::new(&f.w),
        Logits::Last,
    )
    .unwrap();
    let mut whole = KvCache::new(c, all.len());
    forward(
        &f.w,
        &all,
        &mut whole,
        &mut QuantLinear::new(&f.w),
        Logits::Last,
    )
    .unwrap();
    let rows = p * c.kv_dim();
    let mut max_diff = 0.0f32;
    for l in 0..c.n_layers {
        assert_eq!(kv.keys(l), cache.keys(l), "layer {l} keys");
        assert_eq!(kv.values(l), cache.values(l), "layer {l} values");
        for (a, b) in kv.keys(l).iter().zip(&whole.keys(l)[..rows]) {
            max_diff = max_diff.max((a - b).abs() / a.abs().max(1.0));
        }
        for (a, b) in kv.values(l).iter().zip(&whole.values(l)[..rows]) {
            max_diff = max_diff.max((a - b).abs() / a.abs().max(1.0));
        }
    }
    eprintln!("prefix rows vs the concatenated plaintext pass: max rel diff {max_diff:.1e}");
    assert!(max_diff < 1e-4, "prefix rows differ by {max_diff}");

    let max = 6;
    let want = generate(
        &f.w,
        &all,
        max,
        &[],
        &mut greedy(),
        &mut QuantLinear::new(&f.w),
        &mut cont(),
    )
    .unwrap();

    // Strict mode: every private product encrypted, positions p.. .
    let mut enc = strict(f);
    let got = generate_after_prefix(
        &f.client,
        Some(&got),
        &priv_ids,
        max,
        &[],
        &mut greedy(),
        &mut enc,
        &mut cont(),
    )
    .unwrap();
    assert_eq!(got, want, "strict mode after a public prefix");
    // Only the private tokens crossed encrypted: the prompt once, then one per step.
    assert_eq!(enc.stats().products, 4 * c.n_layers * max);

    // Selective K = 1: the client gets layer 0's rows, the server's tail keeps 1.. .
    let k = 1;
    let (head, tail) = kv.split_at(k);
    let head = PrefixKv::from_bytes(&head.to_bytes(), c, &lim).unwrap();
    let capacity = p + priv_ids.len() + max;
    let mut client = selective(f, k, capacity);
    let before = client.strict().flooding().unwrap().clone();
    client.install_prefix(&head).unwrap();
    // The prefix arrives in plaintext and is never decrypted: the flooding is re-sized
    // for the private rows only, so it keeps more precision.
    let after = client.strict().flooding().unwrap();
    assert_eq!(before.releases_cap, capacity as u64);
    assert_eq!(after.releases_cap, (capacity - p) as u64);
    assert!(
        after.precision_bits > before.precision_bits + 0.4,
        "{} vs {}",
        after.precision_bits,
        before.precision_bits
    );
    let mut server = PlainTail::new(&f.w, k, capacity);
    assert!(
        server.install_prefix(&head).is_err(),
        "wrong layers refused"
    );
    server.install_prefix(&tail).unwrap();
    let got = generate_selective(
        &mut client,
        &mut server,
        &priv_ids,
        max,
        &[],
        &mut greedy(),
        &mut cont(),
    )
    .unwrap();
    assert_eq!(got, want, "selective K = 1 after a public prefix");
    // Released rows: only private positions.
    assert_eq!(client.releases(), priv_ids.len() + max - 1);
}

#[test]
fn padding_hides_the_prompt_length_within_a_bucket() {
    let f = fixture();
    let c = f.w.config();
    let pad_to = 8;
    let max = 2;
    let run = |prompt: &str, pad: Option<usize>, max: usize| {
        let ids = f.tok.encode(prompt).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let t = Recording {
            inner: InProcess::new(ModelServer::new(f.model.clone())),
            params: f.params.clone(),
            seen: seen.clone(),
        };
        let enc = StrictLinear::new(&f.client, &f.params, f.model.layouts(), t).unwrap();
        let tokens = match pad {
            Some(p) => {
                let mut padded = PaddedLinear::new(enc, c, p).unwrap();
                generate(
                    &f.client,
                    &ids,
                    max,
                    &[],
                    &mut greedy(),
                    &mut padded,
                    &mut cont(),
                )
            }
            None => {
                let mut enc = enc;
                generate(
                    &f.client,
                    &ids,
                    max,
                    &[],
                    &mut greedy(),
                    &mut enc,
                    &mut cont(),
                )
            }
        }
        .unwrap();
        let plain = generate(
            &f.w,
            &ids,
            max,
            &[],
            &mut greedy(),
            &mut QuantLinear::new(&f.w),
            &mut cont(),
        )
        .unwrap();
        let seen = seen.lock().unwrap().clone();
        (ids.len(), tokens, plain, seen)
    };
    let (na, ta, pa, sa) = run("The patient was diagnosed with", Some(pad_to), max);
    let (nb, tb, pb, sb) = run("The report was finally written by the", Some(pad_to), max);
    assert!(na != nb && na <= pad_to && nb <= pad_to, "{na} {nb}");
    assert_eq!(
        (ta.clone(), tb),
        (pa.clone(), pb),
        "padded runs give plaintext tokens"
    );
    // The server saw the same requests for both prompts: every product of the prompt
    // with 8 tokens and the same byte counts, then 1-token decode steps.
    assert_eq!(sa, sb);
    let prompt_products = 4 * c.n_layers;
    assert_eq!(sa.len(), prompt_products * max);
    assert!(sa[..prompt_products].iter().all(|s| s.2 == pad_to));
    assert!(sa[prompt_products..].iter().all(|s| s.2 == 1));
    // Unpadded, the header shows the length (and the first token is the same).
    let (_, tu, _, su) = run("The patient was diagnosed with", None, 1);
    assert_eq!(tu[..], ta[..1]);
    assert!(su.iter().all(|s| s.2 == na));
}

#[test]
fn quality_on_a_text_slice_strict_and_k4() {
    let f = fixture();
    let c = f.w.config();
    let text = include_str!("../../../testdata/quality.txt");
    let ids: Vec<u32> = f.tok.encode(text).unwrap().into_iter().take(48).collect();
    assert_eq!(ids.len(), 48);
    let n = ids.len();
    let plain = forward(
        &f.w,
        &ids,
        &mut KvCache::new(c, n),
        &mut QuantLinear::new(&f.w),
        Logits::All,
    )
    .unwrap();
    let strict_logits = forward(
        &f.client,
        &ids,
        &mut KvCache::new(c, n),
        &mut strict(f),
        Logits::All,
    )
    .unwrap();
    // K = 4 on the first 32 positions: the most its flooding, sized for every released
    // coefficient, carries above the 10-bit floor (docs/hardening.md, issue 20 item 1).
    let (k, m) = (4, 32);
    let mut client = selective(f, k, m);
    let mut tail = PlainTail::new(&f.w, k, m);
    let sel_logits = tail.handle_all(&client.step(&ids[..m]).unwrap()).unwrap();
    // The same at coeff12widepack: packed outputs (Galois keys, exact merges) under the
    // same flooding.
    let mut client = selective_on(f, &f.wide_pack, k, m);
    let mut tail = PlainTail::new(&f.w, k, m);
    let pack_logits = tail.handle_all(&client.step(&ids[..m]).unwrap()).unwrap();
    for (mode, logits, rows) in [
        ("strict", &strict_logits, n),
        ("K = 4", &sel_logits, m),
        ("K = 4 packed", &pack_logits, m),
    ] {
        let q = compare_logits(
            &plain[..rows * c.vocab_size],
            logits,
            c.vocab_size,
            &ids[..rows],
        )
        .unwrap();
        eprintln!(
            "{mode}: perplexity {:.4} vs plaintext {:.4} ({:.3}%), max |logit err| {:.2e}, \
             argmax flips {:?}",
            q.ppl_encrypted,
            q.ppl_reference,
            100.0 * q.ppl_rel_err(),
            q.max_logit_err,
            q.flips
        );
        // K = 4 floods every product decryption (see below), random per run: 0.74%,
        // 1.03%, 3.26%, 6.75%, 1.65%, 2.88% and 0.97% measured on 32 positions with the
        // issue-20 sigma (0.10% and 0.58% on 48 with the old, too small one). A broken
        // layout or key makes the logits noise, and the perplexity that of a uniform
        // guess over 49,152 tokens: a thousand times the reference, far past 25%.
        let ppl_bound = if mode == "strict" { 0.005 } else { 0.25 };
        assert!(
            q.ppl_rel_err() < ppl_bound,
            "{mode}: perplexity off by {}",
            q.ppl_rel_err()
        );
        // Strict: CKKS noise only (a few hundredths, as in tests/strict.rs). K = 4 adds
        // the decryption flooding of every product (LMSS22 sigma for a 32-position cap,
        // about 2^34.5 download units: ~10.1 bits left per product) and the release's
        // N(0, 0.01^2), which the 26 plaintext layers carry to the logits. The worst of
        // 32 x 49152 logits is heavy-tailed across runs: 2.31, 1.75 (2026-12-03), 4.72,
        // 1.85, 3.33, 2.11 and 1.77 (2026-12-04); the perplexity bound above is what
        // catches a broken layout or key, this one a gross error.
        let bound = if mode == "strict" { 0.1 } else { 8.0 };
        assert!(
            q.max_logit_err < bound,
            "{mode}: logit error {}",
            q.max_logit_err
        );
        // A flip is allowed only at a near-tie that the measured noise can explain.
        for fl in &q.flips {
            assert!(fl.gap <= 2.0 * q.max_logit_err, "{mode}: flip {fl:?}");
        }
    }
}
