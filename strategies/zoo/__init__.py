"""The algorithm zoo: fedmtl's own strategies, registered by name on import.

Each module holds one strategy with a docstring stating the paper, the wire keys
it reads and sends, and what the client must do.
"""

from strategies.zoo import conflict_averse as _conflict_averse  # noqa: F401  (registers)
from strategies.zoo import fedrep as _fedrep  # noqa: F401
from strategies.zoo import personalization as _personalization  # noqa: F401
from strategies.zoo import task_balanced as _task_balanced  # noqa: F401
