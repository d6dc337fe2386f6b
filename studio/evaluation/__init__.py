"""Evaluation: how a trained run answers, scored against held-out examples, and what it kept of the base.

    evaluate.py   base vs adapter on held-out examples: task metric, loss, answers side by side (eval.json)
    forgetting.py base vs adapter on the shipped general probes (general_probes.json): KL, general-text
                  perplexity, answer agreement, and a kept / drifted / forgot verdict (eval.json "forgetting")
    generate.py   batched greedy generation (text or token ids) and teacher-forced loss
    metrics.py    task metrics on generated answers (field accuracy, exact match, contains, numeric answer,
                  ROUGE-L, JSON validity)
    probes.py     held-out examples, and the probe texts merge and export checks compare logits on
    chat.py       a conversation with the adapter (or the base)
"""
