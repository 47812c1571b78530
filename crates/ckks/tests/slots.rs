//! End-to-end tests with slot encoding against f64 references, precision per preset.
#![allow(clippy::unwrap_used, clippy::panic)] // test helpers outside #[test] fns

mod common;

use common::{bits, uniform, Kit};
use proptest::prelude::*;
use selene_ckks::embedding::Complex64;
use selene_ckks::{Encoding, ExampleParams};

const S: Encoding = Encoding::Slots;

fn rot(v: &[f64], k: i64) -> Vec<f64> {
    let n = v.len() as i64;
    (0..n).map(|i| v[(i + k).rem_euclid(n) as usize]).collect()
}

/// Runs every op once on `preset` and asserts the stated precision (bits) for each.
fn slot_ops(preset: ExampleParams, steps: &[i64], min_fresh: f64, min_mul: f64) {
    let mut kit = Kit::new(preset.build().unwrap(), steps);
    let slots = kit.params.slots();
    let top = kit.params.max_level();
    let a = uniform(slots, 11);
    let b = uniform(slots, 12);
    let ca = kit.encrypt(&a, S);
    let cb = kit.encrypt(&b, S);
    let fresh = bits(&kit.decrypt(&ca), &a);
    let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    let prod: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    let add = bits(&kit.decrypt(&kit.eval.add(&ca, &cb).unwrap()), &sum);
    let pb = kit.encode(&b, top, S);
    let mp = kit
        .eval
        .rescale(&kit.eval.mul_plain(&ca, &pb).unwrap())
        .unwrap();
    let mp = bits(&kit.decrypt(&mp), &prod);
    let mr = kit.mul(&ca, &cb);
    let mr_bits = bits(&kit.decrypt(&mr), &prod);
    // Depth: square the product again down the chain while levels remain.
    let mut acc = mr.clone();
    let mut want = prod.clone();
    while acc.level() > 0 {
        acc = kit.mul(&acc.clone(), &acc);
        want.iter_mut().for_each(|x| *x *= *x);
    }
    let deep = bits(&kit.decrypt(&acc), &want);
    println!(
        "{preset:?}: fresh {fresh:.1}, add {add:.1}, mul_plain {mp:.1}, mul_relin {mr_bits:.1}, \
         depth {top} {deep:.1} bits"
    );
    assert!(
        fresh >= min_fresh && add >= min_fresh - 1.0,
        "{preset:?} fresh {fresh} add {add}"
    );
    assert!(
        mp >= min_mul && mr_bits >= min_mul,
        "{preset:?} mul {mp} / {mr_bits}"
    );
    assert!(deep >= min_mul - 4.0, "{preset:?} depth {deep}");
    // Every generated rotation, plain and hoisted, at the top level and after a rescale.
    let hoisted = kit.eval.rotate_hoisted(&ca, steps).unwrap();
    for (&k, h) in steps.iter().zip(&hoisted) {
        let want = rot(&a, k);
        let r = bits(&kit.rotated(&ca, k), &want);
        let hb = bits(&kit.decrypt(h), &want);
        let low = bits(&kit.rotated(&mr, k), &rot(&prod, k));
        assert!(
            r >= min_fresh - 1.0 && hb >= min_fresh - 1.0,
            "{preset:?} step {k}: {r} / {hb}"
        );
        assert!(low >= min_mul - 1.0, "{preset:?} step {k} after mul: {low}");
    }
}

#[test]
fn test12_slots_all_ops() {
    // Bits are the worst slot of 2048 under fresh random noise; at this toy preset they
    // spread over about 8.8 to 10.1 bits across runs (fresh as low as 9.3, mul_relin 8.8),
    // so the floors sit a bit below that tail. A broken op gives about 0 bits.
    slot_ops(ExampleParams::Test12, &[1, 2, 3, -1, -4, 100], 8.5, 8.0);
}

#[test]
fn anchor13_slots_all_ops() {
    slot_ops(ExampleParams::Anchor13, &[1, 2, 4, 8, -1], 15.5, 15.0);
}

#[test]
fn anchor14_slots_all_ops() {
    slot_ops(ExampleParams::Anchor14, &[1, -1, 5], 24.5, 24.0);
}

#[test]
fn anchor15_slots_all_ops() {
    slot_ops(ExampleParams::Anchor15, &[1], 33.0, 32.5);
}

