"""The algorithm zoo: fedmtl's own strategies, registered by name on import.

Each module holds one strategy with a docstring stating the paper, the wire keys
it reads and sends, and what the client must do.
"""

from strategies.zoo import clustered as _clustered  # noqa: F401  (registers)
from strategies.zoo import conflict_averse as _conflict_averse  # noqa: F401
from strategies.zoo import ditto as _ditto  # noqa: F401
from strategies.zoo import fedbabu as _fedbabu  # noqa: F401
from strategies.zoo import fedbn as _fedbn  # noqa: F401
from strategies.zoo import fedper as _fedper  # noqa: F401
from strategies.zoo import fedrep as _fedrep  # noqa: F401
from strategies.zoo import lg_fedavg as _lg_fedavg  # noqa: F401
from strategies.zoo import local_only as _local_only  # noqa: F401
from strategies.zoo import task_balanced as _task_balanced  # noqa: F401
