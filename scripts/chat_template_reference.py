#!/usr/bin/env python3
"""Renders the chat templates of tests/fixtures/chat/*.jinja with transformers' own renderer (the one behind
`apply_chat_template`) over a set of conversations, with and without the generation prompt, and writes what it
gives to tests/fixtures/chat/expected.json, which tests/chat_template.rs compares our rendering with. With the
SmolLM2 GGUF present (scripts/fetch-models.sh), also writes tests/fixtures/chat/smollm2.json: the token ids
`apply_chat_template` gives for two conversations and transformers' greedy answers (f32 weights).

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


def smollm2():
    folder = os.path.join(HERE, "..", "..", "..", "target", "models")
    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not os.path.isfile(os.path.join(folder, name)):
        print(f"{name} is missing: smollm2.json not written", file=sys.stderr)
        return
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    chats = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [
            {"role": "system", "content": "You answer in one short sentence."},
            {"role": "user", "content": "What is the capital of Italy?"},
        ],
    ]
    out = []
    for messages in chats:
        ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)
        ids = list(ids["input_ids"])
        with torch.no_grad():
            gen = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
        answer = [int(t) for t in gen[0][len(ids):]]
        out.append({"messages": messages, "ids": ids, "greedy_ids": answer, "greedy_text": tokenizer.decode(answer)})
    with open(os.path.join(HERE, "smollm2.json"), "w") as f:
        json.dump({"generated_by": f"transformers {transformers.__version__}", "chats": out}, f, indent=1,
                  ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
    smollm2()
