//! The client's policy: which products run encrypted, what may be released to the server
//! and how, where the LM head runs, length padding and the CKKS preset. It is the one
//! place where a relaxation of strict mode is written down; the session sends it to the
//! server, the client enforces it, and a [`ReleaseGuard`] checks every release against
//! it before a byte leaves: a [`PolicyGuard`] with this policy's cap, or the key owner's
//! signed copy (`selene_keys::KeystoreGuard`). The guards, [`ReleaseRequest`] and the
//! proof a release is sent with ([`ReleaseAuthorized`]) live in `selene_keys::release`
//! and are re-exported here.
//!
//! A policy file is TOML:
//!
//! ```toml
//! version = 1
//! preset = "coeff12widepack" # CKKS parameters: "coeff12" (strict default), "coeff11",
//!                           # "coeff12pack"; with a [release] one that floods:
//!                           # "coeff12wide" or "coeff12widepack" (packed outputs)
//! encrypted_layers = 4      # layers 0..3 encrypted; 30 (all) is strict mode
//! lm_head = "server"        # "client" (default) or "server"
//! # pad_to = 16             # strict mode only: pad the prompt to a multiple of 16 tokens
//!
//! [release]                 # required when encrypted_layers < the model's depth
//! flood_sigma = "auto"      # or a number: N(0, sigma^2) added to every released value
//! max_per_session = 4096    # hidden-state rows released per session, at most
//! ```
//!
//! Coherence (checked by [`Policy::validate`]): the encrypted products form a prefix of
//! the forward pass ending at a layer boundary (once a value is released the server knows
//! everything downstream of it, so encrypting a later product hides nothing); a release
//! exists exactly when some layer runs in plaintext; the LM head runs on the server only
//! after a release; `pad_to` only without a release (a release shows the length anyway);
//! a release only under [`SELECTIVE_PRESET`] or [`SELECTIVE_PACKED_PRESET`], the presets
//! with room for decryption flooding.

use selene_linalg::LinalgPreset;
use serde::{Deserialize, Serialize};

pub use selene_keys::release::{
    PolicyGuard, Refusal, ReleaseAuthorized, ReleaseGuard, ReleaseRequest, Tensor,
};

use crate::error::{Error, Result};

/// Version of the policy format this build reads and writes.
pub const POLICY_VERSION: u32 = 1;

/// Where the LM head (final norm and the tied embedding product) runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadSide {
    /// On the client, in plaintext: the server never sees a logit (the default).
    #[default]
    Client,
    /// On the server, in plaintext: only valid after a release.
    Server,
}

/// How much message-space flooding noise to add to released values.
///
/// This is the extra N(0, sigma^2) on every released hidden-state value. The flooding
/// that protects the CKKS key against decryption-based key recovery by an
/// honest-but-curious server (Li, Micciancio, Schultz, Sorrell, CRYPTO 2022) is another, ring-level noise: the selective client
/// always adds it to every product decryption, sized from the parameters and the release
/// cap (`StrictLinear::flood_decryptions`), whatever this says.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FloodSigma {
    /// A fixed standard deviation in the units of the released values.
    Fixed(f64),
    /// The protocol's default, [`DEFAULT_FLOOD_SIGMA`]: a fixed value, not derived from
    /// the parameters or the cap.
    Auto(AutoSigma),
}

/// The word `"auto"` in a policy file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoSigma {
    /// Use [`DEFAULT_FLOOD_SIGMA`].
    Auto,
}

/// Standard deviation of the default release flooding (`flood_sigma = "auto"`), in the
/// units of the residual stream: the level the leakage audit measures beside no flooding
/// (`selene_audit::view::DEFAULT_FLOOD_SIGMA`, the same number; docs/audit.md).
pub const DEFAULT_FLOOD_SIGMA: f64 = 1e-2;

impl FloodSigma {
    /// The standard deviation to flood with: the fixed value, or [`DEFAULT_FLOOD_SIGMA`]
    /// for `"auto"`.
    pub fn resolve(self) -> f64 {
        match self {
            FloodSigma::Fixed(s) => s,
            FloodSigma::Auto(AutoSigma::Auto) => DEFAULT_FLOOD_SIGMA,
        }
    }
}

/// What may be released to the server in plaintext, and how.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasePolicy {
    /// Flooding noise added to every released value.
    pub flood_sigma: FloodSigma,
    /// Hidden-state rows (positions) released per session, at most.
    pub max_per_session: u64,
}

/// Default cap on released rows per session: a 2,048-token context twice over.
pub const DEFAULT_RELEASE_CAP: u64 = 4096;

