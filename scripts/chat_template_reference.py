#!/usr/bin/env python3
"""Renders the chat templates of tests/fixtures/chat/*.jinja with transformers' own renderer (the one behind
`apply_chat_template`) over a set of conversations, with and without the generation prompt, and writes what it
gives to tests/fixtures/chat/expected.json, which tests/chat_template.rs compares our rendering with.

    python scripts/chat_template_reference.py      # the python of ../shared/tools/anchors.sh torch, or any
                                                   # python with transformers and jinja2
"""
import json
import os
import sys

import transformers
from transformers.utils.chat_template_utils import render_jinja_template

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "chat")

# name: (bos_token, eos_token) as each model's tokenizer gives them.
TOKENS = {
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "llama-2": ("<s>", "</s>"),
    "llama-3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "zephyr": ("<s>", "</s>"),
}

CONVERSATIONS = {
    "one question": [{"role": "user", "content": "What is the capital of France?"}],
    "system and user": [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": "Colour of the sky?"},
    ],
    "several turns": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "   I am an assistant   "},
        {"role": "user", "content": "Another question"},
    ],
    "hard text": [
        {"role": "user", "content": "  spaces \n\n and {{ braces }} {% raw %} \"quotes\" 'single' \\ é 漢字 🦙\t"},
        {"role": "assistant", "content": "<s>not special</s>\n"},
        {"role": "user", "content": ""},
    ],
    "assistant first": [
        {"role": "assistant", "content": "I speak first."},
        {"role": "user", "content": "Fine."},
    ],
}


def main():
    cases = []
    for name, (bos, eos) in TOKENS.items():
        with open(os.path.join(HERE, name + ".jinja")) as f:
            template = f.read()
        for conv_name, messages in CONVERSATIONS.items():
            for generation in (False, True):
                case = {"template": name, "conversation": conv_name, "add_generation_prompt": generation}
                try:
                    rendered, _ = render_jinja_template(
                        conversations=[messages],
                        chat_template=template,
                        add_generation_prompt=generation,
                        bos_token=bos,
                        eos_token=eos,
                    )
                    case["expected"] = rendered[0]
                except Exception as e:  # the template refuses the conversation
                    case["error"] = str(e)
                cases.append(case)
    out = {
        "generated_by": f"transformers {transformers.__version__}",
        "tokens": TOKENS,
        "conversations": CONVERSATIONS,
        "cases": cases,
    }
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{len(cases)} cases, {sum('error' in c for c in cases)} refused", file=sys.stderr)


if __name__ == "__main__":
    main()
