"""Evaluation: how a trained run answers, scored against held-out examples.

    evaluate.py   base vs adapter on held-out examples: task metric, loss, answers side by side (eval.json)
    generate.py   batched greedy generation and teacher-forced loss
    metrics.py    task metrics on generated answers (field accuracy, exact match, contains)
    probes.py     held-out examples, and the probe texts merge and export checks compare logits on
    chat.py       a conversation with the adapter (or the base)
"""