impl Default for ReleasePolicy {
    fn default() -> Self {
        Self {
            flood_sigma: FloodSigma::Auto(AutoSigma::Auto),
            max_per_session: DEFAULT_RELEASE_CAP,
        }
    }
}

/// A client's policy for one session (see the module docs for the file format).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Format version, [`POLICY_VERSION`].
    pub version: u32,
    /// CKKS preset of the encrypted products, written by name (`"coeff12"` or `"coeff11"`
    /// in strict mode; [`SELECTIVE_PRESET`] or [`SELECTIVE_PACKED_PRESET`] whenever the
    /// policy releases anything; one of [`POLICY_PRESETS`]).
    pub preset: LinalgPreset,
    /// Layers `0..encrypted_layers` run encrypted; the model's depth means strict mode.
    pub encrypted_layers: usize,
    /// Where the LM head runs.
    #[serde(default)]
    pub lm_head: HeadSide,
    /// Two requests per layer instead of four for the encrypted layers: the server also
    /// holds the stacked fused matrices (`selene_model::fused::stacked_weight`) and
    /// answers a `Products` request with several products at once. In selective mode the
    /// last encrypted layer's down product goes alone, then the release.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fused: bool,
    /// Pad the prompt to a multiple of this many tokens, so the server learns only the
    /// length bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_to: Option<usize>,
    /// The release after the encrypted layers; required exactly when some layer runs in
    /// plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleasePolicy>,
}

/// Presets a policy may name: those of the coefficient method, the one a session's
/// products use ([`crate::PreparedModel`]), the strict default first.
pub const POLICY_PRESETS: [LinalgPreset; 5] = [
    STRICT_PRESET,
    LinalgPreset::Coeff11,
    SELECTIVE_PRESET,
    LinalgPreset::Coeff12Pack,
    SELECTIVE_PACKED_PRESET,
];

/// The preset strict mode runs on unless told otherwise.
pub const STRICT_PRESET: LinalgPreset = LinalgPreset::Coeff12;

/// The preset selective mode runs on: a release is a function of decryptions, which must
/// be noise-flooded (Li, Micciancio, Schultz, Sorrell, CRYPTO 2022), and only this
/// preset keeps precision under the flooding ([`LinalgPreset::floods`],
/// docs/hardening.md, section 3). Strict mode releases nothing decrypted, so it keeps
/// the cheaper [`STRICT_PRESET`].
pub const SELECTIVE_PRESET: LinalgPreset = LinalgPreset::Coeff12Wide;

/// Selective mode with packed outputs: [`SELECTIVE_PRESET`]'s precision under flooding
/// with a few ciphertexts per product each way (Galois keys uploaded once per session),
/// for links where bytes cost more than the server's key switches.
pub const SELECTIVE_PACKED_PRESET: LinalgPreset = LinalgPreset::Coeff12WidePack;

/// Largest `pad_to` accepted: padding beyond one context window is a mistake.
pub const MAX_PAD_TO: usize = 2048;

impl Policy {
    /// Strict mode for a model of `n_layers` layers: everything encrypted, nothing
    /// released, the head on the client.
    pub fn strict(n_layers: usize) -> Self {
        Self {
            version: POLICY_VERSION,
            preset: STRICT_PRESET,
            encrypted_layers: n_layers,
            lm_head: HeadSide::Client,
            pad_to: None,
            release: None,
            fused: false,
        }
    }

    /// Selective mode by depth: layers `0..k` encrypted, then one flooded release with
    /// the default cap and automatic sigma, the remaining layers on the server and the
    /// head on the client: the server answers a release with `d_model` values instead
    /// of the vocabulary's logits (2.3 KB instead of 197 KB for SmolLM2), and it still
    /// sends its greedy next token ahead (`wire::Ahead`).
    pub fn selective(n_layers: usize, k: usize) -> Self {
        if k >= n_layers {
            return Self::strict(n_layers);
        }
        Self {
            preset: SELECTIVE_PRESET,
            encrypted_layers: k,
            lm_head: HeadSide::Client,
            release: Some(ReleasePolicy::default()),
            ..Self::strict(n_layers)
        }
    }

    /// True when nothing is released to the server.
    pub fn is_strict(&self, n_layers: usize) -> bool {
        self.encrypted_layers == n_layers && self.release.is_none()
    }

    /// Parses a TOML policy file and validates it for a model of `n_layers` layers.
    ///
    /// # Errors
    /// [`Error::PolicyParse`] for a file that is not a policy, [`Error::Policy`] for an
    /// incoherent one.
    pub fn from_toml(text: &str, n_layers: usize) -> Result<Self> {
        let p = Self::parse_toml(text)?;
        p.validate(n_layers)?;
        Ok(p)
    }

