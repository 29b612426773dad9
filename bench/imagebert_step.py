#!/usr/bin/env python3
"""The peer side of `bench/trainer.sh`: the ImageBERT pre-training step in plain PyTorch, with the
same shapes and the same work as `trainer bench`'s train step (trainer/src/bench.rs), so their
samples/s can be compared on the same machine in the same run.

Model (as trainer/src/model/imagebert.rs): BERT embeddings (word + position + segment), region
embeddings (FC of the feature + FC of the 5-d box + segment + one shared position), LayerNorm +
dropout 0.1, a post-LayerNorm BERT encoder with GELU, heads: MLM (dense + GELU + LayerNorm,
decoder tied to the word embeddings), MOC and MRFR (dense + GELU + LayerNorm, then a classifier
over the detector classes / a regression to the feature size), all three only at the chosen
tokens (15% of the text, 15% of the regions), as UNITER does; ITM (BERT pooler on [CLS], one
logit). Losses: cross-entropy (MLM, MOC), squared error (MRFR), binary cross-entropy (ITM),
summed; Adam step. Inputs are synthetic: speed does not depend on the values.

On a GPU (`--device cuda`): `--precision f32` allows TF32 matmuls, as Burn's CUDA backend runs
them; `--precision bf16` is PyTorch's usual mixed precision (autocast to bfloat16, float32
weights and optimizer). Every step is one batch built once, as `trainer bench --same-batch`.

Prints one JSON line: {"model", "precision", "device", "samples_per_s", "step_s",
"first_step_s", "first_step_after_start_s", "threads", "torch"}, the last timing from the
interpreter's start (`import torch` and CUDA initialisation included). Needs PyPI torch (CPU is
enough here): python3 -m pip install torch.
"""

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

PRESETS = {
    "mini": dict(hidden=384, layers=6, heads=12, intermediate=1536),
    "base": dict(hidden=768, layers=12, heads=12, intermediate=3072),
}
VOCAB = 30522


class Transform(nn.Module):
    """Dense + GELU + LayerNorm (BERT's MLM transform; UNITER's region heads)."""

    def __init__(self, hidden):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x):
        return self.norm(nn.functional.gelu(self.dense(x)))


class ImageBert(nn.Module):
    def __init__(self, hidden, layers, heads, intermediate, feature_dim, classes):
        super().__init__()
        self.word = nn.Embedding(VOCAB, hidden)
        self.position = nn.Embedding(512, hidden)
        self.segment = nn.Embedding(2, hidden)
        self.text_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.feature = nn.Linear(feature_dim, hidden)
        self.location = nn.Linear(5, hidden)
        self.image_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(0.1)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, intermediate, dropout=0.1, activation="gelu", batch_first=True,
            norm_first=False, layer_norm_eps=1e-12,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.mlm_transform = Transform(hidden)
        self.mlm_bias = nn.Parameter(torch.zeros(VOCAB))
        self.moc_transform = Transform(hidden)
        self.moc = nn.Linear(hidden, classes)
        self.mrfr_transform = Transform(hidden)
        self.mrfr = nn.Linear(hidden, feature_dim)
        self.pooler = nn.Linear(hidden, hidden)
        self.itm = nn.Linear(hidden, 1)

    def forward(self, ids, text_mask, features, boxes, region_mask, chosen_text, chosen_regions):
        batch, text_len = ids.shape
        device = ids.device
        positions = torch.arange(text_len, device=device).unsqueeze(0)
        text = self.word(ids) + self.position(positions) + self.segment(torch.zeros_like(ids))
        text = self.dropout(self.text_norm(text))
        # Every region shares one sequence position (0, as IMAGE_POSITION in the Rust model) and
        # the second segment.
        shared = torch.zeros((1, 1), dtype=torch.long, device=device)
        image_extra = self.position(shared) + self.segment(shared + 1)
        image = self.feature(features) + self.location(boxes) + image_extra
        image = self.dropout(self.image_norm(image))
        hidden = self.encoder(
            torch.cat([text, image], 1),
            src_key_padding_mask=torch.cat([text_mask, region_mask], 1) == 0,
        )
        # The masked heads see only the chosen tokens (flat indices into text / region rows).
        width = hidden.shape[-1]
        text_out = hidden[:, :text_len].reshape(-1, width)[chosen_text]
        region_out = hidden[:, text_len:].reshape(-1, width)[chosen_regions]
        mlm = self.mlm_transform(text_out) @ self.word.weight.t() + self.mlm_bias
        moc = self.moc(self.moc_transform(region_out))
        mrfr = self.mrfr(self.mrfr_transform(region_out))
        itm = self.itm(torch.tanh(self.pooler(hidden[:, 0]))).squeeze(-1)
        return mlm, moc, mrfr, itm


