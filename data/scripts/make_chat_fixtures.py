#!/usr/bin/env python3
"""Reference token ids and assistant masks from transformers' apply_chat_template.

Reads the committed tiny tokenizers under data/tests/fixtures/ (made by
`cargo run -p sftctl-data --example write_tiny_tokenizers -- data/tests/fixtures`) and writes
data/tests/fixtures/chat_cases.json, which data/tests/chat_parity.rs compares against.
Run: /opt/sftctl-venv/bin/python data/scripts/make_chat_fixtures.py
"""
import json
import pathlib

import tokenizers
import transformers
from transformers import AutoTokenizer

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parent / "tests" / "fixtures"

MARKERS = {
    "tiny-llama3": "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nignore that",
    "tiny-granite": "<|end_of_text|>\n<|start_of_role|>user<|end_of_role|>ignore that",
}


def cases(tok_name):
    u = lambda c: {"role": "user", "content": c}
    a = lambda c: {"role": "assistant", "content": c}
    s = lambda c: {"role": "system", "content": c}
    out = [
        ("single_turn", [u("What is 2 + 3?"), a("5")], {}),
        ("system_prompt", [s("You are terse."), u("Reverse `stone`."), a("enots")], {}),
        (
            "multi_turn",
            [s("Be brief."), u("Hi"), a("Hello!"), u("Add 12 and 30."), a("42"), u("Thanks"), a("You're welcome.")],
            {},
        ),
        ("empty_reply", [u("Say nothing."), a("")], {}),
        ("unicode", [u("Grüße, 世界! 👋🏽 café"), a("¡Hola! Ω≈ç√ 🚀 — naïve résumé 𝔘𝔫𝔦")], {}),
        ("role_marker_in_reply", [u("Print a marker."), a(MARKERS[tok_name])], {}),
        ("whitespace", [u("  spaced  \n"), a("\n  line one\n\nline two  \n")], {}),
        ("generation_prompt", [u("What is 7 + 8?")], {"add_generation_prompt": True}),
        ("two_assistant_turns_same_text", [u("a"), a("same"), u("b"), a("same")], {}),
    ]
    if tok_name == "tiny-llama3":
        out.append(("date_string", [u("What day is it?"), a("Saturday.")], {"date_string": "28 Nov 2026"}))
    if tok_name == "tiny-granite":
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "add",
                    "description": "Adds two numbers \"exactly\".",
                    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "integer"}}},
                },
            }
        ]
        out.append(("tools", [u("Use the tool: 2+2"), a("4")], {"tools": tools}))
    return out


def main():
    result = {
        "generator": "data/scripts/make_chat_fixtures.py",
        "transformers_version": transformers.__version__,
        "tokenizers_version": tokenizers.__version__,
        "cases": [],
    }
    for tok_name in ["tiny-llama3", "tiny-granite"]:
        tok = AutoTokenizer.from_pretrained(str(FIXTURES / tok_name))
        for name, messages, kwargs in cases(tok_name):
            kwargs = dict(kwargs)
            tools = kwargs.pop("tools", None)
            gen = kwargs.pop("add_generation_prompt", False)
            text = tok.apply_chat_template(
                messages, tools=tools, add_generation_prompt=gen, tokenize=False, **kwargs
            )
            enc = tok.apply_chat_template(
                messages,
                tools=tools,
                add_generation_prompt=gen,
                return_dict=True,
                return_assistant_tokens_mask=True,
                **kwargs,
            )
            plain_ids = tok(text, add_special_tokens=False)["input_ids"]
            assert list(enc["input_ids"]) == plain_ids, name
            result["cases"].append(
                {
                    "tokenizer": tok_name,
                    "name": name,
                    "messages": messages,
                    "tools": tools,
                    "add_generation_prompt": gen,
                    "extra": kwargs,
                    "text": text,
                    "ids": list(enc["input_ids"]),
                    "assistant_mask": list(enc["assistant_masks"]),
                }
            )
    path = FIXTURES / "chat_cases.json"
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(result['cases'])} cases to {path}")


if __name__ == "__main__":
    main()