    /// Parses a TOML policy without checking its coherence (the session server validates
    /// it against its model after decoding a `Hello`).
    ///
    /// # Errors
    /// [`Error::PolicyParse`] for a text that is not a policy.
    pub fn parse_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::PolicyParse {
            message: e.message().to_string(),
            span: e.span(),
        })
    }

    /// The policy as a TOML file.
    ///
    /// # Errors
    /// Never for a policy built by this crate (all fields are TOML-representable).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::PolicyParse {
            message: e.to_string(),
            span: None,
        })
    }

    /// Checks the policy is coherent for a model of `n_layers` layers.
    ///
    /// # Errors
    /// [`Error::Policy`] naming the first problem found.
    pub fn validate(&self, n_layers: usize) -> Result<()> {
        let bad = |why: String| Err(Error::Policy { why });
        if self.version != POLICY_VERSION {
            return bad(format!(
                "policy version {} is not supported (this build reads version {POLICY_VERSION})",
                self.version
            ));
        }
        if !POLICY_PRESETS.contains(&self.preset) {
            return bad(format!(
                "preset {:?} is not for sessions; expected one of {:?}",
                self.preset.name(),
                POLICY_PRESETS.map(LinalgPreset::name)
            ));
        }
        if self.encrypted_layers > n_layers {
            return bad(format!(
                "encrypted_layers = {} is out of range: the model has {n_layers} layers \
                 ({n_layers} is strict mode)",
                self.encrypted_layers
            ));
        }
        if let Some(p) = self.pad_to {
            if p == 0 || p > MAX_PAD_TO {
                return bad(format!("pad_to = {p} must be in 1..={MAX_PAD_TO}"));
            }
        }
        let plaintext_layers = self.encrypted_layers < n_layers;
        if self.fused && self.encrypted_layers == 0 {
            return bad("fused = true with no encrypted layer: nothing to fuse".to_string());
        }
        match (&self.release, plaintext_layers) {
            (None, true) => {
                return bad(format!(
                    "layers {}..{n_layers} run in plaintext on the server but the policy has \
                     no [release] section: every plaintext value the server gets must be an \
                     explicit, flooded release",
                    self.encrypted_layers
                ))
            }
            (Some(_), false) => {
                return bad(
                    "a [release] section with every layer encrypted: strict mode releases \
                     nothing, remove the section or lower encrypted_layers"
                        .to_string(),
                )
            }
            (Some(r), true) => {
                if !self.preset.floods() {
                    return bad(format!(
                        "preset {:?} with a [release]: released values are functions of \
                         decryptions, which must be noise-flooded, and only presets {:?} and \
                         {:?} keep precision under the flooding (docs/hardening.md, section 3)",
                        self.preset.name(),
                        SELECTIVE_PRESET.name(),
                        SELECTIVE_PACKED_PRESET.name()
                    ));
                }
                if let FloodSigma::Fixed(s) = r.flood_sigma {
                    if !(s.is_finite() && s >= 0.0) {
                        return bad(format!("release flood_sigma = {s} must be finite and >= 0"));
                    }
                }
                if r.max_per_session == 0 {
                    return bad("release max_per_session = 0 allows no release; use strict \
                                mode instead"
                        .to_string());
                }
            }
            (None, false) => {}
        }
        if let (Some(p), Some(_)) = (self.pad_to, &self.release) {
            return bad(format!(
                "pad_to = {p} with a [release]: padding hides nothing in selective mode, \
                 because a release carries one hidden-state row per real position and so shows \
                 the prompt length; remove pad_to or use strict mode (encrypted_layers = \
                 {n_layers}, no [release])"
            ));
        }
        if self.lm_head == HeadSide::Server && !plaintext_layers {
            return bad(
                "lm_head = \"server\" needs the hidden state in plaintext on the server, but \
                 every layer is encrypted and nothing is released"
                    .to_string(),
            );
        }
        Ok(())
    }
}

/// The parts of a policy the token loop needs, resolved to numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Terms {
    /// Layers run encrypted; the model's depth is strict mode.
    pub k: usize,
    /// Message-space flooding standard deviation of each released value.
    pub sigma: f64,
    /// Most hidden-state rows released per session.
    pub cap: u64,
    /// Strict mode pads the prompt's products to a multiple of this many rows (1: none).
    pub pad_to: usize,
}

