//! Repeats one op for profiling (development probe): `op_probe <op> <log_n> <reps>`.
use std::sync::Arc;
use std::time::Instant;
fn cpu_ns() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) * 1e7
}
use selene_ckks::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(1).cloned().unwrap_or("rescale".into());
    let preset = if args.get(2).map(|s| s.as_str()) == Some("13") {
        Preset::Anchor13
    } else {
        Preset::Anchor14
    };
    let reps: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
    let params = preset.build().unwrap();
    let sk = Arc::new(SecretKey::generate(&params));
    let pk = Arc::new(PublicKey::new(&sk));
    let rlk = Arc::new(RelinKey::new(&sk));
    let gks = Arc::new(GaloisKeys::new(&sk, &[1, 2, 3, 4, 5, 6, 7, 8], false));
    let enc = Encoder::new(&params).unwrap();
    let mut encr = Encryptor::with_public_key(pk);
    let dec = Decryptor::new(sk.clone());
    let mut ev = Evaluator::new(&params)
        .with_relin_key(rlk)
        .with_galois_keys(gks);
    let v: Vec<f64> = (0..params.slots())
        .map(|i| (i as f64 * 0.001).sin())
        .collect();
    let pt = enc
        .encode(
            &v,
            params.max_level(),
            Scale(params.default_scale()),
            Encoding::Slots,
        )
        .unwrap();
    let ct = encr.encrypt(&pt);
    let mut out = ct.clone();
    let steps: Vec<i64> = (1..=8).collect();
    let mut outs = ev.rotate_hoisted(&ct, &steps).unwrap();
    let t = Instant::now();
    let c = cpu_ns();
    for _ in 0..reps {
        match op.as_str() {
            "rescale" => ev.rescale_into(&ct, &mut out).unwrap(),
            "mul_relin" => ev.mul_relin_into(&ct, &ct, &mut out).unwrap(),
            "rotate" => ev.rotate_into(&ct, 1, &mut out).unwrap(),
            "hoisted" => ev.rotate_hoisted_into(&ct, &steps, &mut outs).unwrap(),
            "encrypt" => {
                encr.encrypt(&pt);
            }
            "decrypt" => {
                enc.decode(&dec.decrypt(&ct)).unwrap();
            }
            "mul_plain" => ev.mul_plain_into(&ct, &pt, &mut out).unwrap(),
            _ => {}
        }
    }
    println!(
        "{op}: wall {:.3} ms, cpu {:.3} ms",
        t.elapsed().as_secs_f64() * 1e3 / reps as f64,
        (cpu_ns() - c) / 1e6 / reps as f64
    );
}
