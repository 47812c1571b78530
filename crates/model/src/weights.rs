//! The model's weights: the GGUF bytes held once, matrices kept quantized and borrowed
//! on demand, norm gains in f32.
//!
//! A *client bundle* ([`Weights::load_client`]) holds what the client of private
//! generation computes with: configuration, tokenizer tables, the token embedding (the
//! tied LM head, or `output.weight` where the file has one), the final norm and every
//! layer's two RMSNorm gains; no layer matrix is read from the file. The model
//! fingerprint ([`Weights::fingerprint`]) covers exactly the index and those tensors, so
//! the full model and its bundle hash the same.
//!
//! Matrices are `rows = outputs x cols = inputs` in GGUF row order. In llama files the
//! q and k rows are permuted for llama.cpp's adjacent-pair RoPE; [`crate::forward::rope`]
//! rotates pairs `(2i, 2i+1)` to match, so no un-permutation is needed. qwen2 files keep
//! the original order and rotate halves ([`crate::forward::rope_neox`]).
//!
//! The q/k/v biases of qwen2 (`blk.N.attn_{q,k,v}.bias`) are part of the client bundle:
//! the forward pass adds them after the `Qkv` product, on whichever side computes the
//! rest of the layer (the client in private generation, after decryption).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::gguf::{Gguf, TensorInfo};
use crate::linear::{row_norm, ColumnNorms, LinearStage, NORM_STAGES};
use crate::quant::{dequantize_row, Format, QuantMatrix};

/// Domain tag of [`Weights::fingerprint`] (version 2: the index and the client
/// bundle's tensors; version 1 hashed the whole file).
const FINGERPRINT_TAG: &[u8] = b"selene model fingerprint v2\0";

/// One matrix: its shape, format and index in the GGUF tensor list.
#[derive(Debug, Clone, Copy)]
struct MatrixRef {
    format: Format,
    rows: usize,
    cols: usize,
    tensor: usize,
}

/// True for the tensors of the client bundle: token embedding, separate LM head (when
/// present), final norm, every layer's two RMSNorm gains and q/k/v biases (when
/// present).
pub fn is_client_tensor(t: &TensorInfo) -> bool {
    let name = t.name.as_str();
    matches!(
        name,
        "token_embd.weight" | "output.weight" | "output_norm.weight"
    ) || (name.starts_with("blk.")
        && (name.ends_with(".attn_norm.weight")
            || name.ends_with(".ffn_norm.weight")
            || name.ends_with(".attn_q.bias")
            || name.ends_with(".attn_k.bias")
            || name.ends_with(".attn_v.bias")))
}

/// One transformer block's weights.
#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    /// `q_bias | k_bias | v_bias` (`qkv_dim`), when the file has them.
    qkv_bias: Option<Vec<f32>>,
    q: MatrixRef,
    k: MatrixRef,
    v: MatrixRef,
    o: MatrixRef,
    gate: MatrixRef,
    up: MatrixRef,
    down: MatrixRef,
}

/// A loaded Llama-architecture model: configuration, quantized matrices, norm gains.
#[derive(Debug)]
pub struct Weights {
    config: Config,
    gguf: Gguf,
    layers: Vec<Layer>,
    token_embd: MatrixRef,
    output: MatrixRef,
    output_norm: Vec<f32>,
    fingerprint: OnceLock<[u8; 32]>,
    column_norms: OnceLock<ColumnNorms>,
}

impl Weights {
    /// Reads a GGUF file and checks every tensor the model needs.
    ///
    /// # Errors
    /// I/O and parse errors, missing or mis-shaped tensors, unsupported tensor types,
    /// invalid hyper-parameters.
    pub fn load(path: &Path) -> Result<Weights> {
        Weights::from_gguf(Gguf::read(path)?)
    }

    /// Reads only the client bundle from a GGUF file (header, index and the tensors of
    /// [`is_client_tensor`], one seek and read each): no layer matrix is read, and the
    /// products of `Qkv`, `AttnOut`, `GateUp` and `Down` fail with [`Error::NotLoaded`].
    ///
    /// # Errors
    /// As [`Weights::load`].
    pub fn load_client(path: &Path) -> Result<Weights> {
        Weights::from_gguf(Gguf::read_selected(path, &is_client_tensor)?)
    }