impl Terms {
    /// The terms `policy` sets.
    pub fn of(policy: &Policy) -> Self {
        Self {
            k: policy.encrypted_layers,
            sigma: policy
                .release
                .map_or(DEFAULT_FLOOD_SIGMA, |r| r.flood_sigma.resolve()),
            cap: policy.release.map_or(0, |r| r.max_per_session),
            pad_to: policy.pad_to.unwrap_or(1),
        }
    }

    /// What keeps a session on these terms from fusing its stage pairs
    /// (`selene_model::fused`), if anything: no encrypted layer; padded rows, a public
    /// context's keys and values, and drafted passes run through the unfused forward pass
    /// only. The one list `selene run`, `selene client` and the generator check.
    pub fn fusion_blocker(&self, public_context: bool, drafts: bool) -> Option<&'static str> {
        if self.k == 0 {
            Some("no encrypted layer")
        } else if self.pad_to > 1 {
            Some("padding")
        } else if public_context {
            Some("a public context")
        } else if drafts {
            Some("drafts")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use selene_linalg::Method;

    use super::*;

    const L: usize = 30;

    #[test]
    fn fusion_is_blocked_by_each_unfused_feature_alone() {
        let strict = Terms::of(&Policy::strict(L));
        assert_eq!(strict.fusion_blocker(false, false), None);
        assert_eq!(
            Terms::of(&Policy::selective(L, 4)).fusion_blocker(false, false),
            None
        );
        assert_eq!(
            Terms::of(&Policy::selective(L, 0)).fusion_blocker(false, false),
            Some("no encrypted layer")
        );
        let padded = Terms {
            pad_to: 8,
            ..strict
        };
        assert_eq!(padded.fusion_blocker(false, false), Some("padding"));
        assert_eq!(strict.fusion_blocker(true, false), Some("a public context"));
        assert_eq!(strict.fusion_blocker(false, true), Some("drafts"));
    }

    #[test]
    fn strict_and_selective_constructors_validate() {
        Policy::strict(L).validate(L).unwrap();
        for k in 0..L {
            Policy::selective(L, k).validate(L).unwrap();
            assert_eq!(Policy::selective(L, k).preset, SELECTIVE_PRESET);
        }
        // A policy names exactly the coefficient presets, and of them only the two
        // selective ones flood.
        for p in LinalgPreset::ALL {
            let named = POLICY_PRESETS.contains(&p);
            assert_eq!(named, p.method() == Method::Coefficients, "{p}");
            assert_eq!(
                named && p.floods(),
                [SELECTIVE_PRESET, SELECTIVE_PACKED_PRESET].contains(&p),
                "{p}"
            );
        }
        assert!(Policy::strict(L).is_strict(L));
        assert!(!Policy::selective(L, 4).is_strict(L));
    }

    #[test]
    fn toml_round_trips() {
        let mut p = Policy::strict(L);
        p.pad_to = Some(16);
        let text = p.to_toml().unwrap();
        assert_eq!(Policy::from_toml(&text, L).unwrap(), p);
        let p = Policy::selective(L, 4);
        assert_eq!(Policy::from_toml(&p.to_toml().unwrap(), L).unwrap(), p);
        let fixed = "version = 1\npreset = \"coeff12wide\"\nencrypted_layers = 2\n\
                     [release]\nflood_sigma = 0.5\nmax_per_session = 10\n";
        let p = Policy::from_toml(fixed, L).unwrap();
        assert_eq!(p.preset, LinalgPreset::Coeff12Wide);
        assert_eq!(p.release.unwrap().flood_sigma, FloodSigma::Fixed(0.5));
        assert_eq!(p.lm_head, HeadSide::Client);
        // The preset is written by name: the printed file is byte for byte what it was
        // when the field was a string.
        let strict = "version = 1\npreset = \"coeff12\"\nencrypted_layers = 30\n\
                      lm_head = \"client\"\n";
        assert_eq!(Policy::strict(L).to_toml().unwrap(), strict);
        assert_eq!(Policy::from_toml(strict, L).unwrap(), Policy::strict(L));
        let selective = "version = 1\npreset = \"coeff12wide\"\nencrypted_layers = 4\n\
                         lm_head = \"client\"\n\n[release]\nflood_sigma = \"auto\"\n\
                         max_per_session = 4096\n";
        assert_eq!(Policy::selective(L, 4).to_toml().unwrap(), selective);
        for p in POLICY_PRESETS {
            let policy = Policy {
                preset: p,
                ..Policy::strict(L)
            };
            let text = policy.to_toml().unwrap();
            assert!(text.contains(&format!("\npreset = \"{p}\"\n")), "{text}");
            assert_eq!(Policy::from_toml(&text, L).unwrap(), policy);
        }
    }

    #[test]
    fn fused_is_written_only_when_set_and_needs_an_encrypted_layer() {
        let fused = Policy {
            fused: true,
            ..Policy::strict(L)
        };
        let text = fused.to_toml().unwrap();
        assert!(text.contains("\nfused = true\n"), "{text}");
        assert_eq!(Policy::from_toml(&text, L).unwrap(), fused);
        assert!(!Policy::strict(L).to_toml().unwrap().contains("fused"));
        let selective = Policy {
            fused: true,
            ..Policy::selective(L, 4)
        };
        selective.validate(L).unwrap();
        let text = selective.to_toml().unwrap();
        assert_eq!(Policy::from_toml(&text, L).unwrap(), selective);
        let nothing = Policy {
            fused: true,
            ..Policy::selective(L, 0)
        };
        assert!(nothing.validate(L).is_err());
    }

    #[test]
    fn flood_sigma_resolves_to_the_fixed_value_or_the_default() {
        assert_eq!(FloodSigma::Fixed(0.5).resolve(), 0.5);
        assert_eq!(FloodSigma::Fixed(0.0).resolve(), 0.0);
        let auto = ReleasePolicy::default().flood_sigma;
        assert_eq!(auto, FloodSigma::Auto(AutoSigma::Auto));
        assert_eq!(auto.resolve(), DEFAULT_FLOOD_SIGMA);
        assert_eq!(DEFAULT_FLOOD_SIGMA, 1e-2);
    }

    #[test]
    fn incoherent_policies_are_refused_with_a_reason() {
        let cases = [
            (
                "version = 2\npreset = \"coeff12\"\nencrypted_layers = 30\n",
                "version",
            ),
            (
                "version = 1\npreset = \"slots13\"\nencrypted_layers = 30\n",
                "preset \"slots13\" is not for sessions; expected one of [\"coeff12\", \
                 \"coeff11\", \"coeff12wide\", \"coeff12pack\", \"coeff12widepack\"]",
            ),
            (
                "version = 1\npreset = \"coeff12\"\nencrypted_layers = 31\n",
                "out of range",
            ),
            (
                "version = 1\npreset = \"coeff12\"\nencrypted_layers = 4\n",
                "no [release]",
            ),
            (
                "version = 1\npreset = \"coeff12\"\nencrypted_layers = 30\n[release]\n\
                 flood_sigma = \"auto\"\nmax_per_session = 5\n",
                "strict mode releases nothing",
            ),
            (
                "version = 1\npreset = \"coeff12\"\nencrypted_layers = 30\nlm_head = \"server\"\n",
                "lm_head",
            ),
            (
                "version = 1\npreset = \"coeff12wide\"\nencrypted_layers = 4\n[release]\n\
                 flood_sigma = -1.0\nmax_per_session = 5\n",
                "finite",
            ),
            (
                "version = 1\npreset = \"coeff12wide\"\nencrypted_layers = 4\n[release]\n\
                 flood_sigma = \"auto\"\nmax_per_session = 0\n",
                "allows no release",
            ),
            (
                "version = 1\npreset = \"coeff12\"\nencrypted_layers = 30\npad_to = 0\n",
                "pad_to",
            ),
            (
                "version = 1\npreset = \"coeff12wide\"\nencrypted_layers = 4\npad_to = 16\n\
                 [release]\nflood_sigma = \"auto\"\nmax_per_session = 5\n",
                "padding hides nothing in selective mode",
            ),
            (
                "version = 1\npreset = \"coeff12\"\nencrypted_layers = 4\n[release]\n\
                 flood_sigma = \"auto\"\nmax_per_session = 5\n",
                "must be noise-flooded",
            ),
            (
                "version = 1\npreset = \"coeff11\"\nencrypted_layers = 4\n[release]\n\
                 flood_sigma = \"auto\"\nmax_per_session = 5\n",
                "must be noise-flooded",
            ),
        ];
        for (text, why) in cases {
            let e = Policy::from_toml(text, L).unwrap_err().to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let unknown = "version = 1\npreset = \"coeff99\"\nencrypted_layers = 30\n";
        match Policy::from_toml(unknown, L) {
            Err(Error::PolicyParse { message, .. }) => assert!(
                message.contains("unknown preset \"coeff99\"; expected one of coeff11"),
                "{message}"
            ),
            other => panic!("{other:?}"),
        }
        for text in ["", "version = \"one\"", "encrypted_layers = 4\nbogus = 1\n"] {
            assert!(matches!(
                Policy::from_toml(text, L),
                Err(Error::PolicyParse { .. })
            ));
        }
    }
}
