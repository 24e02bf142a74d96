"""Export a trained model as two self-contained ONNX graphs, and prove they match torch.

- ``impute``:     (num, cat, mask) -> (num, cat): encode the observed cells and give every
  cell its point estimate from the point predictor (one network evaluation), categorical
  cells together with the category trees (trees.py) where the model has them.
- ``synthesize``: (num, cat, mask, noise) -> (num, cat): draw the tokens whose mask is 0 from
  the diffusion posterior given those whose mask is 1, and decode. An all-zero mask makes a
  synthetic row; a row's own mask makes one random imputation (``draws >= 1``).

The whole sampler (DPM-Solver++(2M), ``sampling_steps`` steps, or the distilled student's
``distilled_steps`` DDIM steps) is unrolled inside the graph and
the initial noise is an input, so a batch crosses to the device once and the graph is a pure
function: onnxruntime at SQL time computes what torch computed at training time.
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..artifact import int8_name
from . import trees
from .edm import ddim_sample, karras_sigmas, sample
from .trainer import TrainedModel

OPSET = 20
INPUTS = {"impute": ["num", "cat", "mask"], "synthesize": ["num", "cat", "mask", "noise"]}
OUTPUTS = ["num_out", "cat_out"]
# torch.onnx keeps its state in module globals: two exports at once (two connections training
# in one process) fail with "GLOBALS.in_onnx_export must be False", so exports take turns.
_EXPORT_LOCK = threading.Lock()
log = logging.getLogger("duckdb_diffusion")


class _LatentGraph(nn.Module):
    """What both graphs start from: the given cells' latent tokens, standardised as in
    training, and the token mask (1 on the tokens of given cells).

    Only the mean half of each column's encoder is kept, with the standardisation folded into
    its last weights (``(h @ w + b - mean) / std`` is ``h @ (w / std) + (b - mean) / std``),
    the first layer's scale and shift as one product, and the mask spread to the tokens by a
    product with a 0/1 matrix: the same values as ``vae.encode`` then ``(mu - mean) / std *
    tokens``, with fewer and cheaper passes over every token of the batch (onnxruntime's
    broadcasting adds, expands and axis-1 gathers are slow at these shapes)."""

    def __init__(self, model: TrainedModel):
        super().__init__()
        self.vae = vae = model.vae
        half = vae.latent_dim
        mean, std = model.latent_mean.detach(), model.latent_std.detach()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        with torch.no_grad():
            # x * w + b as one product: [x, 1] @ [w; b], a [columns, 2, hidden] weight
            self.register_buffer("num_in", torch.stack([vae.num_in_w, vae.num_in_b], dim=1))
            self.register_buffer("num_w", vae.num_out_w[:, :, :half] / std)
            self.register_buffer("num_b", (vae.num_out_b[:, :half] - mean) / std)
            self.register_buffer("cat_table", (vae.cat_embed.weight[:, :half] - mean) / std)
        columns = vae.n_numeric + len(vae.category_sizes)
        # column -> its tokens, as a product (onnxruntime's Gather on axis 1 is slow)
        spread = torch.eye(columns).repeat_interleave(half, dim=1)
        self.register_buffer("spread", spread)

    def given_tokens(self, num, cat, mask) -> tuple[torch.Tensor, torch.Tensor]:
        vae, parts = self.vae, []
        if vae.n_numeric:
            x = num.transpose(0, 1).unsqueeze(-1)  # [columns, batch, 1]
            x = torch.cat([x, torch.ones_like(x)], dim=-1)
            h = torch.nn.functional.silu(torch.matmul(x, self.num_in))
            parts.append((torch.matmul(h, self.num_w) + self.num_b.unsqueeze(1)).transpose(0, 1))
        if vae.category_sizes:
            parts.append(torch.nn.functional.embedding(cat + vae.cat_offsets, self.cat_table))
        z = torch.cat(parts, dim=1)  # standardised means, [batch, columns, latent_dim]
        tokens = mask @ self.spread
        return z.reshape(z.shape[0], -1) * tokens, tokens


class PointGraph(_LatentGraph):
    """impute: each cell's point estimate from the row's observed cells, in one evaluation of
    the point predictor: the median of a numeric cell's posterior, the mode of a categorical
    one (what absolute error and accuracy reward).

    With category trees, a categorical cell's mode is that of the product of the predictor's
    and the trees' probabilities (their log-probabilities add). With numeric trees, a numeric
    cell's median is a blend of the predictor's and the trees', each column with its weight
    chosen on validation cells. The trees' outputs come in as ``tree_margins`` and
    ``tree_medians``, inputs that ``trees.attach`` replaces by the trees themselves.

    A category column with a confidence gate (``trees.ColumnTrees.confident``) keeps the
    predictor's choice where the predictor gives it that probability or more: those rows'
    margins are not added, and the third output, ``tree_sure``, tells the trees (which
    ``trees.attach`` wires to it) which rows they need not walk."""

    def __init__(self, model: TrainedModel):
        super().__init__(model)
        self.predictor = model.predictor
        self.sizes = list(model.predictor.category_sizes)
        weights = torch.zeros(model.predictor.n_numeric)
        for t in model.trees:
            if t.numeric:
                weights[t.column] = t.weight
        self.register_buffer("tree_weights", weights)
        self.tree_inputs = _torch_inputs(model, "impute")[len(INPUTS["impute"]) :]
        # category column -> the probability at or above which its choice stands alone
        self.sure_at = {t.column: t.confident for t in model.trees if not t.numeric and t.confident}
        if self.sure_at:  # column -> its levels' margins, as a product (one pass over them)
            sizes = torch.tensor(self.sizes, dtype=torch.long)
            spread = torch.eye(len(self.sizes)).repeat_interleave(sizes, dim=1)
            self.register_buffer("levels_of", spread)

    def forward(self, num, cat, mask, *tree_outputs):
        given, tokens = self.given_tokens(num, cat, mask)
        medians, logits = self.predictor(given, tokens)
        outputs = dict(zip(self.tree_inputs, tree_outputs, strict=True))
        if trees.MEDIANS in outputs:
            medians = medians + self.tree_weights * (outputs[trees.MEDIANS] - medians)
        sure = None
        if self.sure_at:  # [batch, category columns]: where the predictor's choice stands alone
            never = torch.zeros(num.shape[0], dtype=torch.bool, device=num.device)
            sure = torch.stack(
                [
                    torch.softmax(lg, dim=-1).amax(dim=-1) >= self.sure_at[j]
                    if j in self.sure_at
                    else never
                    for j, lg in enumerate(logits)
                ],
                dim=1,
            )
        if trees.MARGINS in outputs:  # the product's mode: log-probabilities add, and the
            # normalisers (one per row) do not move an argmax, so the logits add
            margins = outputs[trees.MARGINS]
            if sure is not None:  # a sure choice's row takes no margins (the trees skip it)
                margins = margins * (1.0 - sure.float() @ self.levels_of)
            parts = margins.split(self.sizes, dim=-1)
            logits = [net + tree for net, tree in zip(logits, parts, strict=True)]
        if logits:
            modes = torch.stack([lg.argmax(dim=-1) for lg in logits], dim=1)
        else:
            modes = torch.zeros(num.shape[0], 0, dtype=torch.int64, device=num.device)
        if sure is not None:
            return medians, modes, sure
        return medians, modes


class SampleGraph(_LatentGraph):
    """synthesize: one draw from the diffusion posterior of the cells whose mask is 0, given
    the cells whose mask is 1. An all-zero mask makes a synthetic row; a row's observation
    mask makes one random imputation of it (``draws >= 1``).

    The decoder runs column by column: each column's first layer takes its standardised
    tokens as they come from the sampler, un-standardising (``x * std + mean``) folded into
    the layer's weights and bias (``x @ (std * w) + (mean @ w + b)``, one product with its bias),
    then its head, as ``vae.decode``. Batched over columns (one product into a [columns,
    batch, hidden] tensor, split per head afterwards) the decoder wrote and read several MB
    per 1,024-row block, far more than a core's cache holds: adult, one thread, the decoder
    alone 1.77 -> 1.02 ms per block column by column."""

    def __init__(self, model: TrainedModel):
        super().__init__(model)
        self.latent_dim = model.config.latent_dim
        if model.student is not None:  # distilled (distil.py): DDIM steps of the student
            self.denoiser, self.sampler = model.student, ddim_sample
            self.sigmas = list(model.student_levels)
        else:
            self.denoiser, self.sampler = model.denoiser, sample
            self.sigmas = karras_sigmas(model.config.sampling_steps)
        vae = self.vae
        columns = vae.n_numeric + len(vae.category_sizes)
        with torch.no_grad():
            w = vae.dec_w1 * self.std.view(1, -1, 1)  # [columns, latent_dim, hidden]
            b = vae.dec_b1 + torch.einsum("l,clh->ch", self.mean, vae.dec_w1)
            for j in range(columns):  # as F.linear takes them: [hidden, latent_dim]
                self.register_buffer(f"dec_in_w{j}", w[j].T.contiguous())
                self.register_buffer(f"dec_in_b{j}", b[j].clone())
            for j in range(vae.n_numeric):
                self.register_buffer(f"dec_num_w{j}", vae.dec_num_w[j].T.contiguous())
                self.register_buffer(f"dec_num_b{j}", vae.dec_num_b[j].clone())

    def forward(self, num, cat, mask, noise):
        given, tokens = self.given_tokens(num, cat, mask)
        x = self.sampler(self.denoiser, noise, given, tokens, self.sigmas)
        linear, silu = torch.nn.functional.linear, torch.nn.functional.silu
        hidden = [
            silu(linear(token, getattr(self, f"dec_in_w{j}"), getattr(self, f"dec_in_b{j}")))
            for j, token in enumerate(x.split(self.latent_dim, dim=1))
        ]  # per column [batch, hidden]
        vae = self.vae
        n, rows = vae.n_numeric, x.shape[0]
        values = [
            linear(hidden[j], getattr(self, f"dec_num_w{j}"), getattr(self, f"dec_num_b{j}"))
            for j in range(n)
        ]
        values = torch.cat(values, dim=1) if values else x.new_zeros(rows, 0)
        if vae.dec_cat:
            levels = [head(hidden[n + j]).argmax(dim=-1) for j, head in enumerate(vae.dec_cat)]
            return values, torch.stack(levels, dim=1)
        return values, torch.zeros(rows, 0, dtype=torch.int64, device=values.device)


GRAPH_MODULES = {"impute": PointGraph, "synthesize": SampleGraph}


def export_graphs(
    model: TrainedModel,
    n_numeric: int,
    category_sizes: list[int],
    calibration: dict[str, np.ndarray] | None = None,
) -> dict:
    """-> {"impute": onnx bytes, "synthesize": onnx bytes}, and with ``int8`` and
    ``calibration`` (encoded training rows: num, cat, mask) their 8-bit copies."""
    example = example_inputs(model, n_numeric, len(category_sizes), rows=3)
    example[trees.MARGINS] = torch.zeros(3, sum(category_sizes))
    example[trees.MEDIANS] = torch.zeros(3, n_numeric)
    graphs = {}
    for name, graph in GRAPH_MODULES.items():
        module = graph(model).eval()
        inputs = _torch_inputs(model, name)
        with _EXPORT_LOCK:
            graphs[name] = _export(
                module, tuple(example[k] for k in inputs), inputs, _outputs(model, name)
            )
        if len(inputs) > len(INPUTS[name]):
            graphs[name] = trees.attach(graphs[name], model.trees, n_numeric, category_sizes)
    if model.config.int8 and calibration is not None:
        for name in GRAPH_MODULES:
            feeds = calibration_feeds(name, calibration, model.config.latent_dim, model.config.seed)
            graphs[int8_name(name)] = quantized(graphs[name], feeds)
    return graphs


# Rows whose activations fix the 8-bit products' input ranges; a third of their observed
# cells hidden, as the rows imputation sends to the graph always have some cells to fill.
CALIBRATION_ROWS = 1024
CALIBRATION_HIDDEN = 0.3


def calibration_feeds(name: str, rows: dict[str, np.ndarray], latent_dim: int, seed: int) -> dict:
    """What ``name`` sees at run time, from training rows: imputation, their own masks with
    more cells hidden; sampling, half the rows with nothing given (synthesis), half as
    imputation (draws, conditions), from standard normal noise."""
    rng = np.random.default_rng([seed, 8])
    num, cat, mask = rows["num"], rows["cat"], rows["mask"]
    hidden = mask * (rng.random(mask.shape) >= CALIBRATION_HIDDEN)
    feeds = {"num": np.nan_to_num(num), "cat": cat, "mask": hidden}
    if name == "synthesize":
        feeds["mask"] = np.where(np.arange(len(mask))[:, None] % 2 == 0, 0.0, hidden)
        width = num.shape[1] + cat.shape[1]
        feeds["noise"] = rng.standard_normal((len(mask), width * latent_dim))
    return {k: v.astype(np.float32) if k != "cat" else v for k, v in feeds.items()}


def quantized(graph: bytes, calibration: dict[str, np.ndarray]) -> bytes:
    """The graph with its matrix products in 8 bits, stored beside the float graph, which
    the runtime runs where these cannot be exact (``runtime.int8_is_exact``) or on a GPU.

    Static quantization: each product's input range is fixed here, from ``calibration``
    (what the graph sees at run time: ``calibration_feeds``), so a row's outputs never depend
    on the other rows of its block. Dynamic quantization (each input scaled by its block's
    own range as it runs) is as fast but breaks that: a row imputed or drawn beside other
    rows would come out differently, and any split of a table must give the same rows.
    Unsigned inputs, signed weights with one scale per output column (U8S8, per channel):
    the form onnxruntime multiplies with VNNI / AMX instructions; products keep float outputs
    (their next layer norms and activations are float), which onnxruntime fuses into one
    8-bit product with float output (QGemm). On the adult graphs, one thread, 1,024 rows:
    impute 17.0 -> 12.1 ms, synthesize 31.0 -> 20.7 ms; median difference of an output
    from the float graph 0.002-0.005 (in normal scores). Unsigned weights (U8U8) ran no
    faster than float. The column VAE's products stay float (``_float_products``): they are
    a small share of the work."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    parsed = onnx.load_from_string(graph)
    wanted = {i.name for i in parsed.graph.input}

    class Rows(CalibrationDataReader):
        def __init__(self):
            rows = len(calibration["mask"])
            self.parts = [
                {k: v[start : start + 256] for k, v in calibration.items() if k in wanted}
                for start in range(0, rows, 256)
            ]

        def get_next(self):
            return self.parts.pop() if self.parts else None

    # It logs to the root logger its advice to pre-process first, which changes nothing here.
    # A filter of our own drops only its records: lowering the root logger's level instead
    # would hide other threads' warnings, and two exports at once could leave it lowered.
    root = logging.getLogger()
    advice = _QuantizationAdvice()
    root.addFilter(advice)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "graph.onnx", Path(tmp) / "int8.onnx"
            source.write_bytes(graph)
            quantize_static(
                source,
                target,
                Rows(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=_float_products(parsed.graph),
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={
                    "WeightSymmetric": True,
                    "ActivationSymmetric": False,
                    "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"],
                },
            )
            return target.read_bytes()
    finally:
        root.removeFilter(advice)