    /// The client bundle of this model, copied from memory (what
    /// [`Weights::load_client`] reads from the file), with this model's column norms
    /// attached ([`Weights::column_norms`]).
    ///
    /// # Errors
    /// As [`Weights::from_gguf`] (not expected: this model passed them).
    pub fn client_bundle(&self) -> Result<Weights> {
        let bundle = Weights::from_gguf(self.gguf.select(&is_client_tensor))?;
        // The full model knows its column norms; the bundle carries them (O(L d) numbers).
        match self.column_norms() {
            Ok(norms) => bundle.with_column_norms(norms.clone()),
            Err(_) => Ok(bundle),
        }
    }

    /// True when every layer matrix is in memory (not a client bundle).
    pub fn has_layer_matrices(&self) -> bool {
        self.layers.iter().all(|l| {
            [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]
                .iter()
                .all(|m| self.gguf.data_at(m.tensor).is_some())
        })
    }

    /// The column norms of every layer's encrypted stages ([`ColumnNorms`]): those
    /// attached with [`Weights::with_column_norms`], else computed once from the layer
    /// matrices (the folded rows, as the server's encoder computes them).
    ///
    /// # Errors
    /// [`Error::NotLoaded`] for a client bundle with no norms attached.
    pub fn column_norms(&self) -> Result<&ColumnNorms> {
        if let Some(n) = self.column_norms.get() {
            return Ok(n);
        }
        let mut layers = Vec::with_capacity(self.config.n_layers);
        for l in 0..self.config.n_layers {
            let mut one: [Vec<f64>; 4] = Default::default();
            for (out, stage) in one.iter_mut().zip(NORM_STAGES) {
                let d_in = stage.dims(&self.config).0;
                *out = self
                    .stage_weight_folded(l, stage)?
                    .chunks_exact(d_in)
                    .map(row_norm)
                    .collect();
            }
            layers.push(one);
        }
        Ok(self.column_norms.get_or_init(|| ColumnNorms::new(layers)))
    }

    /// This model with `norms` as its column norms (a client bundle, which cannot
    /// compute them: [`Weights::stream_column_norms`] or the full model's
    /// [`Weights::column_norms`]).
    ///
    /// # Errors
    /// [`Error::Shape`] when the table's layers or widths do not fit this model.
    pub fn with_column_norms(self, norms: ColumnNorms) -> Result<Weights> {
        let c = &self.config;
        let fits = norms.layers() == c.n_layers
            && (0..c.n_layers).all(|l| {
                NORM_STAGES
                    .iter()
                    .all(|&s| norms.get(l, s).is_ok_and(|n| n.len() == s.dims(c).1))
            });
        if !fits {
            return Err(Error::Shape {
                what: "column norm table (layers x stage widths)",
                found: norms.layers(),
                expected: c.n_layers,
            });
        }
        let w = self;
        let _ = w.column_norms.set(norms);
        Ok(w)
    }

