"""Run one protocol on one encoder context and split its results into the headline (DVC
metrics) and the details (everything else); shared by the evaluate and baselines stages."""

from __future__ import annotations

import time

from pipeline.eval.protocol import EvalContext, Protocol
from pipeline.train.seed import seed_everything


def run_protocol(protocol: Protocol, ctx: EvalContext) -> tuple[dict, dict]:
    """``(headline, details)``: details = ``{"result": the protocol's full result,
    "wall_seconds": ...}``. The global RNGs are reseeded first, so a result does not depend
    on what ran before it in the same process."""
    seed_everything(ctx.seed)
    start = time.perf_counter()
    details = protocol.run(ctx)
    headline = protocol.headline(details)
    for key, value in headline.items():  # DVC diffs numbers only: a string here is a bug in the protocol
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"protocol {protocol.name!r}: headline {key!r} is {value!r}, not a number")
    return headline, {"result": details, "wall_seconds": round(time.perf_counter() - start, 1)}