# A product with at most this many inputs stays float, as does one with a single output:
# quantizing its input costs more than its few multiplications (the column VAE's per-column
# decoders: latent_dim inputs to the first layer, one output from a numeric head).
SMALL_PRODUCT = 8


def _float_products(graph) -> list[str]:
    """The products ``quantized`` leaves float: batched ones ([columns, ...] weights: the
    per-channel kernels take only 2-D weights), those with at most ``SMALL_PRODUCT`` inputs
    and those with one output (the numeric heads of the column VAE's decoders)."""
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        weight = shapes.get(node.input[1])
        if weight is None:  # a product of two activations: not the quantizer's
            continue
        if len(weight) != 2:
            kept.append(node.name)
            continue
        transposed = any(a.name == "transB" and a.i for a in node.attribute)
        inner, outer = weight[::-1] if transposed else weight
        if inner <= SMALL_PRODUCT or outer == 1:
            kept.append(node.name)
    return kept


class _QuantizationAdvice(logging.Filter):
    """Drops the warnings onnxruntime's quantization tool logs to the root logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_it = "onnxruntime" in record.pathname and "quantization" in record.pathname
        return not (from_it and record.levelno <= logging.WARNING)


def _torch_inputs(model: TrainedModel, name: str) -> list[str]:
    """The graph's inputs as torch sees it: the point graph of a model with trees also takes
    the trees' outputs (log-odds of categorical cells, medians of numeric ones), which the
    exported graph computes itself."""
    if name != "impute":
        return INPUTS[name]
    kinds = {t.numeric for t in model.trees}
    extra = [trees.MARGINS] * (False in kinds) + [trees.MEDIANS] * (True in kinds)
    return INPUTS[name] + extra


def _outputs(model: TrainedModel, name: str) -> list[str]:
    """The graph's outputs as torch sees it: the point graph of a model with gated trees also
    gives where they may be skipped, which ``trees.attach`` takes out of the outputs."""
    gated = name == "impute" and trees.gated(model.trees)
    return OUTPUTS + [trees.SURE] * gated


def _export(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str]) -> bytes:
    """The TorchScript exporter first: on an unrolled sampler it takes ~1 s where the dynamo
    exporter takes 20-60 s. The dynamo exporter stays as the path for torch releases that
    drop the older one; ``check_agreement`` validates whichever graph comes out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            buffer = io.BytesIO()
            axes = {k: {0: "batch"} for k in (*inputs, *outputs)}
            torch.onnx.export(
                module,
                args,
                buffer,
                dynamo=False,
                input_names=inputs,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
            )
            return buffer.getvalue()
        except (TypeError, RuntimeError, NotImplementedError, AttributeError):
            pass
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        batch = torch.export.Dim("batch")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            external_data=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes={k: {0: batch} for k in inputs},
            opset_version=OPSET,
            optimize=False,
            verbose=False,
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "graph.onnx"
            program.save(str(path), external_data=False)
            return path.read_bytes()


