"""Keep library chatter (load bars, notices, warnings) from burying the studio's own output."""

from __future__ import annotations

import logging
import os
import sys
import warnings


def quiet_libraries() -> None:
    """Silence transformers, peft, trl, bitsandbytes and torch notices and progress bars.

    Cheap to call first thing: before transformers is imported it only sets the variables it reads at
    import (so the CLI stays fast); once it is imported, its settings are changed directly.
    """
    # bitsandbytes warns at import about an optional CPU kernel package the studio does not use.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(peft|transformers|bitsandbytes|trl|torch)\b")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
