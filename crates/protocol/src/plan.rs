//! Whether fused stage pairs (`selene_model::fused`) pay on a link, per the cost model:
//! the round trips they save against the modelled time their stacked products add.

use selene_ckks::Parameters;
use selene_linalg::coeff::modelled_row_ns;
use selene_linalg::{Link, MatrixShape};
use selene_model::{Config, FusedPair, LinearStage};

/// What fusing changes per decoded token on a link, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FusionPlan {
    /// Round trips saved: `4 K - (2 K + 1)` times the link's RTT for `K` encrypted layers.
    pub saved_s: f64,
    /// The stacked products' modelled time (server, client, bytes at the link's rates)
    /// minus that of the outer stages they replace; the inner stages run either way.
    pub added_s: f64,
}

impl FusionPlan {
    /// The cost model's verdict: fuse when the round trips saved outweigh the time added.
    pub fn pays(&self) -> bool {
        self.saved_s > self.added_s
    }
}

/// The [`FusionPlan`] of a model shaped `c` with its first `layers` layers encrypted
/// (the model's depth in strict mode) under `params` on `link`: per token, `layers`
/// stacked `AttnGate` products instead of `GateUp` and `layers - 1` stacked `DownQkv`
/// instead of the next layer's `Qkv`, each with the tiling its server would choose for
/// `link`.
pub fn fusion_plan(c: &Config, layers: usize, params: &Parameters, link: &Link) -> FusionPlan {
    let layers = layers.min(c.n_layers) as f64;
    let ns = |(d_in, d_out): (usize, usize)| {
        modelled_row_ns(params, MatrixShape::new(d_in, d_out), link)
    };
    let attn_gate = ns(FusedPair::AttnGate.stacked_dims(c)) - ns(LinearStage::GateUp.dims(c));
    let down_qkv = ns(FusedPair::DownQkv.stacked_dims(c)) - ns(LinearStage::Qkv.dims(c));
    FusionPlan {
        saved_s: (2.0 * layers - 1.0).max(0.0) * link.rtt_ms * 1e-3,
        added_s: (layers * attn_gate + (layers - 1.0).max(0.0) * down_qkv) * 1e-9,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests may panic")]
mod tests {
    use super::*;
    use selene_linalg::LinalgPreset;
    use selene_model::Arch;

    fn smollm2() -> Config {
        Config {
            arch: Arch::Llama,
            d_model: 576,
            n_layers: 30,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            d_ff: 1536,
            vocab_size: 49152,
            context_length: 8192,
            rope_theta: 100000.0,
            rms_eps: 1e-5,
        }
    }

    #[test]
    fn fusion_pays_on_slow_round_trips_and_not_on_a_lan() {
        let params = LinalgPreset::Coeff12Pack.build().unwrap();
        let c = smollm2();
        let layers = c.n_layers;
        let lan = fusion_plan(&c, layers, &params, &Link::LAN);
        let wan = fusion_plan(&c, layers, &params, &Link::WAN);
        let home = fusion_plan(&c, layers, &params, &Link::HOME);
        eprintln!("lan {lan:?}\nwan {wan:?}\nhome {home:?}");
        // 59 round trips saved per token.
        assert!((wan.saved_s - 59.0 * 0.020).abs() < 1e-12, "{wan:?}");
        assert!(wan.added_s > 0.0 && lan.added_s > 0.0, "{lan:?} {wan:?}");
        assert!(!lan.pays(), "{lan:?}");
        assert!(wan.pays(), "{wan:?}");
        assert!(home.pays(), "{home:?}");
    }

    #[test]
    fn selective_fusion_saves_two_k_minus_one_round_trips() {
        let params = LinalgPreset::Coeff12WidePack.build().unwrap();
        let c = smollm2();
        let wan = fusion_plan(&c, 4, &params, &Link::WAN);
        eprintln!("K = 4 on wan: {wan:?}");
        // 7 round trips saved per token, and the stacked products of 4 + 3 pairs added:
        // less than the model's 30 + 29.
        assert!((wan.saved_s - 7.0 * 0.020).abs() < 1e-12, "{wan:?}");
        let strict = fusion_plan(&c, c.n_layers, &params, &Link::WAN);
        let per_pair = strict.added_s / 59.0;
        assert!(
            (wan.added_s - 7.0 * per_pair).abs() < 0.2 * wan.added_s,
            "{wan:?}"
        );
        assert_eq!(fusion_plan(&c, 0, &params, &Link::WAN).saved_s, 0.0);
    }
}
