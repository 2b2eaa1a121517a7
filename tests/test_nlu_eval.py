"""tools/nlu_eval.py's held-out split: the same every run, per intent, and never on both sides."""
from __future__ import annotations

from tools.nlu_eval import NLU, read_nlu, split_examples


def _examples() -> dict[str, list[str]]:
    return {"greet": [f"hello {i}" for i in range(10)],
            "faq": [f"question {i}" for i in range(50)],
            "tiny": ["only one"],
            "pair": ["first", "second"]}


def test_split_is_deterministic_for_a_seed_and_moves_with_another_seed():
    assert split_examples(_examples(), 0.2, seed=42) == split_examples(_examples(), 0.2, seed=42)
    assert split_examples(_examples(), 0.2, seed=42)[1] != split_examples(_examples(), 0.2, seed=7)[1]


def test_split_is_stratified_per_intent():
    train, test = split_examples(_examples(), 0.2)
    assert {k: len(v) for k, v in test.items()} == {"greet": 2, "faq": 10, "tiny": 0, "pair": 1}
    # Every intent keeps training examples, even one with a single example.
    assert all(train[intent] for intent in _examples())


def test_train_and_test_are_disjoint_and_cover_everything_even_with_duplicates():
    data = _examples()
    data["greet"] += ["hello 3", "hello 3"]          # a duplicate must not end up on both sides
    train, test = split_examples(data, 0.2)
    for intent, items in data.items():
        assert not set(train[intent]) & set(test[intent])
        assert sorted(train[intent] + test[intent]) == sorted(set(items))


def test_one_intent_gaining_examples_leaves_the_other_intents_split_alone():
    before = split_examples(_examples(), 0.2)[1]
    grown = _examples()
    grown["faq"] += [f"a new question {i}" for i in range(5)]
    after = split_examples(grown, 0.2)[1]
    assert {k: v for k, v in after.items() if k != "faq"} == {k: v for k, v in before.items() if k != "faq"}


def test_the_real_nlu_file_splits_into_every_intent():
    examples, others = read_nlu(NLU)
    train, test = split_examples(examples)
    assert set(train) == set(examples) and all(test[intent] for intent in examples)
    # Regexes, lookup tables and synonyms are not examples: they stay whole, outside the split.
    assert any("regex" in block for block in others) and any("lookup" in block for block in others)
