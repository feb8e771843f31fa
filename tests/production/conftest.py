"""The production scenario's probes share the skeleton probes' fixtures."""

from tests.probes.conftest import (  # noqa: F401 - fixtures, found by pytest under these names
    docker_client,
    phantom_cleanup,
    probe_dir,
    stored_study,
    target,
)
