//! One thread and several threads give bit-identical results.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::{uniform, Kit};
use selene_ckks::{Ciphertext, Encoding, ExampleParams};

#[test]
fn one_and_three_threads_agree_bit_for_bit() {
    let mut kit = Kit::new(ExampleParams::Test12.build().unwrap(), &[1, 2, 3]);
    let a = kit.encrypt(&uniform(kit.params.slots(), 1), Encoding::Slots);
    let b = kit.encrypt(&uniform(kit.params.slots(), 2), Encoding::Slots);
    let mut run = |threads: usize| -> (Vec<Ciphertext>, Vec<f64>) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let prod = kit.eval.mul_relin(&a, &b).unwrap();
            let prod = kit.eval.rescale(&prod).unwrap();
            let mut outs = kit.eval.rotate_hoisted(&prod, &[1, 2, 3]).unwrap();
            outs.push(kit.eval.rotate(&a, 2).unwrap());
            outs.push(prod);
            let decoded = kit.decrypt(&outs[0]);
            (outs, decoded)
        })
    };
    let (one, d1) = run(1);
    let (three, d3) = run(3);
    assert_eq!(one, three);
    assert_eq!(d1, d3);
}
