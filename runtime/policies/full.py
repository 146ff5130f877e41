"""`full`: never evict. Refuses, with the fix, when the input outgrows the budget."""

from dataclasses import dataclass
from typing import ClassVar

from edgekv.runtime.cache import KVCache
from edgekv.runtime.errors import BudgetError
from edgekv.runtime.policies.base import Policy


@dataclass
class Full(Policy):
    name: ClassVar[str] = "full"
    summary: ClassVar[str] = "keep every token; error when the budget is full"
    oldest_first: ClassVar[bool] = True
    reads_mass: ClassVar[bool] = False
    same_slots: ClassVar[bool] = True

    def make_room(self, cache: KVCache, n: int) -> None:
        if cache.free_count().min() < n:
            raise BudgetError(
                f"the 'full' policy cannot hold {cache.occupied() + n} tokens in a budget of "
                f"{cache.budget}: use an evicting policy (--policy streaming) or export with a "
                "larger --budget"
            )
