import pytest

from tests.conftest import start_ray_head


@pytest.fixture(scope="package")
def ray_head(tmp_path_factory):
    """One `ray start --head` for every job test, stopped after the last of them."""
    yield from start_ray_head(tmp_path_factory)
