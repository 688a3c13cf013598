"""fedmtl: federated multi-task learning on a shared pretrained backbone.

Clients hold different tasks and fine-tune task heads locally; a Flower server
strategy aggregates only the shared layers. See ``ARCHITECTURE`` in the README.
"""

__version__ = "0.1.0"