def example_inputs(model: TrainedModel, n_numeric: int, n_categorical: int, rows: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    dim = (n_numeric + n_categorical) * model.config.latent_dim
    return {
        "num": torch.randn(rows, n_numeric, generator=gen),
        "cat": torch.zeros(rows, n_categorical, dtype=torch.int64),
        "mask": (torch.rand(rows, n_numeric + n_categorical, generator=gen) > 0.3).float(),
        "noise": torch.randn(rows, dim, generator=gen),
    }


def check_agreement(model: TrainedModel, graphs: dict, num, cat, mask, seed: int = 0) -> dict:
    """Run torch and onnxruntime on the same held-out rows and noise; report how close they are.

    Raises if a float graph disagrees beyond float32 round-off, since then SQL would not
    compute what training validated; an 8-bit copy that strays from the float outputs'
    distribution is dropped from ``graphs`` (the float graph then runs everywhere).
    """
    import onnxruntime as ort

    rows = num.shape[0]
    dim = mask.shape[1] * model.config.latent_dim
    noise = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    feeds = {"num": num, "cat": cat, "mask": mask, "noise": noise}
    if model.trees:
        sizes = model.predictor.category_sizes
        x = trees.features(num, cat, mask)
        feeds[trees.MARGINS] = trees.margins(model.trees, x, sizes)
        feeds[trees.MEDIANS] = trees.medians(model.trees, x, num.shape[1])
    report = {"rows": int(rows)}
    for name, graph in GRAPH_MODULES.items():
        module = graph(model).eval()
        with torch.no_grad():
            inputs = _torch_inputs(model, name)
            ref_num, ref_cat = module(*(torch.from_numpy(feeds[k]) for k in inputs))[:2]
        for stored in (name, int8_name(name)):
            if stored not in graphs:
                continue
            session = ort.InferenceSession(graphs[stored], providers=["CPUExecutionProvider"])
            wanted = {i.name for i in session.get_inputs()}
            got_num, got_cat = session.run(
                OUTPUTS, {k: feeds[k] for k in INPUTS[name] if k in wanted}
            )
            gap = np.abs(got_num - ref_num.numpy())
            diff = float(gap.max()) if got_num.size else 0.0
            agree = float((got_cat == ref_cat.numpy()).mean()) if got_cat.size else 1.0
            report[stored] = {"max_abs_diff": diff, "category_agreement": agree}
            if stored != name:
                # 8-bit products round every product: held to the float graph's distribution
                # (a typical cell within 0.05 of a normal score), not to its last digits.
                typical = float(np.median(gap)) if got_num.size else 0.0
                report[stored]["median_abs_diff"] = typical
                if typical > 0.05 or agree < 0.95:
                    # The float graph serves alone: a model is never lost to its 8-bit copy.
                    log.warning(
                        "8-bit %s graph strays from torch (%s); not stored", name, report[stored]
                    )
                    report[stored]["dropped"] = True
                    del graphs[stored]
            elif diff > 1e-2 or agree < 0.98:
                raise RuntimeError(f"ONNX {name} graph disagrees with torch: {report[stored]}")
    return report
