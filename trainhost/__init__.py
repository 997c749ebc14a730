"""Training host: a GPU training service for KTRDR-style trading models on a Redis (RQ) job queue.

The installed package maps the repository's top-level folders as subpackages: `trainhost.config`,
`trainhost.jobs`, `trainhost.worker`, `trainhost.status_api`.
"""

__version__ = "0.2.0"
