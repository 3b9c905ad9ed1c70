"""GPU benchmark half that needs no Rust: the bf16 matmul ceiling of this device and a plain
PyTorch fine-tuning loop (transformers LlamaForCausalLM with Llama-3.2-3B shapes and random
weights, torch AdamW, bf16) at the same batch and sequence length as sftctl's run. One JSON line
per measurement on stdout. docs/gpu.md says how it is used; --tiny runs it on a CPU in seconds.
"""
import argparse, json, time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

LLAMA_32_3B = dict(vocab_size=128256, hidden_size=3072, intermediate_size=8192,
                   num_hidden_layers=28, num_attention_heads=24, num_key_value_heads=8,
                   head_dim=128, tie_word_embeddings=True, rope_theta=500000.0,
                   max_position_embeddings=131072)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def matmul_ceiling(dev, n, reps):
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(dev)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(dev)
    dt = time.perf_counter() - t
    return 2 * n**3 * reps / dt


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--micro", type=int, default=2)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--checkpointing", action="store_true")
    a = p.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ceiling = matmul_ceiling(dev, 256 if a.tiny else 8192, 3 if a.tiny else 50)
    print(json.dumps({"what": "bf16_matmul_ceiling", "device": str(dev), "flops": ceiling}), flush=True)

    cfg = LlamaConfig(**(TINY if a.tiny else LLAMA_32_3B), attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(dev, torch.bfloat16)
    if a.checkpointing:
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, cfg.vocab_size, (a.micro, a.seq), device=dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(a.warmup + a.steps):
        sync(dev)
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(dev)
        if step >= a.warmup:
            times.append(time.perf_counter() - t)
    tokens = a.micro * a.seq
    tok_s = tokens * len(times) / sum(times)
    # 6 N per token for the matmuls plus attention's 12 L S d_head H per token (forward+backward).
    flops_tok = 6 * params + 12 * cfg.num_hidden_layers * a.seq * cfg.head_dim * cfg.num_attention_heads // 2
    print(json.dumps({
        "what": "pytorch_loop", "params": params, "tokens_per_step": tokens, "tokens_per_s": tok_s,
        "mfu_vs_ceiling": tok_s * flops_tok / ceiling, "loss": loss.item(),
        "peak_mem_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda" else None,
        "torch": torch.__version__, "checkpointing": a.checkpointing,
    }), flush=True)


if __name__ == "__main__":
    main()
