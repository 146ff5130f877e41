"""`edgekv eval quality`: perplexity of every policy at several budgets on one long text.

One bundle serves every budget (`--budget` lowers a bundle's budget by leaving slots empty),
so policies are compared on identical graphs. `full` is the reference over the first
`--full-tokens` tokens, from a bundle whose budget holds them all.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekv.export.manifest import Manifest
from edgekv.runtime.bundle import Bundle
from edgekv.runtime.errors import BudgetError, EdgeKVError
from edgekv.runtime.policies import make_policy
from edgekv.runtime.session import Session, check_policy
from edgekv.tools.ppl import read_text, streaming_ppl, text_tokens


@dataclass
class QualityRow:
    policy: str
    budget: int
    ppl: float  # over all tokens
    ppl_first: float  # over the first full_tokens tokens
    overhead_frac: float  # time outside the graph / step time
    tokens_per_s: float


@dataclass
class QualityTable:
    tokens: int
    full_tokens: int
    rows: list[QualityRow] = field(default_factory=list)
    full_ppl: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {"tokens": self.tokens, "full_tokens": self.full_tokens, "full_ppl": self.full_ppl,
                "rows": [vars(r) for r in self.rows]}

    def render(self) -> str:
        budgets = sorted({r.budget for r in self.rows})
        policies = list(dict.fromkeys(r.policy for r in self.rows))
        cell = {(r.policy, r.budget): r for r in self.rows}
        n = self.full_tokens
        first = f"first {n // 1024}k" if n % 1024 == 0 else f"first {n}"
        head = (f"{'policy':<12}" + "".join(f"{f'B={b} ppl':>13}{first:>10}" for b in budgets)
                + f"{'overhead':>10}")
        lines = [f"perplexity over {self.tokens} tokens (and over the first {self.full_tokens})",
                 head]
        for p in policies:
            row = f"{p:<12}"
            for b in budgets:
                r = cell.get((p, b))
                row += f"{r.ppl:>13.3f}{r.ppl_first:>10.3f}" if r else f"{'-':>13}{'-':>10}"
            worst = max(cell[(p, b)].overhead_frac for b in budgets if (p, b) in cell)
            lines.append(row + f"{worst:>10.1%}")
        if self.full_ppl is not None:
            lines.append(f"{'full':<12} first {self.full_tokens} tokens: {self.full_ppl:.3f} "
                         "(reference: every token kept)")
        return "\n".join(lines)


def quality_table(
    bundle_dir: str | Path,
    text: str | Path,
    tokens: int,
    budgets: list[int],
    policies: list[str],
    full_bundle: str | Path | None = None,
    full_tokens: int = 8192,
    threads: int = 0,
) -> QualityTable:
    bundle = Bundle.open(bundle_dir)
    check_cells(bundle.manifest, budgets, policies)
    full = Bundle.open(full_bundle) if full_bundle is not None else None
    table = QualityTable(tokens=tokens, full_tokens=min(full_tokens, tokens))
    if full is not None and full.manifest.budget < table.full_tokens:
        # the reference runs last: refused now, not after every cell
        raise BudgetError(f"--full-bundle has a budget of {full.manifest.budget}, too small "
                          f"to keep every one of the first {table.full_tokens} tokens; lower "
                          "--full-tokens or export a larger full bundle")
    content = read_text(text)
    ids: np.ndarray | None = None
    for budget in budgets:
        for spec in policies:
            session = Session.open(bundle, spec, budget=budget, threads=threads)
            if ids is None:
                ids = text_tokens(session, content, tokens, text)
            result = streaming_ppl(session, ids, progress=False)
            row = QualityRow(spec, budget, result.ppl, result.ppl_first(table.full_tokens),
                             1.0 - result.graph_frac, result.tokens_per_s)
            table.rows.append(row)
            print(f"  {spec:<28} budget {budget:>5}: ppl {row.ppl:.3f} "
                  f"(first {table.full_tokens}: {row.ppl_first:.3f}), overhead "
                  f"{row.overhead_frac:.1%}", file=sys.stderr, flush=True)
    if full is not None:
        session = Session.open(full, "full", threads=threads)
        if ids is None:
            ids = text_tokens(session, content, tokens, text)
        result = streaming_ppl(session, ids[: table.full_tokens], progress=False)
        table.full_ppl = result.ppl
        print(f"  full (every token): ppl {result.ppl:.3f}", file=sys.stderr, flush=True)
    return table


def check_cells(manifest: Manifest, budgets: list[int], policies: list[str]) -> None:
    """Refuse a budget or policy no cell could run now: the table runs cell after cell, and
    the last one failing would throw away every one before it."""
    if not budgets or not policies:
        raise EdgeKVError("--budgets and --policies each need at least one value")
    for budget in budgets:
        for spec in policies:
            check_policy(manifest, make_policy(spec), budget, "--budgets")
