"""What `studio export` can write and how closely each precision must reproduce the merged model.

Thresholds of the round trip (override with --min-top1 / --max-kl):

    quant   min top-1   max mean KL   why
    f32     0.98        0.01          exact copy; anything but ~0 is a bug
    f16     0.98        0.01          half-precision rounding costs ~1e-6..1e-4 nats
    q8_0    0.90        0.05          8-bit blocks cost ~1e-3 nats on trained models; tiny random
                                      models, whose next-token distributions are near-flat, flip
                                      a few near-ties

A layout error (a missed rotary reorder, a wrong tensor) costs tenths of a nat or more and drops top-1
toward chance, far past either line. This module imports nothing heavy: the CLI and the UI read it to
build their choices.
"""

FORMATS = ("gguf", "ollama")
QUANTS = ("f32", "f16", "q8_0")
DEFAULT_QUANT = "f16"
# quant -> (min top-1 agreement, max mean KL in nats)
THRESHOLDS = {"f32": (0.98, 0.01), "f16": (0.98, 0.01), "q8_0": (0.90, 0.05)}
