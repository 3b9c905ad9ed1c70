#!/usr/bin/env python3
"""PyTorch eager baseline for bench/model_fwd_bwd.rs: the same Llama config, batch, loss (sum of
token cross-entropy) and thread count; forward + backward per step, median over --iters.

Usage: model_fwd_bwd_torch.py [--layers 4] [--hidden 512] [--batch 4] [--seq 256] [--iters 5]
       [--vocab 4096] [--threads N]
"""

import argparse
import json
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
for name, default in [("layers", 4), ("hidden", 512), ("batch", 4), ("seq", 256), ("iters", 5), ("vocab", 4096), ("threads", 0)]:
    p.add_argument(f"--{name}", type=int, default=default)
a = p.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)

heads = a.hidden // 64
config = LlamaConfig(
    vocab_size=a.vocab,
    hidden_size=a.hidden,
    intermediate_size=a.hidden * 8 // 3 // 64 * 64,
    num_hidden_layers=a.layers,
    num_attention_heads=heads,
    num_key_value_heads=heads,
    head_dim=64,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
    max_position_embeddings=max(2048, a.seq),
)
config._attn_implementation = "eager"
torch.manual_seed(0)
model = LlamaForCausalLM(config).float()
n = a.batch * a.seq
ids = (torch.arange(n) * 7919 + 13) % a.vocab
tokens = ids.view(a.batch, a.seq)
targets = ((ids + 1) % a.vocab).view(a.batch, a.seq)

times = []
for i in range(a.iters + 1):
    start = time.perf_counter()
    logits = model(input_ids=tokens).logits
    loss = torch.nn.functional.cross_entropy(logits.view(-1, a.vocab), targets.view(-1), reduction="sum")
    loss.backward()
    model.zero_grad(set_to_none=True)
    if i > 0:
        times.append(time.perf_counter() - start)
times.sort()
median = times[len(times) // 2]
print(json.dumps(dict(
    impl="pytorch-eager", torch=torch.__version__, transformers=transformers.__version__,
    threads=torch.get_num_threads(), layers=a.layers, hidden=a.hidden, vocab=a.vocab,
    batch=a.batch, seq=a.seq, median_step_ms=round(median * 1e3, 1),
    us_per_token=round(median * 1e6 / n, 2), params=sum(p.numel() for p in model.parameters()),
)))
