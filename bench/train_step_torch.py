"""Reference for bench/train_step.rs: the same training step in plain PyTorch — transformers'
LlamaForCausalLM (same tiny-architecture config), summed token cross-entropy over the global
loss-token count, k micro-batches accumulated, clip_grad_norm_(1.0), torch.optim.AdamW
(betas 0.9/0.95, eps 1e-8, no weight decay). Packed samples are fed as separate rows of
`seq` tokens (same token count; no cross-sample attention either way). One JSON line.

Usage: /opt/sftctl-venv/bin/python bench/train_step_torch.py [--device cpu|cuda] [--layers 2]
       [--hidden 256] [--micro 4] [--seq 256] [--accum 2] [--steps 5] [--threads N]
"""

import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--device", default="cpu")
p.add_argument("--layers", type=int, default=2)
p.add_argument("--hidden", type=int, default=256)
p.add_argument("--micro", type=int, default=4)
p.add_argument("--seq", type=int, default=256)
p.add_argument("--accum", type=int, default=2)
p.add_argument("--steps", type=int, default=5)
p.add_argument("--threads", type=int, default=0)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
vocab = 2048
cfg = LlamaConfig(
    vocab_size=vocab,
    hidden_size=a.hidden,
    intermediate_size=a.hidden * 4,
    num_hidden_layers=a.layers,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=a.hidden // 4,
    rope_theta=500000.0,
    tie_word_embeddings=True,
    attn_implementation="sdpa",
)
torch.manual_seed(1)
model = LlamaForCausalLM(cfg).to(a.device).float()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
g = torch.Generator().manual_seed(7)
mbs = []
for _ in range(a.accum):
    ids = torch.randint(0, vocab, (a.micro, a.seq), generator=g)
    mbs.append(ids.to(a.device))
n_loss = a.accum * a.micro * (a.seq - 1)
times = []
for i in range(a.steps + 1):
    t = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    for ids in mbs:
        logits = model(input_ids=ids).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, vocab), ids[:, 1:].reshape(-1), reduction="sum"
        ) / n_loss
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    if a.device == "cuda":
        torch.cuda.synchronize()
    if i > 0:
        times.append(time.perf_counter() - t)
med = statistics.median(times)
print(json.dumps({
    "impl": f"torch-{a.device}", "layers": a.layers, "hidden": a.hidden, "micro": a.micro,
    "seq": a.seq, "accum": a.accum, "params": sum(p.numel() for p in model.parameters()),
    "step_s_median": med, "tokens_per_s": a.accum * a.micro * a.seq / med,
    "threads": torch.get_num_threads(), "torch": torch.__version__,
}))
