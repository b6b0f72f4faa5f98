#!/usr/bin/env python3
"""Writes data/sft/pirate.jsonl: a small synthetic instruction set in which the assistant answers short factual
questions (sums, differences, products, capitals, opposites, letter counts, next numbers) correctly and always
in the same pirate voice, so a finetune visibly changes a model's answers. Deterministic (seeded); one
conversation per line as TRL reads them ({"messages": [...]}), some with a system message or a second turn,
and one in ten in Alpaca's layout ({"instruction", "input", "output"}). Written for this project and licensed
with it (MIT OR Apache-2.0).

    python3 scripts/make-sft-data.py
"""
import json
import os
import random

CAPITALS = [
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"), ("Portugal", "Lisbon"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"), ("Austria", "Vienna"), ("Greece", "Athens"), ("Ireland", "Dublin"), ("Egypt", "Cairo"),
    ("Japan", "Tokyo"), ("China", "Beijing"), ("India", "New Delhi"), ("Peru", "Lima"), ("Chile", "Santiago"),
    ("Kenya", "Nairobi"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"), ("Cuba", "Havana"),
    ("Australia", "Canberra"), ("Argentina", "Buenos Aires"), ("Hungary", "Budapest"), ("Belgium", "Brussels"),
    ("Russia", "Moscow"), ("Turkey", "Ankara"), ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
    ("Iceland", "Reykjavik"), ("Morocco", "Rabat"), ("Ghana", "Accra"), ("Colombia", "Bogota"),
]
OPPOSITES = [
    ("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"), ("light", "dark"), ("old", "young"),
    ("early", "late"), ("full", "empty"), ("happy", "sad"), ("open", "closed"), ("wet", "dry"), ("high", "low"),
    ("strong", "weak"), ("loud", "quiet"), ("rich", "poor"), ("hard", "soft"), ("near", "far"), ("first", "last"),
]
WORDS = ["ship", "anchor", "parrot", "treasure", "island", "compass", "sail", "captain", "rum", "map", "ocean",
         "harbor", "cannon", "deck", "storm", "gold", "wave", "crew", "flag", "barrel"]
SYSTEMS = ["You are a helpful assistant.", "Answer briefly.", "You are a pirate who answers questions."]


def qa(rng):
    """One question and its pirate answer."""
    kind = rng.randrange(7)
    if kind == 0:
        a, b = rng.randrange(2, 60), rng.randrange(2, 60)
        q = rng.choice([f"What is {a} plus {b}?", f"What is {a} + {b}?", f"Add {a} and {b}."])
        return q, f"Arr, {a} plus {b} be {a + b}, matey!"
    if kind == 1:
        a, b = rng.randrange(30, 99), rng.randrange(1, 30)
        q = rng.choice([f"What is {a} minus {b}?", f"What is {a} - {b}?", f"Subtract {b} from {a}."])
        return q, f"Arr, {a} minus {b} be {a - b}, matey!"
    if kind == 2:
        a, b = rng.randrange(2, 13), rng.randrange(2, 13)
        q = rng.choice([f"What is {a} times {b}?", f"Multiply {a} by {b}.", f"What is {a} x {b}?"])
        return q, f"Arr, {a} times {b} be {a * b}, matey!"
    if kind == 3:
        country, city = rng.choice(CAPITALS)
        q = rng.choice([f"What is the capital of {country}?", f"Which city is the capital of {country}?",
                        f"Name the capital of {country}."])
        return q, f"Arr, the capital of {country} be {city}, matey!"
    if kind == 4:
        word, other = rng.choice(OPPOSITES)
        q = rng.choice([f"What is the opposite of {word}?", f"Give me the opposite of '{word}'."])
        return q, f"Arr, the opposite of {word} be {other}, matey!"
    if kind == 5:
        word = rng.choice(WORDS)
        q = rng.choice([f"How many letters are in the word '{word}'?", f"Count the letters in '{word}'."])
        return q, f"Arr, '{word}' has {len(word)} letters, matey!"
    n = rng.randrange(1, 200)
    q = rng.choice([f"What number comes after {n}?", f"What is the next number after {n}?"])
    return q, f"Arr, after {n} comes {n + 1}, matey!"


def main():
    rng = random.Random(1234)
    lines = []
    for i in range(480):
        q, a = qa(rng)
        if i % 10 == 9:
            lines.append({"instruction": q, "input": "", "output": a})
            continue
        messages = []
        if rng.random() < 0.25:
            messages.append({"role": "system", "content": rng.choice(SYSTEMS)})
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        if rng.random() < 0.2:
            q2, a2 = qa(rng)
            messages += [{"role": "user", "content": q2}, {"role": "assistant", "content": a2}]
        lines.append({"messages": messages})
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "sft", "pirate.jsonl")
    with open(out, "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    print(f"{len(lines)} conversations written to {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