    /// Computes the column norms of the GGUF file at `path` (the file this model, e.g.
    /// a client bundle, was read from) in one streaming pass over its layer matrices:
    /// a few rows are in memory at a time, so the client's memory stays `O(d)`; it reads
    /// the matrices' bytes once (the whole file, unlike [`Weights::load_client`]).
    ///
    /// # Errors
    /// I/O errors; [`Error::Shape`] when the file's length differs from the one this
    /// model was read from.
    pub fn stream_column_norms(&self, path: &Path) -> Result<ColumnNorms> {
        const ROWS: usize = 16;
        let io = |e| Error::io(path, e);
        let mut f = std::io::BufReader::new(std::fs::File::open(path).map_err(io)?);
        let len = f.get_ref().metadata().map_err(io)?.len();
        if len != self.gguf.file_len() {
            return Err(Error::Shape {
                what: "model file length (not the file the bundle came from)",
                found: usize::try_from(len).unwrap_or(usize::MAX),
                expected: usize::try_from(self.gguf.file_len()).unwrap_or(usize::MAX),
            });
        }
        let base = self.gguf.data_offset() as u64;
        let mut layers = Vec::with_capacity(self.layers.len());
        let mut bytes = Vec::new();
        let mut rows = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            let mut one: [Vec<f64>; 4] = Default::default();
            for (out, stage) in one.iter_mut().zip(NORM_STAGES) {
                let refs = match stage {
                    LinearStage::Qkv => vec![layer.q, layer.k, layer.v],
                    LinearStage::AttnOut => vec![layer.o],
                    LinearStage::GateUp => vec![layer.gate, layer.up],
                    _ => vec![layer.down],
                };
                let gain = self.stage_gain(l, stage)?;
                for m in refs {
                    let offset = self.gguf.tensors().get(m.tensor).map_or(0, |t| t.offset);
                    f.seek(SeekFrom::Start(base + offset)).map_err(io)?;
                    let row_bytes = m.format.row_bytes(m.cols);
                    for start in (0..m.rows).step_by(ROWS) {
                        let n = ROWS.min(m.rows - start);
                        bytes.resize(n * row_bytes, 0);
                        f.read_exact(&mut bytes).map_err(io)?;
                        rows.resize(n * m.cols, 0.0);
                        QuantMatrix::new(m.format, n, m.cols, &bytes)?
                            .dequantize_rows(0, &mut rows)?;
                        for row in rows.chunks_exact_mut(m.cols) {
                            if let Some(g) = gain {
                                for (a, b) in row.iter_mut().zip(g) {
                                    *a *= b;
                                }
                            }
                            out.push(row_norm(row));
                        }
                    }
                }
            }
            layers.push(one);
        }
        Ok(ColumnNorms::new(layers))
    }

    /// The model fingerprint a server announces in `Welcome` and a client checks:
    /// SHA-256 of a domain tag, the SHA-256 of the GGUF header and tensor index (all
    /// metadata, and every tensor's name, shape, type and offset), then the name, length
    /// and bytes of each client-bundle tensor ([`is_client_tensor`]) in index order.
    /// The full model and its bundle give the same value. The layer matrices' bytes are
    /// not covered: a client could not check them without reading them, and it cannot
    /// see what the server multiplies with in any case.
    pub fn fingerprint(&self) -> [u8; 32] {
        *self.fingerprint.get_or_init(|| {
            let g = &self.gguf;
            let mut h = Sha256::new();
            h.update(FINGERPRINT_TAG);
            h.update(g.index_sha256());
            for (i, t) in g.tensors().iter().enumerate() {
                if !is_client_tensor(t) {
                    continue;
                }
                h.update((t.name.len() as u64).to_le_bytes());
                h.update(t.name.as_bytes());
                // Both loads hold every client tensor; a missing one hashes as absent.
                match g.data_at(i) {
                    Some(data) => {
                        h.update((data.len() as u64).to_le_bytes());
                        h.update(data);
                    }
                    None => h.update(u64::MAX.to_le_bytes()),
                }
            }
            h.finalize().into()
        })
    }

    /// Builds the model from a parsed GGUF.
    ///
    /// # Errors
    /// As [`Weights::load`], without the I/O.
    pub fn from_gguf(gguf: Gguf) -> Result<Weights> {
        let config = Config::from_gguf(&gguf)?;
        let (d, f, kv) = (config.d_model, config.d_ff, config.kv_dim());
        let mut layers = Vec::new();
        for i in 0..config.n_layers {
            let name = |s: &str| format!("blk.{i}.{s}.weight");
            let bias = |s: &str| format!("blk.{i}.{s}.bias");
            let qkv_bias = match gguf.tensor(&bias("attn_q")) {
                Ok(_) => {
                    let mut b = vector(&gguf, &bias("attn_q"), d)?;
                    b.extend(vector(&gguf, &bias("attn_k"), kv)?);
                    b.extend(vector(&gguf, &bias("attn_v"), kv)?);
                    Some(b)
                }
                Err(_) => None,
            };
            layers.push(Layer {
                attn_norm: vector(&gguf, &name("attn_norm"), d)?,
                ffn_norm: vector(&gguf, &name("ffn_norm"), d)?,
                qkv_bias,
                q: matrix(&gguf, &name("attn_q"), d, d)?,
                k: matrix(&gguf, &name("attn_k"), kv, d)?,
                v: matrix(&gguf, &name("attn_v"), kv, d)?,
                o: matrix(&gguf, &name("attn_output"), d, d)?,
                gate: matrix(&gguf, &name("ffn_gate"), f, d)?,
                up: matrix(&gguf, &name("ffn_up"), f, d)?,
                down: matrix(&gguf, &name("ffn_down"), d, f)?,
            });
        }
        let token_embd = matrix(&gguf, "token_embd.weight", config.vocab_size, d)?;
        // SmolLM2 ties the LM head to the embedding; other Llama files carry `output`.
        let output = match gguf.tensor("output.weight") {
            Ok(_) => matrix(&gguf, "output.weight", config.vocab_size, d)?,
            Err(_) => token_embd,
        };
        let output_norm = vector(&gguf, "output_norm.weight", d)?;
        Ok(Weights {
            config,
            gguf,
            layers,
            token_embd,
            output,
            output_norm,
            fingerprint: OnceLock::new(),
            column_norms: OnceLock::new(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The parsed GGUF file (metadata, tokenizer tables).
    pub fn gguf(&self) -> &Gguf {
        &self.gguf
    }

    fn view(&self, m: MatrixRef) -> Result<QuantMatrix<'_>> {
        let bytes = self
            .gguf
            .data_at(m.tensor)
            .ok_or_else(|| Error::NotLoaded {
                name: self
                    .gguf
                    .tensors()
                    .get(m.tensor)
                    .map_or_else(String::new, |t| t.name.clone()),
            })?;
        // `matrix` checked the shape against the tensor's type and dims at load.
        Ok(QuantMatrix::new_unchecked(m.format, m.rows, m.cols, bytes))
    }

    fn layer(&self, layer: usize) -> Result<&Layer> {
        self.layers.get(layer).ok_or(Error::LayerOutOfRange {
            layer,
            n_layers: self.config.n_layers,
        })
    }

    /// The quantized matrices of a linear stage, stacked by rows in output order
    /// (`Qkv`: q, k, v; `GateUp`: gate, up). `layer` is ignored for `LmHead`.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`], [`Error::NotLoaded`] for a layer's matrices in a
    /// client bundle.
    pub fn stage_matrices(&self, layer: usize, stage: LinearStage) -> Result<Vec<QuantMatrix<'_>>> {
        if stage == LinearStage::LmHead {
            return Ok(vec![self.view(self.output)?]);
        }
        let l = self.layer(layer)?;
        let refs: Vec<MatrixRef> = match stage {
            LinearStage::Qkv => vec![l.q, l.k, l.v],
            LinearStage::AttnOut => vec![l.o],
            LinearStage::GateUp => vec![l.gate, l.up],
            LinearStage::Down => vec![l.down],
            LinearStage::LmHead => vec![self.output],
        };
        refs.into_iter().map(|m| self.view(m)).collect()
    }

    /// A linear stage's weight matrix in f32 (`d_out x d_in`, row-major), exactly the
    /// dequantized values.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn stage_weight_f32(&self, layer: usize, stage: LinearStage) -> Result<Vec<f32>> {
        let mats = self.stage_matrices(layer, stage)?;
        Ok(mats.iter().flat_map(|m| m.to_f32()).collect())
    }

    /// The RMSNorm gain applied to a stage's input, if any: `attn_norm` before `Qkv`,
    /// `ffn_norm` before `GateUp`, `output_norm` before `LmHead`.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn stage_gain(&self, layer: usize, stage: LinearStage) -> Result<Option<&[f32]>> {
        Ok(match stage {
            LinearStage::Qkv => Some(&self.layer(layer)?.attn_norm),
            LinearStage::GateUp => Some(&self.layer(layer)?.ffn_norm),
            LinearStage::LmHead => Some(&self.output_norm),
            LinearStage::AttnOut | LinearStage::Down => {
                self.layer(layer)?;
                None
            }
        })
    }

    /// A stage's f32 weight matrix with the preceding RMSNorm gain folded in:
    /// `W'[o][i] = W[o][i] * g[i]`, so `W' * (x / rms(x)) = W * (g ⊙ x / rms(x))`.
    /// Stages without a gain return the plain matrix. This is what the server
    /// multiplies with in client-aided mode (the client sends un-gained norms).
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn stage_weight_folded(&self, layer: usize, stage: LinearStage) -> Result<Vec<f32>> {
        let mut w = self.stage_weight_f32(layer, stage)?;
        if let Some(g) = self.stage_gain(layer, stage)? {
            for row in w.chunks_exact_mut(g.len()) {
                for (a, b) in row.iter_mut().zip(g) {
                    *a *= b;
                }
            }
        }
        Ok(w)
    }

    /// The bias added to a layer's `Qkv` output (`q | k | v`, `qkv_dim` values), if
    /// the model has one (qwen2).
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn qkv_bias(&self, layer: usize) -> Result<Option<&[f32]>> {
        Ok(self.layer(layer)?.qkv_bias.as_deref())
    }

    /// Input RMSNorm gain of a layer's attention block.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn attn_norm(&self, layer: usize) -> Result<&[f32]> {
        Ok(&self.layer(layer)?.attn_norm)
    }

    /// Input RMSNorm gain of a layer's MLP block.
    ///
    /// # Errors
    /// [`Error::LayerOutOfRange`].
    pub fn ffn_norm(&self, layer: usize) -> Result<&[f32]> {
        Ok(&self.layer(layer)?.ffn_norm)
    }

    /// The final RMSNorm gain (before the LM head).
    pub fn output_norm(&self) -> &[f32] {
        &self.output_norm
    }

    /// Writes the embeddings of `tokens` into `out` (`tokens.len() x d_model`).
    ///
    /// # Errors
    /// [`Error::TokenOutOfRange`], [`Error::Shape`].
    pub fn embed(&self, tokens: &[u32], out: &mut [f32]) -> Result<()> {
        let d = self.config.d_model;
        if out.len() != tokens.len() * d {
            return Err(Error::Shape {
                what: "embedding output",
                found: out.len(),
                expected: tokens.len() * d,
            });
        }
        let embd = self.view(self.token_embd)?;
        for (&t, o) in tokens.iter().zip(out.chunks_exact_mut(d)) {
            if t as usize >= self.config.vocab_size {
                return Err(Error::TokenOutOfRange {
                    id: t,
                    vocab: self.config.vocab_size,
                });
            }
            dequantize_row(embd.format(), embd.row_bytes(t as usize), o);
        }
        Ok(())
    }
}

/// Looks up a 2-D tensor of `rows x cols` and records where its bytes are.
fn matrix(g: &Gguf, name: &str, rows: usize, cols: usize) -> Result<MatrixRef> {
    let t = g.tensor(name)?;
    if t.dims != [cols as u64, rows as u64] {
        return Err(Error::TensorShape {
            name: name.to_string(),
            found: t.dims.clone(),
            expected: vec![cols as u64, rows as u64],
        });
    }
    let format = Format::of(t)?;
    Ok(MatrixRef {
        format,
        rows,
        cols,
        tensor: g.tensor_index(name)?,
    })
}

/// Reads a 1-D tensor of `len` elements into f32.
fn vector(g: &Gguf, name: &str, len: usize) -> Result<Vec<f32>> {
    let t = g.tensor(name)?;
    if t.dims != [len as u64] {
        return Err(Error::TensorShape {
            name: name.to_string(),
            found: t.dims.clone(),
            expected: vec![len as u64],
        });
    }
    let format = Format::of(t)?;
    let mut out = vec![0.0; len];
    dequantize_row(format, g.tensor_data(name)?, &mut out);
    Ok(out)
}