#[test]
fn conjugation_and_complex_slots() {
    let mut kit = Kit::new(ExampleParams::Test12.build().unwrap(), &[1]);
    let slots = kit.params.slots();
    let re = uniform(slots, 21);
    let im = uniform(slots, 22);
    let z: Vec<Complex64> = re
        .iter()
        .zip(&im)
        .map(|(&r, &i)| Complex64::new(r, i))
        .collect();
    let pt = kit
        .enc
        .encode_complex(&z, kit.params.max_level(), kit.scale())
        .unwrap();
    let ct = kit.pk_enc.encrypt(&pt);
    let conj = kit.eval.conjugate(&ct).unwrap();
    let got = kit.enc.decode_complex(&kit.dec.decrypt(&conj)).unwrap();
    let err = got
        .iter()
        .zip(&z)
        .map(|(g, w)| (g - w.conj()).norm())
        .fold(0.0, f64::max);
    assert!(-err.log2() >= 8.5, "conjugation error {err}");
    let rotated = kit.eval.rotate(&ct, 1).unwrap();
    let got = kit.enc.decode_complex(&kit.dec.decrypt(&rotated)).unwrap();
    let err = (0..slots)
        .map(|i| (got[i] - z[(i + 1) % slots]).norm())
        .fold(0.0, f64::max);
    assert!(-err.log2() >= 8.5, "complex rotation error {err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]
    /// (a + b) * c = a * c + b * c and a * b = b * a, within the preset's precision.
    #[test]
    fn distributivity_and_commutativity(seed in 0u64..1000) {
        thread_local! {
            static KIT: std::cell::RefCell<Kit> =
                std::cell::RefCell::new(Kit::new(ExampleParams::Test12.build().unwrap(), &[]));
        }
        KIT.with(|k| {
            let kit = &mut *k.borrow_mut();
            let slots = kit.params.slots();
            let (a, b, c) = (uniform(slots, seed), uniform(slots, seed + 1), uniform(slots, seed + 2));
            let (ca, cb, cc) = (kit.encrypt(&a, S), kit.encrypt(&b, S), kit.encrypt(&c, S));
            let sum = kit.eval.add(&ca, &cb).unwrap();
            let left = kit.mul(&sum, &cc);
            let (ac, bc) = (kit.mul(&ca, &cc), kit.mul(&cb, &cc));
            let right = kit.eval.add(&ac, &bc).unwrap();
            prop_assert!(bits(&kit.decrypt(&left), &kit.decrypt(&right)) >= 8.0);
            let (ab, ba) = (kit.mul(&ca, &cb), kit.mul(&cb, &ca));
            let (ab, ba) = (kit.decrypt(&ab), kit.decrypt(&ba));
            prop_assert!(bits(&ab, &ba) >= 8.5);
            Ok(())
        })?;
    }
}

#[test]
fn accumulating_plain_products() {
    let mut kit = Kit::new(ExampleParams::Test12.build().unwrap(), &[]);
    let slots = kit.params.slots();
    let top = kit.params.max_level();
    let (a, b, c) = (uniform(slots, 31), uniform(slots, 32), uniform(slots, 33));
    let (ca, cb) = (kit.encrypt(&a, S), kit.encrypt(&b, S));
    let (pb, pc) = (kit.encode(&b, top, S), kit.encode(&c, top, S));
    // a*b + b*c, once with plain and once with prepared operands.
    let mut acc = kit.eval.mul_plain(&ca, &pb).unwrap();
    kit.eval.mul_plain_add_into(&cb, &pc, &mut acc).unwrap();
    let prepared_b = selene_ckks::PreparedPlaintext::new(&kit.params, pb.clone());
    let prepared_c = selene_ckks::PreparedPlaintext::new(&kit.params, pc.clone());
    let mut acc2 = kit.eval.mul_prepared(&ca, &prepared_b).unwrap();
    kit.eval
        .mul_prepared_add_into(&cb, &prepared_c, &mut acc2)
        .unwrap();
    let want: Vec<f64> = (0..slots).map(|i| a[i] * b[i] + b[i] * c[i]).collect();
    for acc in [acc, acc2] {
        let got = kit.decrypt(&kit.eval.rescale(&acc).unwrap());
        assert!(bits(&got, &want) >= 9.0);
    }
    // Accumulating into a ciphertext of another scale is an error.
    let mut wrong = ca.clone();
    assert!(kit.eval.mul_plain_add_into(&cb, &pc, &mut wrong).is_err());
}