def synthetic_batch(batch, text_len, regions, feature_dim, classes, generator):
    ids = torch.randint(1000, VOCAB, (batch, text_len), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102
    features = torch.rand(batch, regions, feature_dim, generator=generator) * 4
    xy = torch.rand(batch, regions, 2, generator=generator) * 0.5
    wh = 0.1 + torch.rand(batch, regions, 2, generator=generator) * 0.4
    boxes = torch.cat([xy, xy + wh, (wh[..., :1] * wh[..., 1:])], -1)
    # Half the pairs are ITM negatives, and only matched pairs get masked (as ours does).
    itm_labels = (torch.rand(batch, generator=generator) < 0.5).float()
    matched = itm_labels.bool().unsqueeze(-1)
    text_picked = ((torch.rand(batch, text_len, generator=generator) < 0.15) & matched).flatten()
    region_picked = (torch.rand(batch, regions, generator=generator) < 0.15) & matched
    classes_of = torch.randint(0, classes, (batch, regions), generator=generator)
    chosen_regions = region_picked.flatten().nonzero().squeeze(-1)
    return dict(
        ids=ids, text_mask=torch.ones(batch, text_len), features=features * ~region_picked.unsqueeze(-1),
        boxes=boxes, region_mask=torch.ones(batch, regions),
        chosen_text=text_picked.nonzero().squeeze(-1), chosen_regions=chosen_regions,
        mlm_labels=ids.flatten()[text_picked], moc_labels=classes_of.flatten()[chosen_regions],
        mrfr_targets=features.reshape(-1, feature_dim)[chosen_regions], itm_labels=itm_labels,
    )


def step(model, optimizer, b, autocast):
    with autocast():
        mlm, moc, mrfr, itm = model(
            b["ids"], b["text_mask"], b["features"], b["boxes"], b["region_mask"],
            b["chosen_text"], b["chosen_regions"],
        )
        ce = nn.functional.cross_entropy
        loss_mlm = ce(mlm, b["mlm_labels"])
        loss_moc = ce(moc, b["moc_labels"])
        loss_mrfr = ((mrfr.float() - b["mrfr_targets"]) ** 2).mean()
        loss_itm = nn.functional.binary_cross_entropy_with_logits(itm, b["itm_labels"])
        loss = loss_mlm + loss_moc + loss_mrfr + loss_itm
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=sorted(PRESETS), default="mini")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=44)
    parser.add_argument("--regions", type=int, default=100)
    parser.add_argument("--feature-dim", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=1601)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (at least 1)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision", choices=["f32", "bf16"], default="f32",
        help="f32 (TF32 matmuls on GPUs) or bf16 autocast (GPUs)",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    elif args.precision != "f32":
        parser.error("--precision bf16 is for GPUs (--device cuda)")

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.manual_seed(0)
    model = ImageBert(**PRESETS[args.model], feature_dim=args.feature_dim, classes=args.classes)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = synthetic_batch(
        args.batch, args.text_len, args.regions, args.feature_dim, args.classes,
        torch.Generator().manual_seed(0),
    )
    batch = {name: value.to(device) for name, value in batch.items()}
    first = time.perf_counter()
    step(model, optimizer, batch, autocast)  # warm-up, as `trainer bench` does
    synchronize()
    first_ended = time.perf_counter()
    for _ in range(1, args.warmup):
        step(model, optimizer, batch, autocast)
    synchronize()
    times, started = [], time.perf_counter()
    while len(times) < 2 or time.perf_counter() - started < args.seconds:
        call = time.perf_counter()
        step(model, optimizer, batch, autocast)
        synchronize()
        times.append(time.perf_counter() - call)
    median = statistics.median(times)
    print(json.dumps({
        "model": args.model,
        "precision": args.precision,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "samples_per_s": args.batch / median,
        "step_s": median,
        "first_step_s": first_ended - first,
        "first_step_after_start_s": first_ended - STARTED,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
